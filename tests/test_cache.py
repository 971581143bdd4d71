"""Exact lookups through the public Cache, against a real PostgreSQL."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import pytest
from openai.types.chat import ChatCompletion

from llm_pgcache import (
    BackendError,
    Cache,
    ConfigurationError,
    HashingEmbedder,
    InvalidInputError,
    WarmItem,
    init_connection,
    request_keys,
)
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres.store import DELETE_CHUNK

from .conftest import MigratedDatabase, connect_cache

Factory = Callable[..., dict[str, object]]


async def test_miss_then_hit(cache: Cache, make_request: Factory, make_response: Factory) -> None:
    request, response = make_request(), make_response()
    assert await cache.get(request) is None
    await cache.set(request, response)
    hit = await cache.get(request)
    assert hit is not None
    assert hit.response == response
    assert hit.tier == "postgres-exact"
    assert hit.model == "gpt-4o-mini"
    assert hit.expires_at is None
    assert (hit.prompt_tokens, hit.completion_tokens) == (12, 2)


async def test_chat_completion_round_trips(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    completion = ChatCompletion.model_validate(make_response("Paris, of course."))
    await cache.set(make_request(), completion)
    hit = await cache.get(make_request())
    assert hit is not None
    assert ChatCompletion.model_validate(hit.response) == completion


async def test_any_key_order_hits(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    request = make_request(temperature=0, seed=1)
    await cache.set(request, make_response())
    reordered = dict(reversed(list(request.items())))
    assert await cache.get(reordered) is not None
    assert await cache.get(make_request(temperature=0, seed=2)) is None


async def test_set_replaces(cache: Cache, make_request: Factory, make_response: Factory) -> None:
    await cache.set(make_request(), make_response("first"))
    await cache.set(make_request(), make_response("second"))
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response["choices"][0]["message"]["content"] == "second"


async def test_namespaces_never_leak(
    cache: Cache, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    await cache.set(make_request(), make_response("mine"))
    assert await cache.get(make_request(), namespace=f"{namespace}-other") is None
    await cache.set(make_request(), make_response("theirs"), namespace=f"{namespace}-other")
    mine = await cache.get(make_request())
    theirs = await cache.get(make_request(), namespace=f"{namespace}-other")
    assert mine is not None
    assert theirs is not None
    assert mine.response["choices"][0]["message"]["content"] == "mine"
    assert theirs.response["choices"][0]["message"]["content"] == "theirs"
    assert await cache.invalidate(namespace=f"{namespace}-other") == 1
    assert await cache.get(make_request()) is not None


async def test_expired_rows_are_never_returned(
    cache: Cache,
    namespace: str,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    await cache.set(make_request(), make_response(), ttl=3600)
    assert await cache.get(make_request()) is not None
    # Move the row past its expiry instead of sleeping; the purge job has not run.
    await db.execute(
        "UPDATE llm_cache SET expires_at = now() - interval '1 second' WHERE namespace = $1",
        namespace,
    )
    assert await cache.get(make_request()) is None
    assert await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 1


async def test_ttl_sets_expires_at_from_the_database_clock(
    cache: Cache, make_request: Factory, make_response: Factory, db: asyncpg.Connection
) -> None:
    await cache.set(make_request(), make_response(), ttl=timedelta(minutes=10))
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.expires_at is not None
    db_now: datetime = await db.fetchval("SELECT now()")
    assert timedelta(minutes=9) < hit.expires_at - db_now <= timedelta(minutes=10)


async def test_default_ttl_per_model(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(
        dsn, namespace=namespace, default_ttl=60, model_ttls={"gpt-4o": 7200, "o1*": 86400}
    ) as cache:
        for model, expected in [("gpt-4o", 7200), ("o1-mini", 86400), ("gpt-4o-mini", 60)]:
            await cache.set(make_request(model=model), make_response())
            hit = await cache.get(make_request(model=model))
            assert hit is not None
            assert hit.expires_at is not None
            lifetime = (hit.expires_at - hit.created_at).total_seconds()
            assert lifetime == pytest.approx(expected, abs=1)
        await cache.set(make_request(model="gpt-4o"), make_response(), ttl=5)
        hit = await cache.get(make_request(model="gpt-4o"))
        assert hit is not None
        assert hit.expires_at is not None
        assert (hit.expires_at - hit.created_at).total_seconds() == pytest.approx(5, abs=1)


async def test_invalidate_by_key_tag_model_and_namespace(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    a, b, c, d = (make_request(q) for q in ("a", "b", "c", "d"))
    await cache.set(a, make_response(), tags=["faq", "v1"])
    await cache.set(b, make_response(), tags=["faq"])
    await cache.set(c, make_response(), tags=["v1"])
    await cache.set({**d, "model": "gpt-4o"}, make_response())

    assert await cache.invalidate(key=a) == 1
    assert await cache.get(a) is None
    assert await cache.invalidate(tag="faq") == 1  # b; a is gone already
    assert await cache.get(b) is None
    assert await cache.get(c) is not None
    assert await cache.invalidate(model="gpt-4o") == 1
    assert await cache.get({**d, "model": "gpt-4o"}) is None
    assert await cache.invalidate(key=request_keys(c).exact_key) == 1
    await cache.set(d, make_response())
    assert await cache.invalidate(namespace=cache.namespace) == 1
    assert await cache.get(d) is None


@pytest.mark.parametrize("rows", [DELETE_CHUNK * 2, DELETE_CHUNK * 2 + 1])
async def test_large_invalidations_delete_every_row_in_chunks(
    create_migrated: MigratedDatabase,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    rows: int,
) -> None:
    """Tag, model and namespace invalidations of more rows than one statement deletes (in
    a database of their own: the shared one's planner statistics stay those of small
    tables)."""
    dsn = await create_migrated()
    async with connect_cache(dsn, namespace=namespace) as cache:
        db = await asyncpg.connect(asyncpg_dsn(dsn))
        try:
            await invalidate_many(cache, db, namespace, make_request, make_response, rows)
        finally:
            await db.close()


async def invalidate_many(
    cache: Cache,
    db: asyncpg.Connection,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    rows: int,
) -> None:
    other = f"{namespace}-other"
    items = [
        WarmItem(request=make_request(f"q{i}"), response=make_response(), tags=("bulk",))
        for i in range(rows)
    ]
    await cache.load(items)
    await cache.load([replace(item, namespace=other) for item in items[:10]])
    assert await cache.invalidate(tag="bulk") == rows
    await cache.load(items)
    assert await cache.invalidate(model="gpt-4o-mini") == rows
    await cache.load(items)
    assert await cache.invalidate(namespace=namespace) == rows
    count = "SELECT count(*) FROM llm_cache WHERE namespace = $1"
    assert await db.fetchval(count, namespace) == 0
    assert await db.fetchval(count, other) == 10  # another namespace keeps its rows


async def test_invalidate_needs_one_explicit_target(cache: Cache, make_request: Factory) -> None:
    with pytest.raises(InvalidInputError):
        await cache.invalidate()
    with pytest.raises(InvalidInputError):
        await cache.invalidate(tag="a", model="b")
    with pytest.raises(InvalidInputError):
        await cache.invalidate(key=b"short")


async def test_counters(cache: Cache, make_request: Factory, make_response: Factory) -> None:
    await cache.get(make_request("one"))
    await cache.set(make_request("one"), make_response(prompt_tokens=100, completion_tokens=20))
    await cache.get(make_request("one"))
    await cache.get(make_request("one"))
    counters = cache.counters
    assert (counters.hits, counters.misses) == (2, 1)
    assert counters.hit_rate == pytest.approx(2 / 3)
    assert counters.tokens_saved == 240


async def test_stats_count_entries_expired_and_models(
    cache: Cache,
    namespace: str,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    await cache.set(make_request("a"), make_response())
    await cache.set(make_request("b"), make_response(), ttl=60)
    await cache.set(make_request("c", model="gpt-4o"), make_response())
    await db.execute(
        "UPDATE llm_cache SET expires_at = now() - interval '1 hour' "
        "WHERE namespace = $1 AND expires_at IS NOT NULL",
        namespace,
    )
    table = (await cache.stats()).table
    assert (table.entries, table.expired) == (3, 1)
    assert table.top_models == (("gpt-4o-mini", 2), ("gpt-4o", 1))
    assert table.table_bytes > 0
    assert table.index_bytes > 0


async def test_concurrent_puts_of_one_key_never_raise_or_duplicate(
    cache: Cache,
    namespace: str,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    responses = [make_response(f"answer {i}") for i in range(50)]
    await asyncio.gather(*(cache.set(make_request(), r) for r in responses))
    rows = await db.fetch("SELECT response FROM llm_cache WHERE namespace = $1", namespace)
    assert len(rows) == 1
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response in responses


async def test_connect_as_context_manager_closes(dsn: str, make_request: Factory) -> None:
    async with connect_cache(dsn, namespace="ctx", strict=True) as cache:
        assert await cache.get(make_request()) is None
    with pytest.raises(BackendError, match="closed"):
        await cache.get(make_request())


async def test_a_pool_passed_in_is_not_closed(dsn: str, make_request: Factory) -> None:
    pool = await asyncpg.create_pool(asyncpg_dsn(dsn), min_size=1, max_size=2, init=init_connection)
    try:
        cache = await connect_cache(pool=pool, namespace="pool")
        await cache.get(make_request())
        await cache.close()
        assert await pool.fetchval("SELECT 1") == 1
    finally:
        await pool.close()


async def test_an_unknown_option_is_a_clear_error(dsn: str) -> None:
    options: dict[str, Any] = {"namespac": "typo"}
    with pytest.raises(ConfigurationError, match=r"unknown cache option.*namespac"):
        await Cache.connect(dsn, **options)


async def test_stores_that_overlap_share_statements_and_keep_every_column(
    create_migrated: MigratedDatabase, make_request: Factory, make_response: Factory
) -> None:
    """200 stores at once go in rounds (one statement of arrays each): far fewer write
    transactions than stores, and every row as a store alone would write it (response, tags, expiry,
    embedding), the last store of a key winning."""
    dsn = await create_migrated()
    embedder = HashingEmbedder(1536)
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        async with connect_cache(dsn, embedder=embedder, write_timeout=10.0) as cache:

            async def commits() -> int:  # the next transaction id: each write takes one
                value: int = await connection.fetchval(
                    "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"
                )
                return value

            before = await commits()
            await asyncio.gather(
                *(
                    cache.set(
                        make_request(f"question {n}"),
                        make_response(f"answer {n}"),
                        ttl=600,
                        tags=[f"t{n % 3}", "all"],
                    )
                    for n in range(200)
                )
            )
            stores = await commits() - before
            assert stores < 100, stores  # alone, each store is its own commit
            for n in (0, 57, 199):
                hit = await cache.get(make_request(f"question {n}"), semantic=False)
                assert hit is not None
                assert hit.response["choices"][0]["message"]["content"] == f"answer {n}"
                assert set(hit.tags) == {f"t{n % 3}", "all"}
                assert hit.expires_at is not None
            similar = await cache.get(make_request("question 57?"))
            assert similar is not None
            assert similar.tier == "postgres-semantic"
            assert await cache.invalidate(tag="t1") == 67
            await asyncio.gather(
                *(cache.set(make_request("same"), make_response(f"v{n}")) for n in range(20))
            )
            rows = await connection.fetchval("SELECT count(*) FROM llm_cache WHERE prompt = 'same'")
            assert rows == 1
    finally:
        await connection.close()
