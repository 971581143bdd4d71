"""Drop-in caching for `openai.AsyncOpenAI`: `cached_openai(client, cache, **policy)`.

    client = cached_openai(AsyncOpenAI(), cache)
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    reply.llm_pgcache  # {"tier": "postgres-exact", "similarity": 1.0, ...}

`chat.completions.create` takes exactly the wrapped client's arguments and returns real
openai types: a `ChatCompletion`, or (with `stream=True`) an async stream of
`ChatCompletionChunk`. Everything else on the client passes through untouched.
Per-request cache controls go through `client.with_cache(ttl=..., no_store=True, ...)`,
which returns a wrapper for that call: nothing is added to the request itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import asdict, replace
from typing import TYPE_CHECKING, Any

from openai.types.chat import ChatCompletion

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
from llm_pgcache.integrations.openai_embeddings import CachedEmbeddings
from llm_pgcache.integrations.openai_streams import RecordingStream, ReplayStream, give_up
from llm_pgcache.integrations.policy import (
    INFO_FIELD,
    CacheControls,
    CacheInfo,
    CachePolicy,
    cache_info,
    cacheable_request,
    storable_response,
)
from llm_pgcache.keys import exact_key
from llm_pgcache.singleflight import Flight, Shared, SingleFlight

if TYPE_CHECKING:
    from openai import AsyncOpenAI

logger = logging.getLogger(__name__)

# What fails on the cache's side, not in the caller's request: a wrapped call answers
# from the upstream instead (unless the cache is strict). Logged once per outage.
CACHE_SIDE_ERRORS = (BackendError, InvalidEmbeddingError, EmbeddingDimensionError)


def cached_openai(client: AsyncOpenAI, cache: Cache, **policy: Any) -> CachedOpenAI:
    """Wrap `client` so that its chat completions and embeddings go through `cache`.

    Args:
        client: an `openai.AsyncOpenAI` (any base_url).
        cache: an opened `Cache`.
        **policy: the fields of `CachePolicy` (models, max_temperature, cache_tool_calls,
            cache_truncated, ttl, tags, namespace).
    """
    return CachedOpenAI(
        client,
        cache,
        CachePolicy(**policy),
        CacheControls(),
        flights=SingleFlight(),
        failures=OutageLog(logger, "cache"),
    )


class CachedOpenAI:
    """An `AsyncOpenAI` whose `chat.completions.create` and `embeddings.create` are
    cached (embeddings item by item: `integrations.openai_embeddings`)."""

    def __init__(
        self,
        client: AsyncOpenAI,
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
        self.chat = _Chat(client.chat, _Completions(client.chat.completions, self, flights))
        self.embeddings = CachedEmbeddings(client.embeddings, self)
        self._flights = flights
        self.failures = failures  # of the cache, shared with the `with_cache` copies

    def with_cache(self, **controls: Any) -> CachedOpenAI:
        """This client with per-request `CacheControls` (no_cache, no_store, ttl, ...)."""
        return CachedOpenAI(
            self._client,
            self.cache,
            self.policy,
            replace(self.controls, **controls),
            flights=self._flights,
            failures=self.failures,
        )

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


class _Chat:
    def __init__(self, chat: Any, completions: _Completions) -> None:
        self._chat = chat
        self.completions = completions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._chat, name)


class _Completions:
    def __init__(
        self, upstream: Any, owner: CachedOpenAI, flights: SingleFlight[dict[str, Any]]
    ) -> None:
        self._upstream = upstream
        self._owner = owner
        self._flights = flights
        self._refreshing: set[asyncio.Task[None]] = set()  # held until done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    async def create(self, **request: Any) -> Any:
        """`chat.completions.create`, answered from the cache when it can be."""
        cache, policy, controls = self._owner.cache, self._owner.policy, self._owner.controls
        namespace = controls.namespace or policy.namespace
        if not cacheable_request(request, policy):
            return await self._bypass(request)
        started = time.perf_counter()
        try:
            key = (namespace or cache.namespace, exact_key(request, cache.version))
        except InvalidRequestError:  # not keyable (the API will say why): no caching
            return await self._bypass(request)
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
                return await self._bypass(request)
            except CACHE_SIDE_ERRORS as exc:  # the LLM call goes ahead: a miss
                if cache.strict:
                    raise
                self._owner.failures.failed(exc, "answering from the upstream")
            else:
                self._owner.failures.ok()
        if hit is not None and not hit.stale:
            return _from_hit(hit, request, (time.perf_counter() - started) * 1000)
        if hit is not None:  # stale: served now, refreshed in the background
            self._refresh_later(key, request)
            return _from_hit(hit, request, (time.perf_counter() - started) * 1000)
        return await self._miss(request, key, (time.perf_counter() - started) * 1000)

    async def _miss(
        self, request: Mapping[str, Any], key: tuple[str, bytes], lookup_ms: float
    ) -> Any:
        """Ask the upstream (one call per key at a time), answer, and store."""
        flight = await self._flights.lead_or_follow(key)
        if isinstance(flight, Shared):
            info = CacheInfo(tier="miss", lookup_ms=lookup_ms, shared=True)
            return _respond(flight.result, request, info)
        info = CacheInfo(tier="miss", lookup_ms=lookup_ms)
        if request.get("stream") is True:
            return await RecordingStream.open(
                self._upstream.create, self.store, flight, request, info
            )
        upstream_started = time.perf_counter()
        try:
            completion = await self._upstream.create(**request)
        except BaseException as exc:
            give_up(flight, exc)
            raise
        body = _completion_json(completion)
        flight.finish(body)
        await self.store(request, body, upstream_ms=(time.perf_counter() - upstream_started) * 1000)
        return _annotate(completion, info)

    async def _bypass(self, request: Mapping[str, Any]) -> Any:
        """The upstream call, not looked up nor stored."""
        result = await self._upstream.create(**request)
        return _annotate(result, CacheInfo(tier="bypass"))

    def _refresh_later(self, key: tuple[str, bytes], request: Mapping[str, Any]) -> None:
        """Replace a stale entry in the background, once for all concurrent callers."""
        flight = self._flights.join(key)
        if not isinstance(flight, Flight):
            return  # a refresh (or a miss) of this key is already under way
        upstream_request = {
            k: v for k, v in request.items() if k not in ("stream", "stream_options")
        }

        async def refresh() -> None:
            started = time.perf_counter()
            try:
                completion = await self._upstream.create(**upstream_request)
            except Exception as exc:  # the stale entry stays; the next caller tries again
                logger.warning("llm-pgcache could not refresh a stale entry: %s", exc)
                flight.fail(exc)
                return
            body = _completion_json(completion)
            flight.finish(body)
            await self.store(request, body, upstream_ms=(time.perf_counter() - started) * 1000)

        task = asyncio.get_running_loop().create_task(refresh())
        self._refreshing.add(task)
        task.add_done_callback(self._refreshing.discard)

    async def store(
        self, request: Mapping[str, Any], body: dict[str, Any], *, upstream_ms: float
    ) -> None:
        """Store a complete upstream answer, unless the policy or the controls say not to."""
        cache, policy, controls = self._owner.cache, self._owner.policy, self._owner.controls
        if controls.no_store or not storable_response(body, policy):
            return
        tags = controls.tags if controls.tags is not None else policy.tags
        try:
            await cache.set(
                request,
                body,
                ttl=controls.ttl if controls.ttl is not None else policy.ttl,
                tags=tags,
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
            self._owner.failures.failed(exc, "not storing")


def _completion_json(completion: Any) -> dict[str, Any]:
    body: dict[str, Any] = completion.model_dump(mode="json")
    body.pop(INFO_FIELD, None)
    return body


def _annotate(result: Any, info: CacheInfo) -> Any:
    setattr(result, INFO_FIELD, asdict(info))
    return result


def _from_hit(hit: CacheHit, request: Mapping[str, Any], lookup_ms: float) -> Any:
    saved = None if hit.upstream_ms is None else max(0.0, hit.upstream_ms - lookup_ms)
    info = CacheInfo(
        tier=hit.tier,
        similarity=hit.similarity,
        lookup_ms=lookup_ms,
        latency_saved_ms=saved,
        stale=hit.stale,
        accepted_by=hit.accepted_by,
        matched_prompt=hit.matched_prompt if hit.tier == "postgres-semantic" else None,
    )
    return _respond(hit.response, request, info)


def _respond(body: Mapping[str, Any], request: Mapping[str, Any], info: CacheInfo) -> Any:
    """A stored or shared completion, in the form the request asked for."""
    if request.get("stream") is True:
        options = request.get("stream_options") or {}
        return ReplayStream(body, info, include_usage=bool(options.get("include_usage")))
    completion = ChatCompletion.model_validate({k: v for k, v in body.items() if k != INFO_FIELD})
    return _annotate(completion, info)


__all__ = [
    "CacheControls",
    "CacheInfo",
    "CachePolicy",
    "CachedOpenAI",
    "ReplayStream",
    "cache_info",
    "cached_openai",
]
