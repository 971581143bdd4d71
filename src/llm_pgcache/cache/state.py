"""What the parts of a `Cache` share: the state its use cases work on, declared and built
here.

`Cache` is put together from `reads.Reads` (lookups), `writes.Writes` (stores, loads,
invalidations), `functions.Functions` (the `cached` decorator, over both) and
`maintenance.Maintenance` (index, purge, measures), all over this state;
`CacheState.__init__` builds every part from the `CacheOptions`.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Unpack

from llm_pgcache.breaker import CircuitBreaker
from llm_pgcache.cache.health import BackendHealth
from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.cache.options import CacheOptions
from llm_pgcache.cache.rules import DEFAULT_MAX_ENTRY_BYTES, EntryRules
from llm_pgcache.cache.verification import (
    DEFAULT_JUDGE_TIMEOUT,
    THRESHOLD_REFRESH,
    VERIFY_MODES,
    ServeThresholds,
    Verdicts,
    Verify,
)
from llm_pgcache.cache.write_behind import WriteBehind
from llm_pgcache.errors import (
    BackendError,
    ConfigurationError,
    EmbedderError,
    EmbeddingDimensionError,
    InvalidInputError,
)
from llm_pgcache.keys import RequestKeys
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.pricing import DEFAULT_PRICES
from llm_pgcache.semantic.batches import Vector
from llm_pgcache.semantic.bound import DEFAULT_BOUND
from llm_pgcache.semantic.guard import Guard, LookAlikeGuard
from llm_pgcache.semantic.judges import Judge
from llm_pgcache.semantic.search import (
    DEFAULT_SIMILARITY_THRESHOLD,
    SearchOptions,
    SemanticSearch,
)
from llm_pgcache.semantic.vectors import checked_vector
from llm_pgcache.tiers.upper import UpperTiers
from llm_pgcache.validation import check_rate, check_threshold, check_timeout, ttl_seconds

DEFAULT_LOOKUP_TIMEOUT = 0.05  # seconds a lookup may wait for PostgreSQL before it is a miss
DEFAULT_WRITE_TIMEOUT = 1.0
DEFAULT_EMBED_TIMEOUT = 2.0  # seconds a lookup or a store waits for its embedding
# With a judge, candidates from this much below the embedder's threshold are put to it:
# with all-MiniLM-L6-v2 and a judge right 95 % of the time, 0.8 instead of 0.9 serves
# MRPC 36 % of its paraphrases instead of 22 %, wrong answers staying at 0.2 % of all
# lookups (SICK: 95 % and 0.45 %; docs/benchmarks.md).
JUDGED_THRESHOLD_MARGIN = 0.1


class CacheState:
    """The state of a `Cache`, declared and built once for the modules of its use cases."""

    rules: EntryRules
    semantic: bool
    similarity_threshold: float
    guard: Guard | None
    verify: Verify
    lookup_timeout: float | None
    write_timeout: float | None
    embed_timeout: float | None
    stale_grace: float
    _store: PostgresStore
    _semantic: SemanticSearch | None
    _verdicts: Verdicts
    _thresholds: ServeThresholds | None  # under a false-hit bound
    _metrics: Metrics
    _health: BackendHealth  # exact lookups and writes: PostgreSQL
    _semantic_health: BackendHealth  # semantic queries: PostgreSQL, accounted apart
    _embedder_health: BackendHealth
    _write_behind: WriteBehind
    _tiers: UpperTiers
    _origin: str  # tells our own invalidation notices from others
    _purging: asyncio.Task[None] | None

    def __init__(self, store: PostgresStore, **options: Unpack[CacheOptions]) -> None:
        """Wrap an opened store; prefer `Cache.connect`, which opens one. No I/O here.

        Raises:
            ConfigurationError: an option `CacheOptions` does not name.
            InvalidInputError (and its subclasses): a bad option.
            EmbeddingDimensionError: the embedder's dimension differs from the table's.
        """
        unknown = sorted(options.keys() - CacheOptions.__optional_keys__)
        if unknown:  # mypy sees them; a caller without it deserves the same
            raise ConfigurationError(f"unknown cache option(s): {', '.join(unknown)}")
        self._store = store
        self.rules = EntryRules.checked(
            namespace=options.get("namespace", "default"),
            version=options.get("version", ""),
            default_ttl=options.get("default_ttl"),
            model_ttls=options.get("model_ttls"),
            store_prompts=options.get("store_prompts", True),
            max_entry_bytes=options.get("max_entry_bytes", DEFAULT_MAX_ENTRY_BYTES),
        )
        embedder = options.get("embedder")
        threshold = options.get("similarity_threshold")
        self.semantic = options.get("semantic", True) and embedder is not None
        self._semantic = None
        if embedder is not None:
            if embedder.dim != store.embedding_dim:
                raise EmbeddingDimensionError(
                    embedder_dim=embedder.dim, table_dim=store.embedding_dim
                )
            self._semantic = SemanticSearch(
                store, embedder, options.get("search") or SearchOptions()
            )
        # A judge reads what the guard's rules guess at: with one, the guard is off unless
        # asked for (measured: docs/benchmarks.md, "Judges").
        judged = options.get("judge") is not None
        self.guard = options.get("guard", None if judged else LookAlikeGuard())
        if threshold is None:
            threshold = DEFAULT_SIMILARITY_THRESHOLD
            if embedder is not None:
                threshold = getattr(embedder, "suggested_threshold", threshold)
            if judged:  # the judge refuses what the threshold let by
                threshold -= JUDGED_THRESHOLD_MARGIN
        self.similarity_threshold = check_threshold(threshold)
        self.lookup_timeout = check_timeout(
            "lookup_timeout", options.get("lookup_timeout", DEFAULT_LOOKUP_TIMEOUT)
        )
        self.write_timeout = check_timeout(
            "write_timeout", options.get("write_timeout", DEFAULT_WRITE_TIMEOUT)
        )
        self._metrics = Metrics(options.get("prices", DEFAULT_PRICES))
        self._verdicts, self._thresholds = self._judging(options)
        self.embed_timeout = check_timeout(
            "embed_timeout", options.get("embed_timeout", DEFAULT_EMBED_TIMEOUT)
        )
        strict = options.get("strict", False)
        self._health = BackendHealth(
            strict=strict, breaker=options.get("breaker") or CircuitBreaker(), metrics=self._metrics
        )
        # One failing or slow path never turns another off: each has its own breaker.
        self._semantic_health = BackendHealth(
            strict=strict,
            breaker=CircuitBreaker(),
            metrics=self._metrics,
            what="semantic search",
            watchdog=self._health.watchdog,
        )
        self._embedder_health = BackendHealth(
            strict=strict,
            breaker=CircuitBreaker(),
            metrics=self._metrics,
            what="embedder",
            watchdog=self._health.watchdog,
        )
        self._write_behind = WriteBehind(store, self._metrics)
        self._origin = uuid.uuid4().hex
        self._tiers = UpperTiers(
            options.get("memory"), options.get("redis"), store=store, origin=self._origin
        )
        self.stale_grace = ttl_seconds(options.get("stale_grace")) or 0.0
        self._purging = None

    def _judging(self, options: CacheOptions) -> tuple[Verdicts, ServeThresholds | None]:
        """The judge and the false-hit bound of `options`, checked."""
        judge: Judge | None = options.get("judge")
        if judge is not None and not callable(getattr(judge, "judge", None)):
            raise InvalidInputError(
                f"judge must have an async judge(case) method, got {type(judge).__name__}"
            )
        verify = options.get("verify", "inline")
        if verify not in VERIFY_MODES:
            raise InvalidInputError(f"verify must be 'inline' or 'background', got {verify!r}")
        if verify == "background" and judge is None:
            raise InvalidInputError("verify='background' needs a judge")
        self.verify = verify
        bound = options.get("max_false_hit_rate", DEFAULT_BOUND if verify == "background" else None)
        if bound is not None:
            check_rate("max_false_hit_rate", bound)
            if bound <= 0:
                raise InvalidInputError("max_false_hit_rate must be above 0")
        audit_rate = check_rate("audit_rate", options.get("audit_rate", 0.0))
        judge_timeout = check_timeout(
            "judge_timeout", options.get("judge_timeout", DEFAULT_JUDGE_TIMEOUT)
        )
        if judge_timeout is None:  # a judge that hangs must not hold a lookup
            raise InvalidInputError("judge_timeout must be a number of seconds")
        verdicts = Verdicts(
            judge,
            timeout=judge_timeout,
            judgments=self._store.judgments,
            metrics=self._metrics,
            audit_rate=audit_rate,
        )
        thresholds = None
        if bound is not None:
            thresholds = ServeThresholds(
                self._store.judgments,
                bound=bound,
                floor=self.similarity_threshold,
                refresh=THRESHOLD_REFRESH,
            )
        return verdicts, thresholds

    @property
    def namespace(self) -> str:
        """The namespace of calls that name none."""
        return self.rules.namespace

    @property
    def max_false_hit_rate(self) -> float | None:
        """The false-hit bound of hits served on similarity alone, or None."""
        return None if self._thresholds is None else self._thresholds.bound

    @property
    def strict(self) -> bool:
        """Whether backend failures raise instead of being misses."""
        return self._health.strict

    @property
    def version(self) -> str:
        """The cache version in every key."""
        return self.rules.version

    def _semantic_for(self, semantic: bool | None) -> SemanticSearch | None:
        """The semantic search to use for a call, given its `semantic` argument."""
        if semantic is None:
            return self._semantic if self.semantic else None
        if semantic and self._semantic is None:
            raise InvalidInputError("semantic=True needs a cache opened with an embedder")
        return self._semantic if semantic else None

    def _given_vector(self, embedding: object) -> Vector:
        """A caller's embedding of a request's last user turn, made by the cache's
        embedder's model (it is stored and compared as that embedder's), checked.

        Raises:
            InvalidInputError: the cache has no embedder.
            EmbeddingDimensionError, InvalidEmbeddingError: not one usable vector of the
                table's dimension.
        """
        if self._semantic is None:
            raise InvalidInputError("an embedding needs a cache opened with an embedder")
        return checked_vector(embedding, dim=self._store.embedding_dim)

    async def _embedding(
        self,
        search: SemanticSearch,
        namespace: str,
        keys: RequestKeys,
        embed_timeout: float | None = None,
        *,
        keep: bool = False,
    ) -> Vector | None:
        """The embedding of the request's last user turn within `embed_timeout` (this
        call's, else the cache's); None when the embedder failed, is late, or its breaker
        is open. `keep`: a lookup's, kept for the `set` that follows a miss
        (`SemanticSearch.embedding_for`)."""
        health = self._embedder_health
        if not health.breaker.allow():
            return None
        seconds = self.embed_timeout if embed_timeout is None else embed_timeout
        try:
            with health.deadline(seconds, f"embedder {search.embedder.name}", EmbedderError):
                vector = await search.embedding_for(namespace, keys.exact_key, keys.text, keep=keep)
        except BackendError as exc:
            health.failed(exc)
            return None
        health.ok()
        return vector
