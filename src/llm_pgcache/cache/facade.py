"""The public `Cache`: opening, closing, and the use cases of `reads`, `writes`,
`functions` (the `cached` decorator, over reads and writes) and `maintenance` over the
storage tiers."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Literal, Self, Unpack

import asyncpg

from llm_pgcache.cache.functions import Functions
from llm_pgcache.cache.maintenance import Maintenance
from llm_pgcache.cache.opening import Opening, open_store
from llm_pgcache.cache.options import CacheOptions
from llm_pgcache.cache.warming import WarmReport, precompute
from llm_pgcache.config import Settings
from llm_pgcache.errors import ConfigurationError
from llm_pgcache.postgres.pool import DEFAULT_STATEMENT_TIMEOUT
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.validation import TTL


class Cache(Functions, Maintenance):
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

    @classmethod
    def connect(
        cls,
        dsn: str | None = None,
        *,
        pool: asyncpg.Pool | None = None,
        min_size: int = 10,
        max_size: int = 10,
        embedded_dir: str | None = None,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        listen_dsn: str | None = None,
        pooler: Literal["session", "transaction"] | None = None,
        read_dsn: str | None = None,
        **options: Unpack[CacheOptions],
    ) -> Opening[Self]:
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
            statement_timeout: seconds any statement may take, and any wait for a pooled
                connection, where no shorter budget applies (lookups and `set` have
                theirs): invalidations, loads, purge batches, stats, hit counts. A
                statement cut short is cancelled in the background; its caller does not
                wait for the server to confirm.
            listen_dsn: where the memory tier's LISTEN connection goes (a direct
                connection past a transaction-mode pooler); default: a pooled connection.
            pooler: what is between the cache and PostgreSQL: "transaction" for a
                transaction-mode pooler (PgBouncer's `pool_mode = transaction`): no
                named prepared statements, each use of a connection one transaction, no
                session state; the memory tier then needs `listen_dsn`. "session" (or
                None: no pooler) needs nothing. Default: the DSN's `?pooler=`, else
                LLM_PGCACHE_POOLER.
            read_dsn: a streaming replica of `dsn`'s server: lookups read it, every
                write, LISTEN, purge and reindex go to `dsn`. A lookup in a namespace
                this process wrote to, or heard an invalidation of, reads the primary
                until the replica has replayed that far (read-your-writes; an
                invalidation is never undone by lag). Hits read from the replica enter
                the memory and Redis tiers only in a process that listens (one with a
                memory tier), which hears of every invalidation.
            **options: how the cache behaves; see `CacheOptions` (namespace, default_ttl,
                embedder, memory, redis, lookup_timeout, ...).

        Raises:
            BackendError: the server cannot be reached.
            SchemaError: the database is not migrated (a DSN was given).
            ConfigurationError: a bad DSN, or no DSN and the `embedded` extra is missing.
            EmbeddingDimensionError: the embedder's dimension differs from the table's.
        """
        if pool is not None and read_dsn is not None:
            raise ConfigurationError("read_dsn needs a dsn: it does not go with pool=")
        if pool is not None:
            opening = PostgresStore.from_pool(
                pool, statement_timeout=statement_timeout, listen_dsn=listen_dsn, pooler=pooler
            )
        else:
            opening = open_store(
                dsn or Settings.from_env().dsn,
                min_size=min_size,
                max_size=max_size,
                embedded_dir=embedded_dir,
                statement_timeout=statement_timeout,
                listen_dsn=listen_dsn,
                pooler=pooler,
                read_dsn=read_dsn,
            )
        return Opening(cls._open(opening, options))

    @classmethod
    async def _open(cls, opening: Awaitable[PostgresStore], options: CacheOptions) -> Self:
        store = await opening
        try:
            cache = cls(store, **options)
            await cache._tiers.listen()
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

    async def close(self, *, grace: float = 5.0) -> None:
        """Stop background work, write pending hit counts, and close the connections the
        cache opened (not a pool passed in).

        Returns within `grace` seconds (plus a few milliseconds), whatever the network
        does: hit counts not written within half of it are dropped, and connections still
        busy at the end are terminated.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        if self._purging is not None:
            self._purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._purging
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace / 2):
                await self._write_behind.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout_at(deadline):
                await self._tiers.close()
        await self._verdicts.close()
        if self._thresholds is not None:
            await self._thresholds.close()
        await self._health.close()
        if self._semantic is not None:
            await self._semantic.close()
        await self._store.close(grace=max(0.0, deadline - loop.time()))

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
        tag_list = tuple(tags)

        async def cached(request: Mapping[str, Any]) -> bool:
            return await self.get(request, namespace=namespace, semantic=False) is not None

        async def store(request: Mapping[str, Any], response: object) -> None:
            await self.set(request, response, ttl=ttl, tags=tag_list, namespace=namespace)

        return await precompute(requests, call, cached=cached, store=store, concurrency=concurrency)

    @property
    def embedding_dim(self) -> int:
        """Dimension of the table's embedding column (fixed by the migration)."""
        return self._store.embedding_dim
