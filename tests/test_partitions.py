"""llm_cache partitioned by hash of namespace (`llm-pgcache partition`): the stand-in, on
one server, for a table distributed by namespace. The same scenario runs on a plain and
on a partitioned table and must observe the same; each namespace's statements touch one
partition; `reindex` sizes each partition's ivfflat lists from its own rows."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pgvector import Vector

from llm_pgcache import Cache, HashingEmbedder, WarmItem
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.errors import ConfigurationError, InvalidInputError
from llm_pgcache.jobs import connect_store
from llm_pgcache.keys import exact_key
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.driver import init_connection
from llm_pgcache.postgres.partitions import partition_table, partitions
from llm_pgcache.postgres.reindex import lists_for
from tests.conftest import MigratedDatabase
from tests.plans import nearest_plan, nested_plans

NAMESPACES = [f"tenant-{n}" for n in range(6)]
Request = Callable[..., dict[str, object]]


async def partitioned(dsn: str, count: int) -> None:
    store = await connect_store(dsn)
    try:
        await partition_table(
            store.primary,
            count,
            embedding_dim=store.embedding_dim,
            embedding_type=store.embedding_type,
        )
    finally:
        await store.close()


def ask(text: str, model: str = "gpt-4o-mini") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def answer(text: str) -> dict[str, Any]:
    return {"object": "chat.completion", "choices": [{"message": {"content": text}}]}


async def fill(cache: Cache) -> None:
    """Rows in every namespace: tagged, of two models, and some that expire at once."""
    for ns in NAMESPACES:
        for n in range(12):
            await cache.set(
                ask(f"{ns} question {n} about the weather in spring", model=f"m{n % 2}"),
                answer(f"{ns} answer {n}"),
                tags=[f"t{n % 3}"],
                namespace=ns,
            )
        await cache.set(ask(f"{ns} soon gone"), answer("gone"), ttl=0.05, namespace=ns)


async def scenario(dsn: str, partition_count: int | None) -> list[Any]:
    """What a user of the cache observes, on a plain table or (after loading) on one
    partitioned into `partition_count` partitions."""
    seen: list[Any] = []

    def opened() -> Any:
        return Cache.connect(
            dsn, embedder=HashingEmbedder(1536), guard=None, strict=True, lookup_timeout=2.0
        )

    async with opened() as cache:
        await fill(cache)
    if partition_count is not None:
        await partitioned(dsn, partition_count)
    await asyncio.sleep(0.1)  # the short-lived rows have expired
    async with opened() as cache:
        seen.append((await cache.reindex()).rows)
        for ns in NAMESPACES:
            hit = await cache.get(
                ask(f"{ns} question 3 about the weather in spring", model="m1"), namespace=ns
            )
            seen.append((hit.tier, hit.response) if hit else None)
            near = await cache.get(
                ask(f"{ns} question 3 about the weather in spring please", model="m1"), namespace=ns
            )
            seen.append((near.tier, near.response) if near else None)
            other = NAMESPACES[(NAMESPACES.index(ns) + 1) % len(NAMESPACES)]
            seen.append(
                await cache.get(
                    ask(f"{other} question 3 about the weather in spring", model="m1"), namespace=ns
                )
            )
            seen.append(await cache.get(ask(f"{ns} soon gone"), namespace=ns))
        seen.append(
            await cache.invalidate(
                key=ask("tenant-0 question 1 about the weather in spring", model="m1"),
                namespace="tenant-0",
            )
        )
        seen.append(await cache.invalidate(tag="t2", namespace="tenant-1"))
        seen.append(await cache.invalidate(model="m0", namespace="tenant-2"))
        seen.append(await cache.invalidate(namespace="tenant-3"))
        seen.append((await cache.purge()).expired)
        for ns in NAMESPACES:
            table = (await cache.stats(namespace=ns)).table
            seen.append((table.entries, table.embedded, table.top_models))
        assert (await cache.stats(all_namespaces=True)).table.table_bytes > 0
        await cache.set(ask("after"), answer("after"), namespace="tenant-3")
        hit = await cache.get(ask("after"), namespace="tenant-3")
        seen.append(hit.response if hit else None)
    return seen


async def test_a_partitioned_table_behaves_as_the_plain_one(
    create_migrated: MigratedDatabase,
) -> None:
    plain, split = await create_migrated(), await create_migrated()
    expected = await scenario(plain, None)
    assert await scenario(split, 4) == expected
    assert expected[1][0] == "postgres-exact"
    assert expected[2][0] == "postgres-semantic"
    assert expected[3] is None  # another tenant's row
    assert expected[4] is None  # an expired row


async def test_rows_keep_their_ids_and_each_namespace_one_partition(
    create_migrated: MigratedDatabase,
) -> None:
    dsn = await create_migrated()
    async with Cache.connect(dsn, strict=True) as cache:
        await fill(cache)
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        before = await connection.fetch(
            "SELECT id, namespace, cache_key FROM llm_cache ORDER BY id"
        )
        await partitioned(dsn, 4)
        after = await connection.fetch("SELECT id, namespace, cache_key FROM llm_cache ORDER BY id")
        assert after == before
        homes = await connection.fetch(
            "SELECT namespace, count(DISTINCT tableoid) AS n FROM llm_cache GROUP BY namespace"
        )
        assert {row["n"] for row in homes} == {1}
        assert (
            await connection.fetchval(
                "SELECT relkind FROM pg_class WHERE oid = 'llm_cache'::regclass"
            )
            == b"p"
        )
        async with Cache.connect(dsn, strict=True) as cache:
            await cache.set(ask("new row"), answer("new"), namespace="tenant-0")
        new_id = await connection.fetchval("SELECT max(id) FROM llm_cache")
        assert new_id > max(row["id"] for row in before)  # the identity goes on past the copy
    finally:
        await connection.close()


async def test_each_namespace_statement_reads_one_partition(
    create_migrated: MigratedDatabase,
) -> None:
    dsn = await create_migrated()
    async with Cache.connect(dsn, embedder=HashingEmbedder(1536), strict=True) as cache:
        await fill(cache)
    await partitioned(dsn, 8)
    async with Cache.connect(dsn, embedder=HashingEmbedder(1536), strict=True) as cache:
        await cache.reindex()
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        key = exact_key(ask("tenant-0 question 3 about the weather in spring", model="m1"))
        statements = [
            (sql.GET_EXACT, ("tenant-0", key, 0.0)),
            (sql.DELETE_BY_KEY, ("tenant-0", key, "c")),
            (sql.DELETE_BY_TAG, ("tenant-0", "t1", "c", 100)),
            (sql.DELETE_BY_MODEL, ("tenant-0", "m0", "c", 100)),
            (sql.DELETE_NAMESPACE, ("tenant-0", "c", 100)),
        ]
        for statement, args in statements:
            async with connection.transaction():  # the deletes are rolled back
                rows = await connection.fetch(
                    "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, *args
                )
                await connection.execute("ROLLBACK AND CHAIN")
            plan = "\n".join(row[0] for row in rows)
            assert len(read_partitions(plan)) == 1, plan
        # the exact round's query runs inside its function: its plan, as it ran
        plans = await nested_plans(
            connection, sql.GET_EXACT_ROUND, ["tenant-0"], [key], [0.0], analyze=True
        )
        (inner,) = [p for p in plans if "unnest(p_namespaces" in p]
        assert len(read_partitions(inner)) == 1, inner
        await init_connection(connection)  # the vector codec
        vector = Vector((await HashingEmbedder(1536).embed(["tenant-0 question 3"]))[0])
        scope = await connection.fetchval(
            "SELECT scope_key FROM llm_cache WHERE namespace = 'tenant-0' LIMIT 1"
        )
        inner = await nearest_plan(
            connection,
            "tenant-0",
            scope,
            HashingEmbedder(1536).name,
            [vector],
            [2.0],
            40,
            1,
            1,
            40,
            True,
            0,
        )
        assert len(set(re.findall(r"llm_cache_p\d+", inner))) == 1, inner

    finally:
        await connection.close()


def read_partitions(plan: str) -> set[str]:
    """The partitions an EXPLAIN ANALYZE shows read (pruned ones are absent or never
    executed)."""
    return {
        match
        for line in plan.splitlines()
        if "never executed" not in line
        for match in re.findall(r"llm_cache_p\d+", line)
    }


async def test_reindex_sizes_each_partition_by_its_own_rows(
    create_migrated: MigratedDatabase,
) -> None:
    dsn = await create_migrated()
    await partitioned(dsn, 4)
    big, small = "tenant-big", "tenant-small"
    items = [
        WarmItem(request=ask(f"row {n}"), response=answer(str(n)), namespace=big)
        for n in range(2500)
    ] + [
        WarmItem(request=ask(f"row {n}"), response=answer(str(n)), namespace=small)
        for n in range(30)
    ]
    async with Cache.connect(dsn, embedder=HashingEmbedder(1536), strict=True) as cache:
        await cache.load(items, embed=True)
        report = await cache.reindex()
    assert report.lists == lists_for(2500) == 2  # the largest partition's: probes from it
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        home = await connection.fetchval(
            "SELECT tableoid::regclass::text FROM llm_cache WHERE namespace = $1 LIMIT 1", big
        )
        options = {
            row["relname"]: row["reloptions"]
            for row in await connection.fetch(
                "SELECT relname, reloptions FROM pg_class "
                "WHERE relname LIKE 'llm_cache_p%_embedding_ivfflat'"
            )
        }
        assert set(options) == {f"{p}_embedding_ivfflat" for p in await partition_names(dsn)}
        for name, value in options.items():
            own = 2 if name == f"{home}_embedding_ivfflat" else 1
            assert value == [f"lists={own}"], (name, value)
    finally:
        await connection.close()


async def partition_names(dsn: str) -> list[str]:
    store = await connect_store(dsn)
    try:
        return await partitions(store.primary)
    finally:
        await store.close()


async def test_partition_refuses_what_it_cannot_do(create_migrated: MigratedDatabase) -> None:
    dsn = await create_migrated()
    with pytest.raises(InvalidInputError, match="from 2 to 1024"):
        await partitioned(dsn, 1)
    await partitioned(dsn, 3)
    await partitioned(dsn, 3)  # again: nothing to do
    with pytest.raises(ConfigurationError, match="already partitioned into 3"):
        await partitioned(dsn, 5)
    assert len(await partition_names(dsn)) == 3


async def test_the_command_partitions_then_refuses_another_count(
    create_migrated: MigratedDatabase,
) -> None:
    dsn = await create_migrated()
    script = Path(sys.executable).parent / "llm-pgcache"

    async def run(*args: str) -> tuple[int | None, str, str]:
        process = await asyncio.create_subprocess_exec(
            str(script),
            *args,
            "--dsn",
            dsn,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        return process.returncode, out.decode(), err.decode()

    code, out, err = await run("partition", "--partitions", "2")
    assert code == 0, err
    assert "partitioned by namespace into 2 partitions" in out
    code, out, err = await run("partition", "--partitions", "3")
    assert code == 1
    assert "already partitioned into 2 partitions" in err
    assert "Traceback" not in err
    code, out, err = await run("healthcheck")
    assert code == 0, err
