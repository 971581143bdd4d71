"""The public `Cache`: the use cases over the storage tiers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import replace
from types import TracebackType
from typing import Any, Self, Unpack

import asyncpg

from llm_pgcache.breaker import CircuitBreaker
from llm_pgcache.config import Settings
from llm_pgcache.connecting import Connecting, open_store
from llm_pgcache.embeddings import Embedder
from llm_pgcache.entries import CacheHit
from llm_pgcache.errors import (
    BackendError,
    EmbeddingDimensionError,
    InvalidInputError,
)
from llm_pgcache.health import BackendHealth
from llm_pgcache.hits import WriteBehind
from llm_pgcache.invalidation import notice
from llm_pgcache.metrics import Counters, Metrics, Stats
from llm_pgcache.options import CacheOptions
from llm_pgcache.pricing import DEFAULT_PRICES, Price
from llm_pgcache.purge import Progress, PurgeReport, purge, purge_forever
from llm_pgcache.reindex import ReindexReport, reindex
from llm_pgcache.rules import DEFAULT_MAX_ENTRY_BYTES, EntryRules
from llm_pgcache.semantic import DEFAULT_SIMILARITY_THRESHOLD, SearchOptions, SemanticSearch
from llm_pgcache.store.memory import MemoryTier
from llm_pgcache.store.postgres import PostgresStore
from llm_pgcache.store.redis import RedisTier
from llm_pgcache.tiers import Ticket, UpperTiers
from llm_pgcache.validation import (
    TTL,
    check_threshold,
    ttl_seconds,
)
from llm_pgcache.warm import WarmItem, WarmReport, batches, precompute

logger = logging.getLogger("llm_pgcache")

DEFAULT_LOOKUP_TIMEOUT = 0.05  # seconds a lookup may wait for PostgreSQL before it is a miss
DEFAULT_WRITE_TIMEOUT = 1.0


class Cache:
    """A durable, shared cache of LLM responses in PostgreSQL.

    Open one per process with `await Cache.connect(...)` (or `async with
    Cache.connect(...) as cache:`), share it between requests, and `await cache.close()`
    on shutdown.

    Example:
        async with Cache.connect("postgresql://app@db/app") as cache:
            hit = await cache.get(request)
            if hit is None:
                response = await client.chat.completions.create(**request)
                await cache.set(request, response, ttl=3600)
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        namespace: str = "default",
        default_ttl: TTL | None = None,
        model_ttls: Mapping[str, TTL] | None = None,
        store_prompts: bool = True,
        strict: bool = False,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        embedder: Embedder | None = None,
        similarity_threshold: float | None = None,
        semantic: bool = True,
        search: SearchOptions | None = None,
        lookup_timeout: float | None = DEFAULT_LOOKUP_TIMEOUT,
        write_timeout: float | None = DEFAULT_WRITE_TIMEOUT,
        breaker: CircuitBreaker | None = None,
        prices: Mapping[str, Price] = DEFAULT_PRICES,
        memory: MemoryTier | None = None,
        redis: RedisTier | None = None,
        version: str = "",
        stale_grace: TTL | None = None,
    ) -> None:
        """Wrap an opened store; prefer `Cache.connect`, which opens one. No I/O here."""
        self._store = store
        self.rules = EntryRules.checked(
            namespace=namespace,
            version=version,
            default_ttl=default_ttl,
            model_ttls=model_ttls,
            store_prompts=store_prompts,
            max_entry_bytes=max_entry_bytes,
        )
        self.semantic = semantic and embedder is not None
        self._semantic: SemanticSearch | None = None
        if embedder is not None:
            if embedder.dim != store.embedding_dim:
                raise EmbeddingDimensionError(
                    embedder_dim=embedder.dim, table_dim=store.embedding_dim
                )
            if similarity_threshold is None:
                similarity_threshold = getattr(
                    embedder, "suggested_threshold", DEFAULT_SIMILARITY_THRESHOLD
                )
            self._semantic = SemanticSearch(store, embedder, search or SearchOptions())
        self.similarity_threshold = check_threshold(
            DEFAULT_SIMILARITY_THRESHOLD if similarity_threshold is None else similarity_threshold
        )
        self.lookup_timeout = lookup_timeout
        self.write_timeout = write_timeout
        self._metrics = Metrics(prices)
        self._health = BackendHealth(
            strict=strict, breaker=breaker or CircuitBreaker(), metrics=self._metrics
        )
        self._write_behind = WriteBehind(store, self._metrics)
        self._tiers = UpperTiers(memory, redis)
        self.stale_grace = 0.0 if stale_grace is None else ttl_seconds(stale_grace) or 0.0
        self._origin = uuid.uuid4().hex  # tells our own invalidation notices from others
        self._purging: asyncio.Task[None] | None = None

    @property
    def namespace(self) -> str:
        """The namespace of calls that name none."""
        return self.rules.namespace

    @property
    def version(self) -> str:
        """The cache version in every key."""
        return self.rules.version

    @classmethod
    def connect(
        cls,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        min_size: int = 10,
        max_size: int = 10,
        embedded_dir: str | None = None,
        **options: Unpack[CacheOptions],
    ) -> Connecting:
        """Open a cache: `cache = await Cache.connect(...)` or `async with Cache.connect(...)`.

        Args:
            dsn: PostgreSQL DSN. Default: `LLM_PGCACHE_DSN`, then `DATABASE_URL`, then an
                embedded PostgreSQL under a per-user data directory (migrated on first use).
            pool: an asyncpg pool you own (created with `init=llm_pgcache.init_connection`);
                it is not closed by `close()`.
            min_size, max_size: size of the pool the cache opens for itself. All its
                connections are opened up front by default: `lookup_timeout` includes
                waiting for a pooled connection. Exact lookups hold at most six at a time
                (lookups that overlap share queries); the rest serve stores, semantic
                lookups and invalidations.
            embedded_dir: data directory of the embedded server (when no DSN is found).
            **options: how the cache behaves; see `CacheOptions` (namespace, default_ttl,
                embedder, memory, redis, lookup_timeout, ...).

        Raises:
            BackendError: the server cannot be reached.
            SchemaError: the database is not migrated (a DSN was given).
            ConfigurationError: a bad DSN, or no DSN and the `embedded` extra is missing.
            EmbeddingDimensionError: the embedder's dimension differs from the table's.
        """
        if pool is not None:
            opening = PostgresStore.from_pool(pool)
        else:
            opening = open_store(
                dsn or Settings.from_env().dsn,
                min_size=min_size,
                max_size=max_size,
                embedded_dir=embedded_dir,
            )
        return Connecting(cls._open(opening, dict(options)))

    @classmethod
    async def _open(cls, opening: Awaitable[PostgresStore], options: dict[str, Any]) -> Self:
        store = await opening
        try:
            cache = cls(store, **options)
            await cache._tiers.listen(store, cache._origin)
        except BaseException:
            await store.close()
            raise
        return cache

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Stop background work, write pending hit counts, and close the connections the
        cache opened (not a pool passed in)."""
        if self._purging is not None:
            self._purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purging
        await self._write_behind.close()
        await self._tiers.close()
        await self._health.close()
        await self._store.close()

    async def get(
        self,
        request: Mapping[str, Any],
        *,
        namespace: str | None = None,
        semantic: bool | None = None,
        threshold: float | None = None,
    ) -> CacheHit | None:
        """The cached response of `request`, or None on a miss.

        Looks up the exact request first; on a miss, when the cache has an embedder and
        `semantic` is on, the nearest stored request of the same scope (same model, system
        prompt, earlier turns and parameters; only the last user turn may differ) whose
        similarity reaches the threshold. The embedding made here is kept for a `set` of
        the same request that follows, so a miss is embedded once.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            namespace: overrides the cache's namespace for this call.
            semantic: overrides the cache's `semantic` for this call.
            threshold: overrides the cache's `similarity_threshold` for this call.

        Raises:
            InvalidRequestError: the request cannot be keyed (no model, non-JSON values...).
            InvalidInputError: a bad threshold, or `semantic=True` without an embedder.
            BackendError: only with `strict=True`; otherwise a backend failure is a miss.
        """
        key = self.rules.exact_key(request)
        ns = self.rules.namespace_of(namespace)
        semantic_search = self._semantic_for(semantic)
        if threshold is not None:
            check_threshold(threshold)
        started = time.perf_counter()
        hit, ticket = await self._tiers.get(ns, key) if self._tiers.active else (None, None)
        if hit is None:
            if not self._health.breaker.allow():
                self._missed(ns, started)
                return None
            try:
                hit = await self._postgres(
                    ns,
                    key,
                    request,
                    semantic_search=semantic_search,
                    threshold=threshold,
                    ticket=ticket,
                )
            except BackendError as exc:
                self._health.failed(exc)
                hit = None
            else:
                self._health.ok()
        if hit is None:
            self._missed(ns, started)
            return None
        self._metrics.hit(hit, lookup_ms=(time.perf_counter() - started) * 1000)
        self._write_behind.record(hit.namespace, hit.key)
        return hit

    def _missed(self, ns: str, started: float) -> None:
        self._metrics.miss(ns, (time.perf_counter() - started) * 1000)
        self._write_behind.schedule()

    async def _postgres(
        self,
        ns: str,
        key: bytes,
        request: Mapping[str, Any],
        *,
        semantic_search: SemanticSearch | None,
        threshold: float | None,
        ticket: Ticket | None,
    ) -> CacheHit | None:
        """A hit from PostgreSQL, exact then semantic, promoted to the tiers above (with
        the `ticket` their miss gave)."""
        with self._health.deadline(self.lookup_timeout, "lookup"):
            record = await self._store.get(ns, key, self.stale_grace, self.lookup_timeout)
        if record is not None:
            hit = CacheHit.from_record(record, namespace=ns, tier="postgres-exact")
        elif semantic_search is not None:
            record = await self._nearest(semantic_search, ns, request, threshold)
            if record is None:
                return None
            similarity = 1.0 - record["distance"]
            hit = CacheHit.from_record(
                record, namespace=ns, tier="postgres-semantic", similarity=similarity
            )
        else:
            return None
        if ticket is not None and not hit.stale:  # a stale entry is served, never promoted
            await self._tiers.promote(
                ns, key, hit, record["response"], record["ttl_left"], ticket=ticket
            )
        return hit

    async def _nearest(
        self,
        search: SemanticSearch,
        namespace: str,
        request: Mapping[str, Any],
        threshold: float | None,
    ) -> asyncpg.Record | None:
        keys = self.rules.keys(request)
        if not keys.text.strip():
            return None
        vector = await search.embed(keys.text)  # not under the lookup deadline
        search.pending.put(namespace, keys.exact_key, vector)
        with self._health.deadline(search.options.timeout, "semantic lookup"):
            return await search.nearest(
                namespace,
                keys,
                vector,
                threshold=self.similarity_threshold if threshold is None else threshold,
            )

    async def set(
        self,
        request: Mapping[str, Any],
        response: object,
        *,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        semantic: bool | None = None,
        upstream_ms: int | None = None,
    ) -> None:
        """Store `response` as the answer to `request`, replacing any previous one.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            response: a `ChatCompletion` or its JSON dict.
            ttl: seconds (or timedelta) until expiry; default from `model_ttls`, then
                `default_ttl`.
            tags: labels for `invalidate(tag=...)`.
            namespace: overrides the cache's namespace for this call.
            semantic: whether to store an embedding (default: the cache's `semantic`);
                the one made by a missed `get` of the same request is reused.
            upstream_ms: how long the LLM took to produce the response; hits report it
                as the latency they saved.

        Raises:
            InvalidRequestError, InvalidResponseError, InvalidTTLError, InvalidInputError:
                bad input; nothing is written.
            InvalidEmbeddingError, EmbeddingDimensionError: the embedder returned an
                unusable vector; nothing is written.
            BackendError: only with `strict=True`; otherwise the failure is logged.
        """
        semantic_search = self._semantic_for(semantic)
        keys, entry = self.rules.entry(
            request, response, ttl=ttl, tags=tags, namespace=namespace, upstream_ms=upstream_ms
        )
        ns = entry.namespace
        try:
            if semantic_search is not None and keys.text.strip():
                embedding = semantic_search.pending.pop(ns, keys.exact_key)
                if embedding is None:
                    embedding = await semantic_search.embed(keys.text)
                entry = replace(entry, embedding=embedding, embedder=semantic_search.embedder.name)
        except BackendError as exc:  # the embedder is down: store for exact lookups only
            self._health.failed(exc)
        if not self._health.breaker.allow():
            return
        try:
            with self._health.deadline(self.write_timeout, "write"):
                await self._store.put(entry, notice(self._origin, ns, key=keys.exact_key))
            await self._tiers.drop(ns, key=keys.exact_key)
        except BackendError as exc:
            self._health.failed(exc)
            return
        self._health.ok()

    async def load(
        self,
        items: Iterable[WarmItem],
        *,
        batch_size: int = 2000,
        embed: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Bulk-load request/response pairs (COPY, in batches); returns the rows written.

        Every item is checked as by `set`; a bad one raises before its batch is written.
        With `embed`, the cache's embedder embeds each batch (one call per batch).

        Raises:
            BackendError: always (a bulk load does not fail open).
        """
        if embed and self._semantic is None:
            raise InvalidInputError("embedding needs a cache opened with an embedder")
        written = 0
        for batch in batches(items, batch_size):
            built = [
                self.rules.entry(
                    item.request,
                    item.response,
                    ttl=item.ttl,
                    tags=item.tags,
                    namespace=item.namespace,
                    upstream_ms=None,
                )
                for item in batch
            ]
            if self._semantic is not None and embed:
                entries = await self._semantic.with_embeddings(built)
            else:
                entries = [entry for _, entry in built]
            namespaces = sorted({entry.namespace for entry in entries})
            written += await self._store.bulk_put(
                entries, [notice(self._origin, ns) for ns in namespaces]
            )
            for ns in namespaces:  # rows were replaced: no copy is known good
                await self._tiers.drop(ns)
            if progress is not None:
                progress(written)
        return written

    async def warm(
        self,
        requests: Iterable[Mapping[str, Any]],
        call: Callable[[dict[str, Any]], Awaitable[object]],
        *,
        concurrency: int = 8,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
    ) -> WarmReport:
        """Answer `requests` through the LLM ahead of time, `concurrency` at a time.

        `call(request)` returns a response (e.g. `openai_client.chat.completions.create(
        **request)`); requests already cached are skipped; failures are counted, not raised.
        """
        return await precompute(
            self, requests, call, concurrency=concurrency, ttl=ttl, tags=tags, namespace=namespace
        )

    async def invalidate(
        self,
        *,
        key: Mapping[str, Any] | bytes | None = None,
        tag: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
    ) -> int:
        """Delete entries; returns how many.

        Name at most one of `key` (a request, or its 32-byte `exact_key`), `tag` or
        `model`, within the cache's namespace or `namespace`. With none of them, the whole
        `namespace` is cleared, which must then be named explicitly.

        Raises:
            InvalidInputError: more than one filter, or nothing named.
            BackendError: the database failed (invalidation never fails open).
        """
        filters = [f for f in (key, tag, model) if f is not None]
        if len(filters) > 1:
            raise InvalidInputError("invalidate takes one of key, tag or model at a time")
        if not filters and namespace is None:
            raise InvalidInputError(
                "name what to invalidate: key=, tag=, model=, or namespace= for a whole namespace"
            )
        ns = self.rules.namespace_of(namespace)
        cache_key = None
        if isinstance(key, bytes):
            if len(key) != 32:
                raise InvalidInputError("a key given as bytes must be a 32-byte sha256 digest")
            cache_key = key
        elif key is not None:
            cache_key = self.rules.exact_key(key)
        change = notice(self._origin, ns, key=cache_key, tag=tag, model=model)
        try:
            return await self._store.delete(ns, change, cache_key=cache_key, tag=tag, model=model)
        finally:  # also when the delete failed: no copy is known good
            await self._tiers.drop(ns, key=cache_key, tag=tag, model=model)

    async def report_wrong_hit(self, hit: CacheHit) -> bool:
        """Remove the entry that answered `hit`, so a known-bad answer is not served again.

        Use it when a semantic hit answered a question it should not have. Returns whether
        the entry was still there.
        """
        change = notice(self._origin, hit.namespace, key=hit.key)
        try:
            deleted = await self._store.delete(hit.namespace, change, cache_key=hit.key)
        finally:
            await self._tiers.drop(hit.namespace, key=hit.key)
        return deleted > 0

    @property
    def embedding_dim(self) -> int:
        """Dimension of the table's embedding column (fixed by the migration)."""
        return self._store.embedding_dim

    async def reindex(
        self,
        *,
        if_needed: bool = False,
        lists: int | None = None,
        maintenance_work_mem: str = "1GB",
    ) -> ReindexReport:
        """Rebuild the ivfflat index concurrently; see `llm_pgcache.reindex.reindex`."""
        report = await reindex(
            self._store, if_needed=if_needed, lists=lists, maintenance_work_mem=maintenance_work_mem
        )
        if self._semantic is not None:
            self._semantic.forget_index_state()
        return report

    async def purge(
        self,
        *,
        batch_size: int = 5000,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PurgeReport:
        """Delete expired rows, then evict the least recently used above a size cap.

        See `llm_pgcache.purge.purge`; the same job as `llm-pgcache purge`.
        """
        await self._write_behind.flush()  # eviction orders by the latest hits
        return await purge(
            self._store,
            batch_size=batch_size,
            max_rows=max_rows,
            max_bytes=max_bytes,
            dry_run=dry_run,
            progress=progress,
        )

    def start_purging(
        self,
        every: float = 300.0,
        *,
        batch_size: int = 5000,
        max_rows: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Run the purge in this process every `every` seconds until `close()`.

        An alternative to `llm-pgcache purge` from cron; runs in other processes or cron
        at the same time are harmless (one waits its turn by skipping).
        """
        if self._purging is not None and not self._purging.done():
            raise InvalidInputError("this cache is already purging")

        def report(done: PurgeReport) -> None:
            logger.info("llm-pgcache purge: %s", done.summary())

        self._purging = asyncio.get_running_loop().create_task(
            purge_forever(
                self._store,
                every=every,
                on_report=report,
                batch_size=batch_size,
                max_rows=max_rows,
                max_bytes=max_bytes,
            )
        )

    @property
    def counters(self) -> Counters:
        """Hits per tier, misses, and what the hits saved (tokens, money, time) per model,
        in this process since `connect`."""
        return self._metrics.snapshot()

    async def stats(self, *, namespace: str | None = None, all_namespaces: bool = False) -> Stats:
        """This process's counters and the table's counts (of the namespace, or all)."""
        ns = None if all_namespaces else (namespace or self.namespace)
        return Stats(counters=self.counters, table=await self._store.table_stats(ns))

    def _semantic_for(self, semantic: bool | None) -> SemanticSearch | None:
        """The semantic search to use for a call, given its `semantic` argument."""
        if semantic is None:
            return self._semantic if self.semantic else None
        if semantic and self._semantic is None:
            raise InvalidInputError("semantic=True needs a cache opened with an embedder")
        return self._semantic if semantic else None
