"""`@cache.cached`: an async function's JSON results, cached by its name, version and
bound arguments; one call per key at a time; invalidation by tag and by function; what
is not JSON runs uncached."""

from __future__ import annotations

import asyncio
import logging

import pytest

from llm_pgcache import Cache, InvalidInputError

from .conftest import connect_cache


async def test_results_are_cached_by_name_version_and_bound_arguments(
    dsn: str, namespace: str
) -> None:
    calls: list[tuple[int, int]] = []
    async with connect_cache(dsn, namespace=namespace) as cache:

        @cache.cached(ttl=60, tags=["maths"])
        async def power(base: int, exponent: int = 2) -> dict[str, object]:
            calls.append((base, exponent))
            await asyncio.sleep(0.05)
            return {"value": base**exponent, "pair": (base, exponent)}

        first = await power(3)
        assert first == {"value": 9, "pair": (3, 2)}
        assert await power(3) == {"value": 9, "pair": [3, 2]}  # JSON: the tuple is a list
        assert await power(base=3, exponent=2) == {"value": 9, "pair": [3, 2]}  # one key
        assert await power(3, 3) == {"value": 27, "pair": (3, 3)}
        assert calls == [(3, 2), (3, 3)]
        assert power.__name__ == "power"

        # Concurrent calls of one key make one call.
        results = await asyncio.gather(*(power(5) for _ in range(10)))
        assert all(result["value"] == 25 for result in results)
        assert calls.count((5, 2)) == 1

        assert await cache.invalidate(tag="maths") == 3
        await power(3)
        assert calls.count((3, 2)) == 2
        model = f"function:{__name__}.{power.__qualname__}"
        assert await cache.invalidate(model=model) == 1

        @cache.cached(version="2")
        async def power_v2(base: int, exponent: int = 2) -> int:
            calls.append((base, -exponent))
            return int(base**exponent)

        assert await power_v2(3) == 9
        assert await power_v2(3) == 9
        assert calls[-1] == (3, -2)
        assert calls.count((3, -2)) == 1


async def test_what_is_not_json_runs_uncached(
    dsn: str, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    async with connect_cache(dsn, namespace=namespace) as cache:

        @cache.cached()
        async def describe(thing: object) -> object:
            nonlocal calls
            calls += 1
            return {"kind": type(thing).__name__}

        @cache.cached(key=lambda client, question: question)
        async def ask(client: object, question: str) -> str:
            nonlocal calls
            calls += 1
            return question.upper()

        @cache.cached()
        async def opaque(n: int) -> object:
            nonlocal calls
            calls += 1
            return object()

        with caplog.at_level(logging.DEBUG, logger="llm_pgcache"):
            await describe(object())
            await describe(object())
            assert calls == 2  # an argument that is not JSON: not cached
            assert await ask(object(), "hi") == "HI"
            assert await ask(object(), "hi") == "HI"
            assert calls == 3  # `key=` leaves the client out
            await opaque(1)
            await opaque(1)
            assert calls == 5  # a result that is not JSON: returned, not stored
        assert any("uncached" in r.getMessage() for r in caplog.records)


async def test_only_async_functions(dsn: str) -> None:
    async with Cache.connect(dsn) as cache:
        with pytest.raises(InvalidInputError, match="async"):

            @cache.cached()  # type: ignore[arg-type]
            def sync(n: int) -> int:
                return n
