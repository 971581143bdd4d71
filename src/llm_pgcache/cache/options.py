"""The options of a cache, as `Cache.connect` takes them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, TypedDict

from llm_pgcache.validation import TTL

if TYPE_CHECKING:
    from llm_pgcache.breaker import CircuitBreaker
    from llm_pgcache.cache.verification import Verify
    from llm_pgcache.pricing import Price
    from llm_pgcache.semantic.embedders import Embedder
    from llm_pgcache.semantic.guard import Guard
    from llm_pgcache.semantic.judges import Judge
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
        similarity_threshold: lowest cosine similarity served as a semantic hit (with
            a judge: put to the judge); default: the embedder's `suggested_threshold`,
            else 0.9, and 0.1 lower with a judge.
        semantic: whether lookups fall through to semantic search (per call too).
        search: ANN search settings (`SearchOptions`: candidates, probes, ef_search,
            rounds, budget).
        guard: what refuses a semantic candidate that looks like the query but asks
            something else (`LookAlikeGuard()`, the default without a judge: numbers,
            negation, antonyms, word order, names); None (the default with a judge,
            which reads the texts themselves): the similarity threshold alone.
        judge: decides whether a semantic candidate's stored answer answers the query
            (`LLMJudge(client, model=...)`, `CrossEncoderJudge(model)`, or any object
            with `async def judge(case: JudgeCase) -> bool`); None: no judge.
        verify: when the judge is asked. "inline" (the default): a candidate that
            passed the threshold and the guard is served only when the judge accepts it
            within `judge_timeout`; a refusal, timeout or error is a miss. "background":
            only candidates at or above the serve threshold (`max_false_hit_rate`) are
            served; one below it is a miss now and is judged off the request path, and
            an accepted one becomes an alias: the new request's key for the same
            response, expiry and tags, going with it when it is invalidated, so the
            repeat is an exact hit (`accepted_by="alias"`).
        judge_timeout: seconds a verdict may take (default 2 s).
        max_false_hit_rate: a bound on the share of semantic hits served on similarity
            alone that answer another question. The serve threshold of each namespace
            and embedder is then the lowest similarity (not below
            `similarity_threshold`) at which the 95 % upper confidence bound of the
            false-hit rate among judged candidates at or above it is within the bound:
            judged by the background judge, audits (`audit_rate`), `report_wrong_hit`,
            `report_good_hit` and labelled pairs (`llm-pgcache tune-threshold --load`).
            Until there is that evidence, nothing is served on similarity alone.
            Default: None (the threshold decides), 0.01 with `verify="background"`.
        audit_rate: the share of hits served on similarity alone that the judge checks
            in the background, as evidence for the bound (default 0).
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
    judge: Judge | None
    verify: Verify
    judge_timeout: float
    max_false_hit_rate: float | None
    audit_rate: float
    lookup_timeout: float | None
    write_timeout: float | None
    embed_timeout: float | None
    breaker: CircuitBreaker | None
    prices: Mapping[str, Price]
    memory: MemoryTier | None
    redis: RedisTier | None
    version: str
    stale_grace: TTL | None
