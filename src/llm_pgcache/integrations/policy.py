"""What the openai wrapper caches, per wrapper and per request, and what it tells the caller."""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from llm_pgcache.validation import TTL

INFO_FIELD = "llm_pgcache"  # the attribute (and model_dump key) carrying `CacheInfo`

Outcome = Literal["memory", "redis", "postgres-exact", "postgres-semantic", "miss", "bypass"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheInfo:
    """What the cache did for one call; on the result as `.llm_pgcache` (a dict).

    Attributes:
        tier: which tier answered, "miss" (the upstream answered), or "bypass" (the
            request is outside the wrapper's policy and was not looked up).
        similarity: cosine similarity of a semantic hit; 1.0 for exact hits.
        lookup_ms: time spent looking up the cache.
        latency_saved_ms: for hits, how long the upstream took to produce the entry,
            minus the lookup, when that is known.
        shared: a miss answered by another caller's concurrent upstream call.
        stale: a hit past its expiry, within the cache's `stale_grace`; a refresh of it
            runs in the background.
        accepted_by: for hits, what let it be served ("exact", "threshold": see
            `CacheHit.accepted_by`).
        matched_prompt: for semantic hits, the stored prompt that matched.
    """

    tier: Outcome
    similarity: float | None = None
    lookup_ms: float = 0.0
    latency_saved_ms: float | None = None
    shared: bool = False
    stale: bool = False
    accepted_by: str | None = None
    matched_prompt: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CachePolicy:
    """What a wrapper caches.

    Attributes:
        models: fnmatch patterns of the models cached; None caches every model.
        max_temperature: requests sampling hotter than this are not cached (an absent
            temperature counts as 1.0, the API's default); None caches any temperature.
        cache_tool_calls: store responses that call tools.
        cache_truncated: store responses cut off by max_tokens (finish_reason "length").
        ttl, tags, namespace: defaults for what is stored (see `Cache.set`).
    """

    models: Sequence[str] | None = None
    max_temperature: float | None = None
    cache_tool_calls: bool = True
    cache_truncated: bool = False
    ttl: TTL | None = None
    tags: Sequence[str] = ()
    namespace: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheControls:
    """Per-request controls, given to `with_cache(...)`.

    Attributes:
        no_cache: skip the lookup (the fresh answer is still stored).
        no_store: do not store the answer.
        ttl, namespace, tags: override the policy's for this request.
        threshold: similarity threshold for this request's semantic lookup.
        semantic: turn semantic lookup on or off for this request.
        embed_timeout: seconds this request's lookup (and store) wait for the embedding.
    """

    no_cache: bool = False
    no_store: bool = False
    ttl: TTL | None = None
    namespace: str | None = None
    tags: Sequence[str] | None = None
    threshold: float | None = None
    semantic: bool | None = None
    embed_timeout: float | None = None


def info_dict(info: CacheInfo) -> dict[str, Any]:
    """`info` as the dict a result carries (`dataclasses.asdict` costs a hit 50 µs)."""
    return {name: getattr(info, name) for name in CacheInfo.__slots__}


def cache_info(result: object) -> CacheInfo | None:
    """The `CacheInfo` of a result of a cached client, or None."""
    info = getattr(result, INFO_FIELD, None)
    return CacheInfo(**info) if isinstance(info, dict) else None


def cacheable_request(request: Mapping[str, Any], policy: CachePolicy) -> bool:
    model = request.get("model")
    if policy.models is not None and not (
        isinstance(model, str) and any(fnmatch.fnmatchcase(model, p) for p in policy.models)
    ):
        return False
    if policy.max_temperature is not None:
        temperature = request.get("temperature")
        temperature = 1.0 if not isinstance(temperature, int | float) else temperature
        if temperature > policy.max_temperature:
            return False
    return True


def storable_response(body: Mapping[str, Any], policy: CachePolicy) -> bool:
    """Only complete, successful answers: no refusals, filtered or (by policy) cut-off ones."""
    choices = body.get("choices") or []
    if not choices:
        return False
    for choice in choices:
        reason = choice.get("finish_reason")
        message = choice.get("message") or {}
        if message.get("refusal") or reason in (None, "content_filter"):
            return False
        if reason == "length" and not policy.cache_truncated:
            return False
        if (reason == "tool_calls" or message.get("tool_calls")) and not policy.cache_tool_calls:
            return False
    return True
