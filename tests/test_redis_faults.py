"""Invalidations through every Redis fault, and races with lookups in every tier: a real
Redis of the test's own (stopped with SIGSTOP), real PostgreSQL."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator

import pytest
from redis.asyncio import Redis

from llm_pgcache import Cache, MemoryTier, RedisTier, WarmItem
from llm_pgcache.tiers.redis import CHUNK

from .conftest import MigratedDatabase, connect_cache
from .faults import RedisServer

Factory = Callable[..., dict[str, object]]


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    yield server
    server.kill()


@pytest.fixture
def running_redis(redis_server: RedisServer) -> Iterator[RedisServer]:
    """The test's Redis, running again after the test whatever it did."""
    yield redis_server
    redis_server.resume()


@pytest.fixture
async def patient_tier(
    running_redis: RedisServer,
) -> AsyncIterator[Callable[..., RedisTier]]:
    """Factory of Redis tiers whose calls may take half a second: a busy CI machine's
    hiccups must not hold copies back in tests that are not about timeouts."""
    clients: list[Redis] = []

    def make(prefix: str = "llm_pgcache") -> RedisTier:
        client = Redis.from_url(running_redis.url, socket_timeout=0.5, socket_connect_timeout=1)
        clients.append(client)
        return RedisTier(client, prefix=prefix)

    yield make
    for client in clients:
        await client.aclose()


def arguments(command: bytes) -> int:
    """How many arguments a command of Redis's slow log had (it shows at most 32)."""
    words = command.split()
    more = re.search(rb"\.\.\. \((\d+) more arguments\)$", command)
    if more is None:
        return len(words) - 1
    return len(words) - 1 - 4 + int(more.group(1))


def content(hit: object) -> str | None:
    if hit is None:
        return None
    return hit.response["choices"][0]["message"]["content"]  # type: ignore[attr-defined, no-any-return]


async def served(cache: Cache, request: dict[str, object]) -> tuple[str | None, str | None]:
    """(content, tier) of what `cache` answers for `request` now."""
    hit = await cache.get(request)
    return content(hit), hit.tier if hit is not None else None


