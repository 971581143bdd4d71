"""A network that silently drops every packet (sockets stay open): every call returns
within its budget, `close()` within its bound, the cache recovers when the network does,
and a listener that goes silent is noticed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import pytest

from llm_pgcache import BackendError, Cache, CacheHit, MemoryTier

from .conftest import connect_cache
from .faults import BlackHoleProxy

Factory = Callable[..., dict[str, object]]
MARGIN = 0.5  # seconds over a budget that a busy CI machine may add


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[BlackHoleProxy]:
    opened = BlackHoleProxy(dsn)
    await opened.start()
    yield opened
    await opened.close()


async def timed(call: Coroutine[Any, Any, object]) -> tuple[object, float]:
    """(what `call` returned or raised, seconds it took); never longer than 30 s."""
    started = time.perf_counter()
    try:
        result: object = await asyncio.wait_for(call, 30)
    except Exception as exc:  # the outcome is what is checked
        result = exc
    return result, time.perf_counter() - started


async def test_every_call_returns_within_its_budget_while_postgres_is_black_holed(
    proxy: BlackHoleProxy, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    cache = await Cache.connect(
        proxy.dsn,
        namespace=namespace,
        lookup_timeout=0.2,
        write_timeout=0.5,
        statement_timeout=1.0,
    )
    await cache.set(make_request(), make_response())
    assert await cache.get(make_request()) is not None

    proxy.black_hole()
    outcomes = await asyncio.gather(
        *(timed(cache.get(make_request(f"q{i}"))) for i in range(8)),
        timed(cache.get(make_request())),
        timed(cache.set(make_request("new"), make_response())),
        timed(cache.set(make_request("newer"), make_response())),
    )
    for result, seconds in outcomes[:9]:
        assert result is None  # a miss, not an error
        assert seconds < 0.2 + MARGIN
    for result, seconds in outcomes[9:]:
        assert result is None  # dropped, logged
        assert seconds < 0.5 + MARGIN

    result, seconds = await timed(cache.invalidate(key=make_request()))
    assert isinstance(result, BackendError)  # an invalidation never fails silently
    assert seconds < 1.0 + MARGIN
    result, seconds = await timed(cache.stats())
    assert isinstance(result, BackendError)
    assert seconds < 1.0 + MARGIN

    proxy.restore()  # the network heals: the cache answers again, by itself
    for _ in range(100):
        if await cache.get(make_request()) is not None:
            break
        await asyncio.sleep(0.1)
    assert await cache.get(make_request()) is not None

    proxy.black_hole()
    await cache.get(make_request("pending hit counts"))
    result, seconds = await timed(cache.close(grace=1.0))
    assert result is None
    assert seconds < 1.0 + MARGIN


async def test_close_is_bounded_with_calls_in_flight_on_a_black_hole(
    proxy: BlackHoleProxy, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    cache = await Cache.connect(proxy.dsn, namespace=namespace, lookup_timeout=5.0)
    await cache.set(make_request(), make_response())
    await cache.get(make_request())  # a hit count waits to be written
    proxy.black_hole()
    in_flight = [asyncio.ensure_future(cache.get(make_request(f"q{i}"))) for i in range(5)]
    await asyncio.sleep(0.05)
    result, seconds = await timed(cache.close(grace=1.0))
    assert result is None
    assert seconds < 1.0 + MARGIN
    done = await asyncio.gather(*in_flight, return_exceptions=True)
    assert all(outcome is None or isinstance(outcome, BackendError) for outcome in done)


async def until_from_memory(cache: Cache, request: dict[str, object]) -> CacheHit:
    """The hit of `request` once the memory tier answers it (within 5 s)."""
    for _ in range(100):
        hit = await cache.get(request)
        if hit is not None and hit.tier == "memory":
            return hit
        await asyncio.sleep(0.05)
    raise AssertionError("the memory tier never answered")


async def test_a_silent_listener_is_noticed_and_memory_bypassed(
    dsn: str,
    proxy: BlackHoleProxy,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """Only the LISTEN connection goes through the black hole: its socket stays open and
    nothing closes it, so only the heartbeat can tell that notices stopped."""
    heartbeat = 0.2
    async with (
        connect_cache(
            dsn, namespace=namespace, memory=MemoryTier(heartbeat=heartbeat), listen_dsn=proxy.dsn
        ) as reader,
        connect_cache(dsn, namespace=namespace) as writer,
    ):
        await writer.set(make_request(), make_response("old"))
        await until_from_memory(reader, make_request())

        proxy.black_hole()
        await writer.set(make_request(), make_response("new"))  # its notice is lost
        stale_after: float | None = None
        started = time.perf_counter()
        while time.perf_counter() - started < 2 * heartbeat + MARGIN + 1.0:
            hit = await reader.get(make_request())
            assert hit is not None
            if hit.response["choices"][0]["message"]["content"] == "new":
                stale_after = time.perf_counter() - started
                break
            await asyncio.sleep(0.02)
        assert stale_after is not None, "the memory tier kept serving the replaced answer"
        assert stale_after < 2 * heartbeat + MARGIN
        hit = await reader.get(make_request())
        assert hit is not None
        assert hit.tier == "postgres-exact"  # memory is bypassed while the listener is lost

        proxy.restore()  # the listener reconnects; memory serves again
        hit = await until_from_memory(reader, make_request())
        assert hit.response["choices"][0]["message"]["content"] == "new"
