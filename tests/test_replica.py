"""With a real streaming replica (`read_dsn`): lookups read it, writes go to the primary;
a process reads its own writes at once, and an invalidation is never undone by the
replica's lag (replay paused for real with pg_wal_replay_pause)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from llm_pgcache import Cache, ConfigurationError, HashingEmbedder, MemoryTier, request_keys
from llm_pgcache.config import asyncpg_dsn

from .conftest import MigratedDatabase, connect_cache
from .replica import Replica

Factory = Callable[..., dict[str, object]]


def database_of(dsn: str) -> str:
    return dsn.split("?", 1)[0].rsplit("/", 1)[1]


async def on_replica(replica: Replica, database: str) -> asyncpg.Connection:
    """A connection to `database` on the replica, once replication has created it."""
    deadline = time.monotonic() + 30
    while True:
        try:
            connection = await asyncpg.connect(asyncpg_dsn(replica.dsn(database)))
            if await connection.fetchval("SELECT to_regclass('llm_cache') IS NOT NULL"):
                return connection
            await connection.close()
        except asyncpg.InvalidCatalogNameError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"{database} did not reach the replica within 30 s")
        await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def replay_paused(standby: asyncpg.Connection) -> AsyncIterator[None]:
    await standby.execute("SELECT pg_wal_replay_pause()")
    try:
        yield
    finally:
        await standby.execute("SELECT pg_wal_replay_resume()")


async def test_lookups_read_the_replica_and_never_fall_behind_this_process(
    replica: Replica,
    create_migrated: MigratedDatabase,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    primary = await create_migrated()
    standby = await on_replica(replica, database_of(primary))
    read_dsn = replica.dsn(database_of(primary))
    async with (
        connect_cache(primary, read_dsn=read_dsn, embedder=HashingEmbedder(1536)) as cache,
        connect_cache(primary) as writer,  # another process, on the primary only
    ):
        await writer.set(make_request("before"), make_response("old"))
        await asyncio.sleep(0.5)  # replicated by now
        async with replay_paused(standby):
            # Another process's store is on the primary, not yet on the paused replica:
            # a lookup here reads the replica, and misses it.
            await writer.set(make_request("while paused"), make_response("new"))
            assert await cache.get(make_request("while paused")) is None
            assert await cache.get(make_request("before")) is not None

            # This process's own store is read back at once (from the primary).
            await cache.set(make_request("mine"), make_response("mine"))
            hit = await cache.get(make_request("mine"))
            assert hit is not None
            assert hit.response["choices"][0]["message"]["content"] == "mine"
            semantic = await cache.get(make_request("mine!"))
            assert semantic is not None
            assert semantic.tier == "postgres-semantic"

            # Every write goes to the primary (the replica is read-only).
            assert await cache.invalidate(key=make_request("before")) == 1
            assert await cache.get(make_request("before")) is None  # not the replica's copy
            assert (await cache.purge()).action == "purged"
            assert (await cache.reindex()).action in {"rebuilt", "skipped"}
        await asyncio.sleep(0.5)
        assert await cache.get(make_request("while paused")) is not None  # replayed
    await standby.close()


async def test_an_invalidation_is_never_undone_by_replica_lag(
    replica: Replica,
    create_migrated: MigratedDatabase,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """The memory tier of a process reading the replica: another process invalidates an
    entry while replay is paused; the notice drops the memory copy, and lookups then read
    the primary, so the replica's stale row never returns to memory, nor to the caller."""
    primary = await create_migrated()
    standby = await on_replica(replica, database_of(primary))
    read_dsn = replica.dsn(database_of(primary))
    request = make_request("cached answer")
    async with (
        connect_cache(primary, read_dsn=read_dsn, memory=MemoryTier()) as reader,
        connect_cache(primary) as writer,
    ):
        await writer.set(request, make_response("v1"))
        await asyncio.sleep(0.5)
        assert await reader.get(request) is not None  # from the replica, into memory
        remembered = await reader.get(request)
        assert remembered is not None
        assert remembered.tier == "memory"
        async with replay_paused(standby):
            assert await writer.invalidate(key=request) == 1
            key = request_keys(request).exact_key
            row = await standby.fetchval("SELECT count(*) FROM llm_cache WHERE cache_key = $1", key)
            assert row == 1  # the replica still holds it
            deadline = time.monotonic() + 5
            while (await reader.get(request)) is not None:  # until the notice lands
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            for _ in range(20):
                assert await reader.get(request) is None
            await writer.set(request, make_response("v2"))
            deadline = time.monotonic() + 5
            while (hit := await reader.get(request)) is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.02)
            assert hit.response["choices"][0]["message"]["content"] == "v2"
    await standby.close()


async def test_read_dsn_goes_with_a_dsn(dsn: str) -> None:
    pool = await asyncpg.create_pool(asyncpg_dsn(dsn), min_size=1, max_size=1)
    try:
        with pytest.raises(ConfigurationError, match="read_dsn"):
            await Cache.connect(pool=pool, read_dsn=dsn)
    finally:
        await pool.close()