async def test_a_replacing_set_racing_lookups_is_never_undone_in_memory(
    dsn: str,
    patient_tier: Callable[..., RedisTier],
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """Lookups run while `set` replaces the entry; once `set` returns, no tier of this
    process, nor of another one sharing Redis, serves the old answer (the race: memory
    dropped before Redis, a lookup in between took the old Redis copy back)."""
    tier = patient_tier()
    other_tier = patient_tier()
    async with (
        connect_cache(dsn, namespace=namespace, memory=MemoryTier(), redis=tier) as cache,
        connect_cache(dsn, namespace=namespace, memory=MemoryTier(), redis=other_tier) as other,
    ):
        for trial in range(20):
            request = make_request(f"question {trial}")
            await cache.set(request, make_response("old"))
            for reader in (cache, other, cache, other):  # Redis, then memory, hold it
                await reader.get(request)
            assert await served(cache, request) == ("old", "memory")

            stop = asyncio.Event()

            async def read_meanwhile(
                reader: Cache, request: dict[str, object], stop: asyncio.Event
            ) -> None:
                while not stop.is_set():
                    await reader.get(request)
                    await asyncio.sleep(0)

            readers = [
                asyncio.ensure_future(read_meanwhile(reader, request, stop))
                for reader in (cache, cache, other, other)
            ]
            await cache.set(request, make_response("new"))
            await asyncio.sleep(0.1)  # the other process hears the notices
            stop.set()
            await asyncio.gather(*readers)
            for reader in (cache, other):
                assert (await served(reader, request))[0] == "new", f"trial {trial}"


async def test_an_invalidation_while_redis_is_stopped_holds_when_it_returns(
    dsn: str,
    running_redis: RedisServer,
    patient_tier: Callable[..., RedisTier],
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with (
        connect_cache(dsn, namespace=namespace, redis=patient_tier()) as cache,
        connect_cache(dsn, namespace=namespace, redis=patient_tier()) as other,
    ):
        await cache.set(make_request(), make_response("doomed"))
        await cache.set(make_request("tagged"), make_response("doomed"), tags=["t"])
        await cache.set(make_request("kept"), make_response("kept"))
        for reader in (cache, other):
            for question in ("What is the capital of France?", "tagged", "kept"):
                await reader.get(make_request(question))
        assert await served(other, make_request()) == ("doomed", "redis")

        running_redis.stop()
        started = time.perf_counter()
        assert await cache.invalidate(key=make_request()) == 1
        assert await cache.invalidate(tag="t") == 1
        assert time.perf_counter() - started < 2.0  # Redis's timeouts, not a hang
        assert await served(other, make_request("kept")) == ("kept", "postgres-exact")
        running_redis.resume()

        for _ in range(40):  # both processes, as Redis comes back and after it settles
            for reader in (cache, other):
                assert await served(reader, make_request()) == (None, None)
                assert await served(reader, make_request("tagged")) == (None, None)
                assert (await served(reader, make_request("kept")))[0] == "kept"
            await asyncio.sleep(0.05)
        # Redis serves again once settled (the invalidated copies stay gone).
        for _ in range(40):
            if (await served(other, make_request("kept")))[1] == "redis":
                break
            await asyncio.sleep(0.05)
        assert await served(other, make_request("kept")) == ("kept", "redis")
        assert await served(cache, make_request()) == (None, None)


async def test_a_stopped_redis_is_skipped_by_its_breaker(
    dsn: str,
    running_redis: RedisServer,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """Lookups stop paying Redis's timeout (50 ms) once its breaker opens, and exact hits
    keep coming from PostgreSQL."""
    async with connect_cache(dsn, namespace=namespace, redis=RedisTier(running_redis.url)) as cache:
        await cache.set(make_request(), make_response())
        running_redis.stop()
        for _ in range(3):  # the failures that open the breaker
            await cache.get(make_request())
        started = time.perf_counter()
        for _ in range(40):
            assert await served(cache, make_request()) == ("Paris.", "postgres-exact")
        assert time.perf_counter() - started < 40 * 0.05 / 2


async def test_a_tag_over_many_redis_copies_is_invalidated_in_chunks(
    create_migrated: MigratedDatabase,
    running_redis: RedisServer,
    patient_tier: Callable[..., RedisTier],
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """20,000 copies under one tag: deleting them in one call overran Redis's 50 ms
    timeout and left every copy served. (A database of its own: the shared one's planner
    statistics stay those of small tables.)"""
    dsn = await create_migrated()
    count = 20_000
    requests = [make_request(f"question {i}") for i in range(count)]
    prefix = f"chunks-{namespace}"
    tier = patient_tier(prefix)
    async with connect_cache(dsn, namespace=namespace, redis=tier) as cache:
        await cache.load(
            WarmItem(request=r, response=make_response("x" * 1000), tags=("bulk",))
            for r in requests
        )
        slots = asyncio.Semaphore(32)

        async def promote(request: dict[str, object]) -> None:
            async with slots:
                await cache.get(request)

        await asyncio.gather(*(promote(r) for r in requests))
        for _ in range(60):  # a timeout under this load holds Redis back for its settle time
            if (await served(cache, requests[-1]))[1] == "redis":
                break
            await asyncio.sleep(0.05)
        assert (await served(cache, requests[-1]))[1] == "redis"

        # Redis's slow log, set to keep every command, shows how the copies went.
        admin = Redis(host="127.0.0.1", port=running_redis.port)
        try:
            copies = len([key async for key in admin.scan_iter(f"{prefix}:d:*", count=5000)])
            assert copies >= count // 2  # most lookups promoted their row
            await admin.config_set("slowlog-log-slower-than", 0)
            await admin.config_set("slowlog-max-len", 100_000)
            await admin.slowlog_reset()
            assert await cache.invalidate(tag="bulk") == count
            commands = await admin.slowlog_get(100_000)
        finally:
            await admin.config_set("slowlog-log-slower-than", 10_000)
            await admin.aclose()
        keys_per_delete = [
            arguments(entry["command"])
            for entry in commands
            if entry["command"].split()[0].upper() in {b"DEL", b"UNLINK"}
        ]
        assert sum(keys_per_delete) >= copies
        assert max(keys_per_delete) <= CHUNK  # bounded calls
        sample = requests[:: count // 300]
        answers = [await served(cache, r) for r in sample]
        assert answers == [(None, None)] * len(sample)
