"""L1: process memory in front of PostgreSQL, kept fresh across processes by NOTIFY."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest

from llm_pgcache import Cache, CacheHit
from llm_pgcache.entries import TierCopy
from llm_pgcache.invalidation import Change
from llm_pgcache.postgres import sql
from llm_pgcache.tiers import memory as memory_module
from llm_pgcache.tiers.memory import MemoryTier

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def two(dsn: str, namespace: str) -> AsyncIterator[tuple[Cache, Cache]]:
    """Two caches with memory tiers on one database: two processes of an app."""
    async with (
        connect_cache(dsn, namespace=namespace, memory=MemoryTier()) as a,
        connect_cache(dsn, namespace=namespace, memory=MemoryTier()) as b,
    ):
        yield a, b


class FrozenClock:
    """Stands in for the `time` module of `store.memory`: its monotonic clock reads `at`."""

    def __init__(self, at: float) -> None:
        self.at = at

    def monotonic(self) -> float:
        return self.at


async def tier_of(cache: Cache, request: dict[str, object]) -> str | None:
    hit = await cache.get(request)
    return None if hit is None else hit.tier


async def within_100ms(check: Callable[[], object]) -> float:
    """Seconds until `await check()` is true; fails after 100 ms."""
    started = time.monotonic()
    while time.monotonic() - started < 0.1:
        if await check():  # type: ignore[misc]
            return time.monotonic() - started
        await asyncio.sleep(0.002)
    pytest.fail("not seen within 100 ms")


async def in_memory_within_100ms(cache: Cache, request: dict[str, object]) -> None:
    """Look up `request` until memory answers. A lookup does not promote what it read
    while a notice about that row came in (another process's store, say): the next does."""

    async def answered_from_memory() -> bool:
        return await tier_of(cache, request) == "memory"

    await within_100ms(answered_from_memory)


async def test_hits_are_promoted_to_memory(
    two: tuple[Cache, Cache],
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    a, _ = two
    await a.set(make_request(), make_response(), tags=["faq"], upstream_ms=900)
    from_postgres = await a.get(make_request())
    from_memory = await a.get(make_request())
    assert from_postgres is not None
    assert from_memory is not None
    assert (from_postgres.tier, from_memory.tier) == ("postgres-exact", "memory")
    assert dataclasses.replace(from_memory, tier="postgres-exact") == from_postgres
    # Memory answers without PostgreSQL: even while the table is locked.
    async with db.transaction():
        await db.execute("LOCK TABLE llm_cache IN ACCESS EXCLUSIVE MODE")
        hit = await asyncio.wait_for(a.get(make_request()), 1)
    assert hit is not None
    assert hit.tier == "memory"
    assert hit.response == make_response() | {"id": hit.response["id"]}
    assert a.counters.hits_by_tier == {"postgres-exact": 1, "memory": 2}


async def test_callers_never_share_a_response_object(
    two: tuple[Cache, Cache], make_request: Factory, make_response: Factory
) -> None:
    a, _ = two
    await a.set(make_request(), make_response("Paris."))
    await a.get(make_request())
    first = await a.get(make_request())
    assert first is not None
    first.response["choices"] = "mutated by a caller"
    again = await a.get(make_request())
    assert again is not None
    assert again.response["choices"][0]["message"]["content"] == "Paris."


@pytest.mark.parametrize("how", ["key", "tag", "model", "namespace", "replace", "wrong-hit"])
async def test_invalidation_reaches_other_processes_within_100ms(
    two: tuple[Cache, Cache],
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    how: str,
) -> None:
    a, b = two
    await a.set(make_request(), make_response("old"), tags=["faq"])
    await in_memory_within_100ms(b, make_request())
    if how == "key":
        await a.invalidate(key=make_request())
    elif how == "tag":
        await a.invalidate(tag="faq")
    elif how == "model":
        await a.invalidate(model="gpt-4o-mini")
    elif how == "namespace":
        await a.invalidate(namespace=namespace)
    elif how == "wrong-hit":
        hit = await a.get(make_request())
        assert hit is not None
        await a.report_wrong_hit(hit)
    else:
        await a.set(make_request(), make_response("new"))

    async def gone() -> bool:
        hit = await b.get(make_request())
        if how == "replace":
            return hit is not None and hit.response["choices"][0]["message"]["content"] == "new"
        return hit is None

    await within_100ms(gone)


async def test_memory_lifetime_never_exceeds_the_row(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with connect_cache(dsn, namespace=namespace, memory=MemoryTier(ttl=3600)) as cache:
        await cache.set(make_request(), make_response(), ttl=60)
        await cache.get(make_request())
        assert await tier_of(cache, make_request()) == "memory"
        later = time.monotonic() + 61  # move the clock past the row's expiry
        monkeypatch.setattr(memory_module, "time", FrozenClock(later))
        assert await tier_of(cache, make_request()) != "memory"


async def test_a_lost_listener_bypasses_memory_until_it_is_back(
    two: tuple[Cache, Cache],
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    a, b = two
    await a.set(make_request(), make_response())
    await in_memory_within_100ms(b, make_request())
    terminated = await db.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
        "WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
    )
    assert terminated >= 2

    for _ in range(200):  # the lost connection is noticed: memory is bypassed
        if await tier_of(b, make_request()) == "postgres-exact":
            break
        await asyncio.sleep(0.01)
    assert await tier_of(b, make_request()) in {"postgres-exact", "memory"}
    for _ in range(200):  # reconnects after ~0.5 s, then promotes again
        if await tier_of(b, make_request()) == "memory":
            break
        await asyncio.sleep(0.01)
    assert await tier_of(b, make_request()) == "memory"


async def test_a_version_bump_reaches_every_tier(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace, memory=MemoryTier(), version="v1") as v1:
        await v1.set(make_request(), make_response())
        await v1.get(make_request())
        assert await tier_of(v1, make_request()) == "memory"
    async with connect_cache(dsn, namespace=namespace, memory=MemoryTier(), version="v2") as v2:
        assert await v2.get(make_request()) is None
    async with connect_cache(dsn, namespace=namespace) as unversioned:
        assert await unversioned.get(make_request()) is None


def make_hit(key: bytes, *, tags: tuple[str, ...] = (), model: str = "m") -> CacheHit:
    return CacheHit(
        response={},
        tier="postgres-exact",
        namespace="ns",
        key=key,
        model=model,
        created_at=None,  # type: ignore[arg-type]
        expires_at=None,
        prompt_tokens=None,
        completion_tokens=None,
        upstream_ms=None,
        tags=tags,
    )


def test_memory_is_bounded_by_entries_and_bytes() -> None:
    tier = MemoryTier(max_entries=3, max_bytes=100)
    for i in range(4):
        tier.put(TierCopy("ns", bytes([i]), make_hit(bytes([i])), "{}", None))
    assert len(tier) == 3
    assert tier.get("ns", bytes([0])) is None  # least recently used went first
    tier.get("ns", bytes([1]))  # now 2 is the least recently used
    tier.put(TierCopy("ns", bytes([9]), make_hit(bytes([9])), '{"a": "' + "x" * 80 + '"}', None))
    assert tier.size_bytes <= 100
    assert tier.get("ns", bytes([2])) is None
    assert tier.get("ns", bytes([1])) is not None
    tier.put(TierCopy("ns", b"big", make_hit(b"big"), "x" * 101, None))  # larger than the tier
    assert tier.get("ns", b"big") is None


def test_memory_invalidation_by_row() -> None:
    tier = MemoryTier()
    tier.put(TierCopy("ns", b"a", make_hit(b"row1", tags=("t",)), "{}", None))
    tier.put(TierCopy("ns", b"b", make_hit(b"row1"), "{}", None))  # a semantic hit of the same row
    tier.put(TierCopy("ns", b"c", make_hit(b"row2", model="other"), "{}", None))
    tier.put(TierCopy("other", b"a", make_hit(b"row1"), "{}", None))
    assert tier.invalidate(Change("ns", key=b"row1")) == 2
    assert tier.invalidate(Change("ns", model="other")) == 1
    assert tier.invalidate(Change("other")) == 1
    assert len(tier) == 0


@pytest.mark.parametrize(
    "payload",
    [
        "not json",
        '{"o": "x"}',
        '["a list"]',
        '{"o": "x", "ns": "n", "key": "zz", "tag": null, "model": null}',
    ],
)
async def test_a_malformed_notice_clears_memory(
    two: tuple[Cache, Cache],
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
    caplog: pytest.LogCaptureFixture,
    payload: str,
) -> None:
    a, _ = two
    await a.set(make_request(), make_response())
    await in_memory_within_100ms(a, make_request())
    with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
        await db.execute("SELECT pg_notify($1, $2)", sql.INVALIDATION_CHANNEL, payload)

        async def memory_cleared() -> bool:
            return await tier_of(a, make_request()) == "postgres-exact"

        await within_100ms(memory_cleared)
    assert any("malformed invalidation notice" in r.getMessage() for r in caplog.records)
