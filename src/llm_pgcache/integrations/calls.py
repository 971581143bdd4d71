"""One cached SDK call, whatever the SDK: the lookup, the single-flight upstream call,
the stream recorded or replayed, the store; what differs between SDKs (how a call is
keyed, what is stored, how a stream spells an answer) is a `dialect.Dialect`.

`CachedClient` is the base of the drop-in clients (`cached_openai`, `cached_anthropic`):
the cache, the policy and the per-request controls they share, and `with_cache`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any, Self

from llm_pgcache.breaker import OutageLog
from llm_pgcache.cache.facade import Cache
from llm_pgcache.entries import CacheHit
from llm_pgcache.errors import (
    BackendError,
    EmbeddingDimensionError,
    InvalidEmbeddingError,
    InvalidInputError,
    InvalidRequestError,
)
from llm_pgcache.integrations.dialect import Dialect
from llm_pgcache.integrations.events import RecordingStream, ReplayStream, give_up
from llm_pgcache.integrations.policy import (
    INFO_FIELD,
    CacheControls,
    CacheInfo,
    CachePolicy,
    cacheable_request,
    info_dict,
)
from llm_pgcache.keys import exact_key
from llm_pgcache.singleflight import Flight, Shared, SingleFlight

logger = logging.getLogger("llm_pgcache.integrations")

# What fails on the cache's side, not in the caller's request: a wrapped call answers
# from the upstream instead (unless the cache is strict). Logged once per outage.
CACHE_SIDE_ERRORS = (BackendError, InvalidEmbeddingError, EmbeddingDimensionError)


class CachedClient:
    """What a drop-in client's cached calls share: the cache, the policy, the per-request
    controls, single-flight and the cache's outage log. Attributes it does not replace
    are the wrapped client's."""

    def __init__(
        self,
        client: Any,
        cache: Cache,
        policy: CachePolicy,
        controls: CacheControls,
        *,
        flights: SingleFlight[dict[str, Any]],
        failures: OutageLog,
    ) -> None:
        self._client = client
        self.cache = cache
        self.policy = policy
        self.controls = controls
        self.flights = flights
        self.failures = failures  # of the cache, shared with the `with_cache` copies

    @classmethod
    def around(cls, client: Any, cache: Cache, **policy: Any) -> Self:
        """A new wrapper of `client` (the fields of `CachePolicy` as `policy`)."""
        return cls(
            client,
            cache,
            CachePolicy(**policy),
            CacheControls(),
            flights=SingleFlight(),
            failures=OutageLog(logger, "cache"),
        )

    def with_cache(self, **controls: Any) -> Self:
        """This client with per-request `CacheControls` (no_cache, no_store, ttl, ...)."""
        return type(self)(
            self._client,
            self.cache,
            self.policy,
            replace(self.controls, **controls),
            flights=self.flights,
            failures=self.failures,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class Resource:
    """An SDK resource (`client.chat`, ...) with some of its attributes replaced."""

    def __init__(self, upstream: Any, **replaced: Any) -> None:
        self._upstream = upstream
        for name, value in replaced.items():
            setattr(self, name, value)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)


