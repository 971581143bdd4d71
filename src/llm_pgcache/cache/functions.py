"""`Cache.cached`: any async function whose results are JSON, cached like an LLM call.

A call is keyed by the function's qualified name, a version and its arguments, bound to
the signature (defaults applied, so `f(1)` and `f(x=1)` are one key) and canonicalized
as JSON; its entry is a row like any other (namespace, tags, expiry, invalidation, all
tiers), of the "model" `function:<module>.<qualname>`, so `invalidate(model=...)` drops
every result of one function. Results are stored as JSON: what comes back from the cache
is what `json.loads` makes of it (tuples become lists). Concurrent calls with the same
key in one process make one call (single-flight). Never semantic.

A call whose arguments (or `key=` value) or result are not JSON runs uncached, logged at
debug level: the decorator never turns a working function into a failing one; a cache
that fails is a miss, as everywhere.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

from llm_pgcache.cache.reads import Reads
from llm_pgcache.cache.writes import Writes
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.keys import canonical_request
from llm_pgcache.singleflight import AbandonedError, Shared, SingleFlight
from llm_pgcache.validation import TTL

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")
FUNCTION_MODEL_PREFIX = "function:"


class Functions(Reads, Writes):
    """`Cache.cached`, over `get` and `set`."""

    def cached(
        self,
        *,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        key: Callable[..., object] | None = None,
        version: str = "",
    ) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
        """Decorate an async function: calls with the same arguments return the stored
        result instead of running it again.

        Args:
            ttl: seconds (or timedelta) a result lives; default: the cache's.
            tags: labels for `invalidate(tag=...)`.
            namespace: where the results go; default: the cache's.
            key: called with the call's arguments, returns what keys it (JSON) in place
                of the arguments (e.g. to leave out a client object).
            version: bump it when the function's results change meaning.

        Raises:
            InvalidInputError: the decorated object is not an async function.
        """
        tag_list = tuple(tags)

        def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
            if not inspect.iscoroutinefunction(function):
                raise InvalidInputError(
                    f"cache.cached decorates async functions; {function!r} is not one"
                )
            signature = inspect.signature(function)
            model = f"{FUNCTION_MODEL_PREFIX}{function.__module__}.{function.__qualname__}"
            flights: SingleFlight[R] = SingleFlight()

            def request_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
                if key is not None:
                    keyed: object = key(*args, **kwargs)
                else:
                    bound = signature.bind(*args, **kwargs)
                    bound.apply_defaults()
                    keyed = dict(bound.arguments)
                return {
                    "model": model,
                    "messages": [{"role": "user", "content": json.dumps(keyed, sort_keys=True)}],
                    "function_version": version,
                }

            @functools.wraps(function)
            async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
                try:
                    request = request_of(args, kwargs)
                    flight_key = canonical_request(request)
                except (TypeError, ValueError) as exc:  # arguments that are not JSON
                    logger.debug("llm-pgcache: %s called uncached: %s", model, exc)
                    return await function(*args, **kwargs)
                hit = await self.get(request, namespace=namespace, semantic=False)
                if hit is not None:
                    value: R = hit.response["value"]
                    return value
                flight = await flights.lead_or_follow(flight_key)
                if isinstance(flight, Shared):
                    return flight.result
                try:
                    result = await function(*args, **kwargs)
                    await self._store_result(request, result, ttl, tag_list, namespace)
                except asyncio.CancelledError:
                    flight.fail(AbandonedError())  # a follower runs it instead
                    raise
                except BaseException as exc:
                    flight.fail(exc)
                    raise
                flight.finish(result)
                return result

            return wrapper

        return decorate

    async def _store_result(
        self,
        request: dict[str, Any],
        result: object,
        ttl: TTL | None,
        tags: tuple[str, ...],
        namespace: str | None,
    ) -> None:
        try:
            await self.set(
                request, {"value": result}, ttl=ttl, tags=tags, namespace=namespace, semantic=False
            )
        except InvalidInputError as exc:  # a result that is not JSON: returned, not stored
            logger.debug("llm-pgcache: %s result not stored: %s", request["model"], exc)
