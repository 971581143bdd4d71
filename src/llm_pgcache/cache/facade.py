"""The public `Cache`: opening, closing, and the use cases of `reads`, `writes` and
`maintenance` over the storage tiers."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, Unpack

import asyncpg

from llm_pgcache.cache.breaker import CircuitBreaker
from llm_pgcache.cache.health import BackendHealth
from llm_pgcache.cache.maintenance import Maintenance
from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.cache.opening import Connecting, open_store
from llm_pgcache.cache.options import CacheOptions
from llm_pgcache.cache.reads import Reads
from llm_pgcache.cache.rules import DEFAULT_MAX_ENTRY_BYTES, EntryRules
from llm_pgcache.cache.warming import WarmReport, precompute
from llm_pgcache.cache.write_behind import WriteBehind
from llm_pgcache.cache.writes import Writes
from llm_pgcache.config import Settings
from llm_pgcache.errors import EmbeddingDimensionError
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.pricing import DEFAULT_PRICES, Price
from llm_pgcache.semantic.embedders import Embedder
from llm_pgcache.semantic.search import DEFAULT_SIMILARITY_THRESHOLD, SearchOptions, SemanticSearch
from llm_pgcache.tiers.memory import MemoryTier
from llm_pgcache.tiers.redis import RedisTier
from llm_pgcache.tiers.upper import UpperTiers
from llm_pgcache.validation import TTL, check_threshold, ttl_seconds

DEFAULT_LOOKUP_TIMEOUT = 0.05  # seconds a lookup may wait for PostgreSQL before it is a miss
DEFAULT_WRITE_TIMEOUT = 1.0


class Cache(Reads, Writes, Maintenance):
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

    @property
    def embedding_dim(self) -> int:
        """Dimension of the table's embedding column (fixed by the migration)."""
        return self._store.embedding_dim
