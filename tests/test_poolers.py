"""Through a real PgBouncer, in session and in transaction mode: every feature works
(lookups exact and semantic under concurrency, stores, loads, invalidations reaching
another process's memory tier, stats, purge with overlapping runs, reindex, the CLI);
behind a transaction pooler the memory tier needs a direct LISTEN connection, and a cache
not told about the pooler fails with an error that names the setting."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest

from llm_pgcache import BackendError, Cache, ConfigurationError, HashingEmbedder, MemoryTier
from llm_pgcache.cache.warming import WarmItem
from llm_pgcache.cli import cli
from llm_pgcache.config import asyncpg_dsn

from .conftest import MigratedDatabase, connect_cache
from .pgbouncer import PgBouncer, wait_for

Factory = Callable[..., dict[str, object]]


def database_of(dsn: str) -> str:
    return dsn.split("?", 1)[0].rsplit("/", 1)[1]


@pytest.mark.parametrize("mode", ["session", "transaction"])
async def test_every_feature_through_a_pooler(
    pgbouncers: dict[str, PgBouncer],
    create_migrated: MigratedDatabase,
    mode: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    direct = await create_migrated()
    pooled = pgbouncers[mode].dsn(database_of(direct))
    embedder = HashingEmbedder(1536)
    async with (
        connect_cache(
            pooled, embedder=embedder, memory=MemoryTier(), listen_dsn=direct, strict=True
        ) as cache,
        connect_cache(pooled, strict=True, max_size=4, min_size=1) as other,
    ):
        # Many lookups and stores at once, over more client connections than the pooler
        # has server connections (4): statements move between server connections.
        questions = [f"What is {n} squared?" for n in range(120)]
        await asyncio.gather(
            *(cache.set(make_request(q), make_response(str(n))) for n, q in enumerate(questions))
        )
        hits = await asyncio.gather(*(other.get(make_request(q)) for q in questions))
        assert all(hit is not None for hit in hits)
        assert [hit.response["choices"][0]["message"]["content"] for hit in hits if hit] == [
            str(n) for n in range(120)
        ]
        semantic = await cache.get(make_request("what is 7 squared"))
        assert semantic is not None
        assert semantic.tier == "postgres-semantic"
        # Given its vector, one statement: the exact row, else the nearest.
        (vector,) = await embedder.embed(["what is 8 squared"])
        given = await cache.get(make_request("what is 8 squared"), embedding=vector)
        assert given is not None
        assert given.tier == "postgres-semantic"
        assert given.response["choices"][0]["message"]["content"] == "8"

        # Another process's invalidation reaches this one's memory tier.
        request = make_request(questions[3])
        assert (await cache.get(request)) is not None
        remembered = await cache.get(request)
        assert remembered is not None
        assert remembered.tier == "memory"
        assert await other.invalidate(key=request) == 1

        async def forgotten() -> bool:
            return await cache.get(request, semantic=False) is None

        await wait_for(forgotten)

        loaded = await cache.load(
            [
                WarmItem(request=make_request(f"loaded {n}"), response=make_response())
                for n in range(500)
            ]
        )
        assert loaded == 500
        stats = await cache.stats()
        assert stats.table.entries == 119 + 500

        # Overlapping purges: one runs, the other finds the lease taken.
        expiring = [
            WarmItem(request=make_request(f"gone {n}"), response=make_response(), ttl=0.001)
            for n in range(1000)
        ]
        await cache.load(expiring)
        await asyncio.sleep(0.05)
        first, second = await asyncio.gather(cache.purge(batch_size=10), other.purge(batch_size=10))
        assert sorted([first.action, second.action]) == ["locked", "purged"]
        assert first.expired + second.expired == 1000

        assert (await cache.reindex()).action == "rebuilt"
        assert await cache.get(make_request("what is 7 squared")) is not None

    assert await cli(["healthcheck", "--dsn", pooled]) == 0
    assert await cli(["purge", "--dsn", pooled]) == 0
    assert await cli(["stats", "--dsn", pooled, "--json"]) == 0


async def test_the_memory_tier_needs_a_direct_listen_connection_behind_a_transaction_pooler(
    pgbouncers: dict[str, PgBouncer], create_migrated: MigratedDatabase
) -> None:
    pooled = pgbouncers["transaction"].dsn(database_of(await create_migrated()))
    with pytest.raises(ConfigurationError, match="listen_dsn"):
        await Cache.connect(pooled, memory=MemoryTier())
    async with connect_cache(pooled) as cache:  # without a memory tier, no LISTEN needed
        assert cache.embedding_dim == 1536
    explicit = pgbouncers["transaction"].dsn(database_of(pooled), say_pooler=False)
    with pytest.raises(ConfigurationError, match="listen_dsn"):
        await Cache.connect(explicit, pooler="transaction", memory=MemoryTier())


async def test_a_cache_not_told_about_a_transaction_pooler_says_what_to_set(
    pgbouncers: dict[str, PgBouncer],
    create_migrated: MigratedDatabase,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """Named prepared statements do not survive a transaction pooler: the failure says to
    set pooler='transaction' (a strict cache raises it; others fail open)."""
    untold = pgbouncers["transaction"].dsn(database_of(await create_migrated()), say_pooler=False)
    failures: list[BackendError] = []

    async def store_and_look(cache: Cache, n: int) -> None:
        try:
            await cache.set(make_request(f"q{n}"), make_response())
            await cache.get(make_request(f"q{n}"))
        except BackendError as exc:
            failures.append(exc)

    try:  # it may fail as soon as the pool's connections register their types
        async with connect_cache(untold, strict=True) as cache:
            for _ in range(5):
                await asyncio.gather(*(store_and_look(cache, n) for n in range(64)))
                if failures:
                    break
    except BackendError as exc:
        failures.append(exc)
    assert failures, "named prepared statements survived a transaction pooler"
    assert all("pooler='transaction'" in str(exc) for exc in failures), failures[0]


async def test_the_pooler_parameter_is_ours_and_checked(create_migrated: MigratedDatabase) -> None:
    direct = await create_migrated()
    assert "pooler" not in asyncpg_dsn(direct + "&pooler=session")
    with pytest.raises(ConfigurationError, match="pooler must be one of"):
        await Cache.connect(direct + "&pooler=statement")
    connection = await asyncpg.connect(asyncpg_dsn(direct + "&pooler=session"))
    await connection.close()
