"""The options of a cache, as `Cache.connect` takes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

from llm_pgcache.validation import TTL

if TYPE_CHECKING:
    from llm_pgcache.breaker import CircuitBreaker
    from llm_pgcache.pricing import Price
    from llm_pgcache.semantic.embedders import Embedder
    from llm_pgcache.semantic.guard import Guard
    from llm_pgcache.semantic.search import SearchOptions
    from llm_pgcache.tiers.memory import MemoryTier
    from llm_pgcache.tiers.redis import RedisTier


class CacheOptions(TypedDict, total=False):
    """Keyword options of `Cache.connect` (defaults: those of `Cache.__init__`).

    Attributes:
        namespace: partition used when a call names none; namespaces never share rows.
        default_ttl: seconds (or timedelta) an entry lives when neither the call nor
            `model_ttls` says otherwise; None keeps entries until invalidated.
        model_ttls: default TTL per model name or fnmatch pattern ("gpt-4o*").
        store_prompts: store the last user turn in the `prompt` column (for humans and
            semantic matching); False stores keys only.
        strict: raise backend errors instead of treating them as misses.
        max_entry_bytes: refuse to store larger responses.
        embedder: turns the last user turn into a vector for semantic lookups (e.g.
            `OpenAIEmbedder()`, or the offline `HashingEmbedder`); None: exact only.
            Its dimension must equal the table's (`LLM_PGCACHE_EMBEDDING_DIM`).
        similarity_threshold: lowest cosine similarity served as a semantic hit;
            default: the embedder's `suggested_threshold`, else 0.9.
        semantic: whether lookups fall through to semantic search (per call too).
        search: ANN search settings (`SearchOptions`: candidates, probes, ef_search,
            rounds, budget).
        guard: what refuses a semantic candidate that looks like the query but asks
            something else (`LookAlikeGuard()`, the default: numbers, negation,
            antonyms, word order, names); None: the similarity threshold alone.
        lookup_timeout: seconds an exact lookup may wait for PostgreSQL before it
            counts as a miss; None: no limit (semantic lookups: `search.timeout`).
        write_timeout: the same for `set`.
        embed_timeout: seconds a lookup (or a `set`) waits for its embedding; past it the
            lookup is exact-only (the `set` stores without one), and an embedding that
            comes later still serves the `set` that follows. Default 2 s.
        breaker: when to stop asking a failing backend; default: after 5 consecutive
            failures with no success for 1 s, for 5 s, then one probe
            (`CircuitBreaker(threshold, cooldown, min_outage)`).
        prices: USD per million (input, output) tokens per model, for `cost_saved`.
        memory: an in-process tier in front of PostgreSQL (`MemoryTier(max_entries,
            max_bytes, ttl)`): hot keys skip the round trip. Other processes'
            invalidations reach it through PostgreSQL LISTEN/NOTIFY; while that
            connection is down, it is bypassed. None: PostgreSQL only.
        redis: a Redis tier between memory and PostgreSQL (`RedisTier(url_or_client,
            ttl)`, the `redis` extra), shared by the processes of an app.
        stale_grace: stale-while-revalidate: an exact entry expired less than this
            long ago is still returned, marked `stale`, for its caller to refresh (the
            openai wrapper serves it and refreshes it once, in the background). None:
            expired entries are never returned.
        version: your cache version, part of every key: bumping it (e.g. after a
            prompt or model change) puts every earlier entry out of reach at once, in
            every tier and every process; the old rows expire or are invalidated later.
    """

    namespace: str
    default_ttl: TTL | None
    model_ttls: Mapping[str, TTL] | None
    store_prompts: bool
    strict: bool
    max_entry_bytes: int
    embedder: Embedder | None
    similarity_threshold: float | None
    semantic: bool
    search: SearchOptions | None
    guard: Guard | None
    lookup_timeout: float | None
    write_timeout: float | None
    embed_timeout: float | None
    breaker: CircuitBreaker | None
    prices: Mapping[str, Price]
    memory: MemoryTier | None
    redis: RedisTier | None
    version: str
    stale_grace: TTL | None
