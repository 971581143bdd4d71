"""A lookup that read a row just before it was invalidated never puts it back above.

The race, step by step: a lookup misses memory and Redis (and takes its ticket), reads the
row from PostgreSQL, then, before it promotes that row, another call deletes the row and
clears the tiers. Real Redis, real PostgreSQL; the steps are run in that order by hand.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio import Redis

from llm_pgcache import CacheHit, request_keys
from llm_pgcache.entries import TierCopy, dump_response
from llm_pgcache.invalidation import Change
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.tiers.memory import MemoryTier
from llm_pgcache.tiers.redis import RedisTier
from llm_pgcache.tiers.upper import Ticket, UpperTiers

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def redis_tier() -> AsyncIterator[RedisTier]:
    """A Redis tier on keys of the test's own, deleted afterwards."""
    client = Redis(host="127.0.0.1", port=6379)
    prefix = f"llm_pgcache_test_{uuid.uuid4().hex[:8]}"
    yield RedisTier(client, prefix=prefix)
    keys = [key async for key in client.scan_iter(f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def read_row(dsn: str, namespace: str, request: dict[str, object]) -> CacheHit:
    """The row as PostgreSQL has it now, read without any tier."""
    async with connect_cache(dsn, namespace=namespace) as plain:
        hit = await plain.get(request)
    assert hit is not None
    return hit


async def promote(tiers: UpperTiers, hit: CacheHit, ticket: Ticket) -> None:
    await tiers.promote(
        TierCopy(hit.namespace, hit.key, hit, dump_response(hit.response), None), ticket=ticket
    )


async def test_redis_never_takes_back_a_row_invalidated_during_the_lookup(
    dsn: str,
    namespace: str,
    redis_tier: RedisTier,
    make_request: Factory,
    make_response: Factory,
) -> None:
    key = request_keys(make_request()).exact_key
    store = await PostgresStore.open(dsn)
    looking_up = UpperTiers(None, redis_tier, store=store, origin="test")  # the racing lookup
    try:
        async with connect_cache(dsn, namespace=namespace, redis=redis_tier) as other:
            await other.set(make_request(), make_response("old"))

            hit, ticket = await looking_up.get(namespace, key)
            assert hit is None
            row = await read_row(dsn, namespace, make_request())
            assert await other.invalidate(key=make_request()) == 1  # meanwhile, elsewhere
            await promote(looking_up, row, ticket)
            assert (await looking_up.get(namespace, key))[0] is None
            assert await other.get(make_request()) is None

            # The same steps without an invalidation in between do promote.
            await other.set(make_request(), make_response("new"))
            _, ticket = await looking_up.get(namespace, key)
            await promote(looking_up, await read_row(dsn, namespace, make_request()), ticket)
            hit, _ = await looking_up.get(namespace, key)
            assert hit is not None
            assert hit.tier == "redis"
    finally:
        await store.close()


async def test_memory_never_takes_back_a_row_invalidated_during_the_lookup(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    key = request_keys(make_request()).exact_key
    store = await PostgresStore.open(dsn)
    looking_up = UpperTiers(MemoryTier(), None, store=store, origin="test")
    await looking_up.listen()  # memory serves while notices arrive
    try:
        async with connect_cache(dsn, namespace=namespace) as other:
            await other.set(make_request(), make_response("old"))

            _, ticket = await looking_up.get(namespace, key)
            row = await read_row(dsn, namespace, make_request())
            await looking_up.drop(Change(namespace, key=key))  # an invalidation by this process
            await promote(looking_up, row, ticket)
            assert (await looking_up.get(namespace, key))[0] is None

            _, ticket = await looking_up.get(namespace, key)
            await looking_up.drop(Change(namespace, tag="faq"))  # one of its namespace, by tag
            await promote(looking_up, row, ticket)
            assert (await looking_up.get(namespace, key))[0] is None

            # A semantic hit: another request's lookup answered by this row; the row is
            # dropped while that lookup is in flight.
            paraphrase = request_keys(make_request("Capital of France?")).exact_key
            _, ticket = await looking_up.get(namespace, paraphrase)
            await looking_up.drop(Change(namespace, key=key))
            copy = TierCopy(namespace, paraphrase, row, dump_response(row.response), None)
            await looking_up.promote(copy, ticket=ticket)
            assert (await looking_up.get(namespace, paraphrase))[0] is None

            _, ticket = await looking_up.get(namespace, key)  # nothing in between
            await promote(looking_up, row, ticket)
            hit, _ = await looking_up.get(namespace, key)
            assert hit is not None
            assert hit.tier == "memory"
    finally:
        await looking_up.close()
        await store.close()
