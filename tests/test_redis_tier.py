"""L2: a real Redis (127.0.0.1:6379) between process memory and PostgreSQL."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from llm_pgcache import Cache, WarmItem
from llm_pgcache.tiers.memory import MemoryTier
from llm_pgcache.tiers.redis import RedisTier

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def redis() -> AsyncIterator[Redis]:
    client = Redis(host="127.0.0.1", port=6379)
    yield client
    await client.aclose()


@pytest.fixture
async def prefix(redis: Redis) -> AsyncIterator[str]:
    """A key prefix of the test's own; its keys are deleted afterwards."""
    mine = f"llm_pgcache_test_{uuid.uuid4().hex[:8]}"
    yield mine
    keys = [key async for key in redis.scan_iter(f"{mine}:*")]
    if keys:
        await redis.delete(*keys)


@pytest.fixture
def l2(redis: Redis, prefix: str) -> Callable[[], RedisTier]:
    return lambda: RedisTier(redis, prefix=prefix)


async def tier_of(cache: Cache, request: dict[str, object]) -> str | None:
    hit = await cache.get(request)
    return None if hit is None else hit.tier


async def test_tiers_compose_and_promote(
    dsn: str,
    namespace: str,
    l2: Callable[[], RedisTier],
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with (
        connect_cache(dsn, namespace=namespace, memory=MemoryTier(), redis=l2()) as full,
        connect_cache(dsn, namespace=namespace, redis=l2()) as redis_only,
        connect_cache(dsn, namespace=namespace) as postgres_only,
    ):
        await full.set(make_request(), make_response("Paris."))
        assert await tier_of(full, make_request()) == "postgres-exact"  # promoted to L2, L1
        assert await tier_of(full, make_request()) == "memory"
        assert await tier_of(redis_only, make_request()) == "redis"
        assert await tier_of(postgres_only, make_request()) == "postgres-exact"
        async with connect_cache(dsn, namespace=namespace, memory=MemoryTier(), redis=l2()) as new:
            assert await tier_of(new, make_request()) == "redis"  # promoted to L1 from L2
            assert await tier_of(new, make_request()) == "memory"
            hit = await new.get(make_request())
            assert hit is not None
            assert hit.response["choices"][0]["message"]["content"] == "Paris."


@pytest.mark.parametrize("how", ["key", "tag", "model", "namespace", "replace", "load"])
async def test_invalidation_reaches_redis(
    dsn: str,
    namespace: str,
    l2: Callable[[], RedisTier],
    make_request: Factory,
    make_response: Factory,
    how: str,
) -> None:
    async with (
        connect_cache(dsn, namespace=namespace, redis=l2()) as a,
        connect_cache(dsn, namespace=namespace, redis=l2()) as b,
    ):
        await a.set(make_request(), make_response("old"), tags=["faq"])
        await a.get(make_request())
        assert await tier_of(b, make_request()) == "redis"
        if how == "key":
            await a.invalidate(key=make_request())
        elif how == "tag":
            await a.invalidate(tag="faq")
        elif how == "model":
            await a.invalidate(model="gpt-4o-mini")
        elif how == "namespace":
            await a.invalidate(namespace=namespace)
        elif how == "replace":
            await a.set(make_request(), make_response("new"))
        else:
            await a.load([WarmItem(request=make_request(), response=make_response("new"))])
        hit = await b.get(make_request())
        if how in ("replace", "load"):
            assert hit is not None
            assert hit.tier == "postgres-exact"
            assert hit.response["choices"][0]["message"]["content"] == "new"
        else:
            assert hit is None


async def test_redis_lifetime_never_exceeds_the_row(
    dsn: str,
    namespace: str,
    redis: Redis,
    prefix: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with connect_cache(
        dsn, namespace=namespace, redis=RedisTier(redis, prefix=prefix, ttl=3600)
    ) as cache:
        await cache.set(make_request(), make_response(), ttl=60)
        await cache.get(make_request())
    keys = [key async for key in redis.scan_iter(f"{prefix}:d:*")]
    assert len(keys) == 1
    assert 0 < await redis.pttl(keys[0]) <= 60_000


async def test_namespaces_stay_apart_in_redis(
    dsn: str,
    namespace: str,
    l2: Callable[[], RedisTier],
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with connect_cache(dsn, namespace=namespace, redis=l2()) as cache:
        await cache.set(make_request(), make_response())
        await cache.get(make_request())
        assert await cache.get(make_request(), namespace=f"{namespace}-other") is None


async def test_redis_down_is_skipped(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dead = RedisTier("redis://127.0.0.1:1/0")
    async with connect_cache(dsn, namespace=namespace, redis=dead, strict=True) as cache:
        await cache.set(make_request(), make_response())
        with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
            for _ in range(3):
                assert await tier_of(cache, make_request()) == "postgres-exact"
    warnings = [r for r in caplog.records if "Redis tier failed" in r.getMessage()]
    assert len(warnings) == 1