class CachedCreate:
    """A resource whose `create` is answered from the cache when it can be."""

    def __init__(self, upstream: Any, owner: CachedClient, dialect: Dialect) -> None:
        self._upstream = upstream
        self._owner = owner
        self._dialect = dialect
        self._refreshing: set[asyncio.Task[None]] = set()  # held until done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    async def create(self, **call: Any) -> Any:
        """The SDK's `create`, from the cache when it can be."""
        owner, dialect = self._owner, self._dialect
        cache, controls = owner.cache, owner.controls
        namespace = controls.namespace or owner.policy.namespace
        if not cacheable_request(call, owner.policy):
            return await self._bypass(call)
        if (reason := dialect.unsupported(call)) is not None:
            logger.debug("llm-pgcache passes a call through uncached: %s", reason)
            return await self._bypass(call)
        started = time.perf_counter()
        try:
            request = dialect.cache_request(call)
        except InvalidRequestError as exc:  # not keyable (the API will say why)
            logger.debug("llm-pgcache passes a call through uncached: %s", exc)
            return await self._bypass(call)
        hit = None
        if not controls.no_cache:
            try:
                hit = await cache.get(
                    request,
                    namespace=namespace,
                    semantic=controls.semantic,
                    threshold=controls.threshold,
                    embed_timeout=controls.embed_timeout,
                )
            except InvalidRequestError:
                return await self._bypass(call)
            except CACHE_SIDE_ERRORS as exc:  # the LLM call goes ahead: a miss
                if cache.strict:
                    raise
                owner.failures.failed(exc, "answering from the upstream")
            else:
                owner.failures.ok()
        lookup_ms = (time.perf_counter() - started) * 1000
        if hit is not None and not hit.stale:
            return self._respond(hit.response, call, hit_info(hit, lookup_ms))
        return await self._not_fresh(call, request, namespace or cache.namespace, hit, lookup_ms)

    async def _not_fresh(
        self,
        call: Mapping[str, Any],
        request: Mapping[str, Any],
        namespace: str,
        hit: CacheHit | None,
        lookup_ms: float,
    ) -> Any:
        """A miss (asked upstream, one call per key) or a stale hit (served now,
        refreshed in the background): both by the request's key, which a fresh hit
        has no need of."""
        try:
            key = (namespace, exact_key(request, self._owner.cache.version))
        except InvalidRequestError as exc:
            logger.debug("llm-pgcache passes a call through uncached: %s", exc)
            return await self._bypass(call)
        if hit is None:
            return await self._miss(call, request, key, lookup_ms)
        self._refresh_later(call, request, key)
        return self._respond(hit.response, call, hit_info(hit, lookup_ms))

    async def _miss(
        self,
        call: Mapping[str, Any],
        request: Mapping[str, Any],
        key: tuple[str, bytes],
        lookup_ms: float,
    ) -> Any:
        """Ask the upstream (one call per key at a time), answer, and store."""
        flight = await self._owner.flights.lead_or_follow(key)
        if isinstance(flight, Shared):
            info = CacheInfo(tier="miss", lookup_ms=lookup_ms, shared=True)
            return self._respond(flight.result, call, info)
        return await self.lead(
            call, request, key, flight, CacheInfo(tier="miss", lookup_ms=lookup_ms)
        )

    async def lead(
        self,
        call: Mapping[str, Any],
        request: Mapping[str, Any],
        key: tuple[str, bytes],
        flight: Flight[dict[str, Any]],
        info: CacheInfo,
    ) -> Any:
        """The upstream call of the leader of `flight`: its answer (a stream recorded
        as it is read), stored when complete."""
        if call.get("stream") is True:
            sent, hide_added = self._dialect.stream_call(call)
            started = time.perf_counter()
            try:
                upstream = await self._upstream.create(**sent)
            except BaseException as exc:
                give_up(flight, exc)
                raise

            async def store(body: dict[str, Any]) -> None:
                await self.store(request, body, upstream_ms=(time.perf_counter() - started) * 1000)

            return RecordingStream(
                upstream, self._dialect, flight, store, info, hide_added=hide_added
            )
        started = time.perf_counter()
        try:
            answer = await self._upstream.create(**call)
        except BaseException as exc:
            give_up(flight, exc)
            raise
        body = body_of(answer)
        flight.finish(body)
        await self.store(request, body, upstream_ms=(time.perf_counter() - started) * 1000)
        return annotate(answer, info)

    async def _bypass(self, call: Mapping[str, Any]) -> Any:
        """The upstream call, not looked up nor stored."""
        result = await self._upstream.create(**call)
        return annotate(result, CacheInfo(tier="bypass"))

    def _refresh_later(
        self, call: Mapping[str, Any], request: Mapping[str, Any], key: tuple[str, bytes]
    ) -> None:
        """Replace a stale entry in the background, once for all concurrent callers."""
        flight = self._owner.flights.join(key)
        if not isinstance(flight, Flight):
            return  # a refresh (or a miss) of this key is already under way
        unstreamed = {k: v for k, v in call.items() if k not in ("stream", "stream_options")}

        async def refresh() -> None:
            started = time.perf_counter()
            try:
                answer = await self._upstream.create(**unstreamed)
            except Exception as exc:  # the stale entry stays; the next caller tries again
                logger.warning("llm-pgcache could not refresh a stale entry: %s", exc)
                flight.fail(exc)
                return
            body = body_of(answer)
            flight.finish(body)
            await self.store(request, body, upstream_ms=(time.perf_counter() - started) * 1000)

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    def _respond(self, body: Mapping[str, Any], call: Mapping[str, Any], info: CacheInfo) -> Any:
        """A stored or shared answer, in the form the call asked for."""
        if call.get("stream") is True:
            return ReplayStream(self._dialect.replay(body, call), info)
        return annotate(
            self._dialect.answer_of({k: v for k, v in body.items() if k != INFO_FIELD}), info
        )

    async def store(
        self, request: Mapping[str, Any], body: dict[str, Any], *, upstream_ms: float
    ) -> None:
        """Store a complete upstream answer, unless the policy or the controls say not to."""
        owner = self._owner
        cache, policy, controls = owner.cache, owner.policy, owner.controls
        if controls.no_store or not self._dialect.storable(body, policy):
            return
        try:
            await cache.set(
                request,
                body,
                ttl=controls.ttl if controls.ttl is not None else policy.ttl,
                tags=controls.tags if controls.tags is not None else policy.tags,
                namespace=controls.namespace or policy.namespace,
                semantic=controls.semantic,
                upstream_ms=round(upstream_ms),
                embed_timeout=controls.embed_timeout,
            )
        except InvalidInputError as exc:  # e.g. over max_entry_bytes: the caller still gets it
            logger.warning("llm-pgcache did not store a response: %s", exc)
        except CACHE_SIDE_ERRORS as exc:
            if cache.strict:
                raise
            owner.failures.failed(exc, "not storing")


def body_of(answer: Any) -> dict[str, Any]:
    """An SDK answer as the JSON that is stored."""
    body: dict[str, Any] = answer.model_dump(mode="json")
    body.pop(INFO_FIELD, None)
    return body


def annotate(result: Any, info: CacheInfo) -> Any:
    setattr(result, INFO_FIELD, info_dict(info))
    return result


def hit_info(hit: CacheHit, lookup_ms: float) -> CacheInfo:
    saved = None if hit.upstream_ms is None else max(0.0, hit.upstream_ms - lookup_ms)
    return CacheInfo(
        tier=hit.tier,
        similarity=hit.similarity,
        lookup_ms=lookup_ms,
        latency_saved_ms=saved,
        stale=hit.stale,
        accepted_by=hit.accepted_by,
        matched_prompt=hit.matched_prompt if hit.tier == "postgres-semantic" else None,
    )
