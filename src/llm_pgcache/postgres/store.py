"""The PostgreSQL repository: the cache's statements, over an asyncpg pool.

With `driver` (connection setup, driver errors translated in one place), `lookups`
(lookups in rounds shared by overlapping lookups) and `sessions` (connections
held for a purge or for LISTEN), all in this folder, every asyncpg call of the
package lives here.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import Any, Self

import asyncpg
from pgvector import Vector

from llm_pgcache.config import asyncpg_dsn, pooler_of
from llm_pgcache.entries import StoredEntry
from llm_pgcache.errors import BackendError
from llm_pgcache.invalidation import Change
from llm_pgcache.postgres import index_sql, judgment_sql, nearest_sql, sql
from llm_pgcache.postgres.ann import IndexBuild, IndexSpec, NearestQuery, SearchSettings
from llm_pgcache.postgres.driver import (
    Schema,
    check_schema,
)
from llm_pgcache.postgres.judgments import Judgments
from llm_pgcache.postgres.leases import leased
from llm_pgcache.postgres.lookups import ExactLookups
from llm_pgcache.postgres.pool import DEFAULT_STATEMENT_TIMEOUT, Connections, open_pools
from llm_pgcache.postgres.puts import Puts
from llm_pgcache.postgres.replica import ReplicaReads
from llm_pgcache.postgres.sessions import Listener, PurgeSession
from llm_pgcache.postgres.stats import TableStats, table_stats

DELETE_CHUNK = 5000  # rows per statement of an invalidation of many rows


class PostgresStore:
    """Cache rows in the `llm_cache` table, over an asyncpg pool (`pool.Connections`: a
    deadline on every wait)."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        owns_pool: bool,
        schema: Schema,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        listen_dsn: str | None = None,
        pooler: str | None = None,
        read_pool: asyncpg.Pool | None = None,
    ) -> None:
        self.pooler = pooler  # "transaction": behind a transaction-mode pooler
        self._db = Connections(pool, statement_timeout=statement_timeout, keep_idle=owns_pool)
        self.primary = self._db  # for maintenance (`reindex`, `partitions`)
        self._owns_pool = owns_pool
        self.embedding_dim = schema.embedding_dim
        self.embedding_type = schema.embedding_type  # "vector" or "halfvec"
        self.listen_dsn = asyncpg_dsn(listen_dsn) if listen_dsn else None  # None: pooled
        self._exact = ExactLookups(self._db)
        self._puts = Puts(self._db)
        self.judgments = Judgments(self._db, wrote=self._wrote)
        # Lookups on a read replica (`read_dsn`), routed by `replica` (None: no replica).
        self.replica: ReplicaReads | None = None
        self._replica_exact: ExactLookups | None = None
        if read_pool is not None:
            self.replica = ReplicaReads(
                self._db,
                Connections(read_pool, statement_timeout=statement_timeout, keep_idle=owns_pool),
            )
            self._replica_exact = ExactLookups(self.replica.db)

    def _wrote(self, namespace: str) -> None:
        if self.replica is not None:
            self.replica.wrote(namespace)

    def _reads(self, namespace: str) -> Connections:
        """Where a lookup in `namespace` reads: the replica unless it is behind."""
        if self.replica is not None and self.replica.readable(namespace):
            return self.replica.db
        return self._db

    @classmethod
    async def open(
        cls,
        dsn: str,
        *,
        min_size: int = 10,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        listen_dsn: str | None = None,
        pooler: str | None = None,
        read_dsn: str | None = None,
    ) -> Self:
        """Check the schema, then open a pool on `dsn` (and one on the replica of
        `read_dsn`, for lookups); behind a transaction-mode pooler
        (`pooler`, else the DSN's `?pooler=`, else LLM_PGCACHE_POOLER), without named
        prepared statements (asyncpg then parses each statement again in the message
        sequence that runs it, which a pooler keeps on one server connection).

        Raises:
            BackendError: the server cannot be reached.
            SchemaError: the schema is missing or at an unknown revision.
        """
        pool, read_pool, schema, pooler = await open_pools(
            dsn,
            min_size=min_size,
            max_size=max_size,
            connect_timeout=connect_timeout,
            statement_timeout=statement_timeout,
            pooler=pooler,
            read_dsn=read_dsn,
        )
        return cls(
            pool,
            owns_pool=True,
            schema=schema,
            statement_timeout=statement_timeout,
            listen_dsn=listen_dsn,
            pooler=pooler,
            read_pool=read_pool,
        )

    @classmethod
    async def from_pool(
        cls,
        pool: asyncpg.Pool,
        *,
        statement_timeout: float = DEFAULT_STATEMENT_TIMEOUT,
        listen_dsn: str | None = None,
        pooler: str | None = None,
    ) -> Self:
        """Use a pool the caller owns (created with `init=init_connection`; behind a
        transaction-mode pooler, with `statement_cache_size=0`, and say
        `pooler="transaction"`); not closed by us."""
        pooler = pooler_of(None, pooler)
        db = Connections(pool, statement_timeout=statement_timeout)
        async with db.connection() as connection:
            schema = await check_schema(connection)
        return cls(
            pool,
            owns_pool=False,
            schema=schema,
            statement_timeout=statement_timeout,
            listen_dsn=listen_dsn,
            pooler=pooler,
        )

    async def close(self, grace: float = 2.0) -> None:
        """Stop the lookups in flight, then close our pools; connections still busy after
        `grace` seconds are terminated."""
        await self._exact.close()
        await self._puts.close()
        if self.replica is not None and self._replica_exact is not None:
            await self._replica_exact.close()
            await self.replica.close()
            await self.replica.db.close(owned=True, grace=grace)
        await self._db.close(owned=self._owns_pool, grace=grace)

    async def get(
        self,
        namespace: str,
        cache_key: bytes,
        stale_grace: float = 0.0,
        budget: float | None = None,
    ) -> asyncpg.Record | None:
        """The live row of `cache_key` in `namespace` (or one expired less than
        `stale_grace` seconds ago, with `stale` true), or None. Concurrent lookups share
        queries (`postgres.lookups`); `budget` (seconds) bounds such a shared query.
        Reads the replica when there is one and it is not behind (`replica`)."""
        lookups = self._exact
        if self._replica_exact is not None and self._reads(namespace) is not self._db:
            lookups = self._replica_exact
        return await lookups.get(namespace, cache_key, stale_grace, budget)

    async def put(self, entry: StoredEntry, notice: str, budget: float | None = None) -> None:
        """Insert or replace the row of (namespace, cache_key); `notice` goes to listeners.
        Stores that overlap share a statement (`postgres.puts`); `budget` (seconds)
        bounds it."""
        await self._puts.put(entry, notice, budget)
        self._wrote(entry.namespace)

    async def nearest_round(
        self, queries: list[NearestQuery], budget: float | None = None
    ) -> list[asyncpg.Record | None]:
        """For each query, the nearest live row of its scope within its `max_distance`
        (cosine; the record's `distance`), or None: one statement per scope (namespace,
        scope key, embedder) and settings among the queries, on one connection; one of
        its own for a query with an `exact_key` (the exact row first: `exact` true).
        `budget` (seconds) bounds each wait and statement."""
        # (statement, arguments, the queries' slots in the order of its vectors)
        calls: list[tuple[str, tuple[Any, ...], list[int]]] = []
        groups: dict[tuple[str, bytes, str, SearchSettings], list[int]] = {}
        for slot, q in enumerate(queries):
            if q.exact_key is not None:
                arguments = _nearest_arguments(
                    q.namespace, q.scope_key, q.embedder, q.settings, [q]
                )
                exact = (q.namespace, q.exact_key, q.stale_grace)
                calls.append((nearest_sql.EXACT_OR_NEAREST, (*exact, *arguments[1:]), [slot]))
            else:
                key = (q.namespace, q.scope_key, q.embedder, q.settings)
                groups.setdefault(key, []).append(slot)
        for (namespace, scope_key, embedder, settings), slots in groups.items():
            arguments = _nearest_arguments(
                namespace, scope_key, embedder, settings, [queries[slot] for slot in slots]
            )
            calls.append((nearest_sql.SEMANTIC_NEAREST_ROUND, arguments, slots))
        reads = self._db
        if all(self._reads(q.namespace) is not self._db for q in queries):
            reads = self._reads(queries[0].namespace)
        found: list[asyncpg.Record | None] = [None] * len(queries)
        if len(calls) == 1:  # a statement on a connection of its own (`Connections.fetch`)
            statement, arguments, slots = calls[0]
            rows = await reads.fetch(statement, *arguments, budget=budget)
            for row in rows:
                found[slots[row["slot"] - 1]] = row
            return found
        timeout = budget or reads.statement_timeout
        async with reads.connection(budget) as connection:
            for statement, arguments, slots in calls:
                for row in await connection.fetch(statement, *arguments, timeout=timeout):
                    found[slots[row["slot"] - 1]] = row
        return found

    async def last_index_build(self) -> IndexBuild | None:
        """The last recorded rebuild of the ANN index; None if it was never rebuilt."""
        record = await self._db.fetchrow(
            index_sql.LAST_INDEX_BUILD, list(index_sql.INDEX_NAMES.values())
        )
        if record is None:
            return None
        return IndexBuild(
            spec=IndexSpec(
                method=record["method"],
                lists=record["lists"],
                m=record["m"],
                ef_construction=record["ef_construction"],
            ),
            rows=record["rows"],
            built_at=record["built_at"],
        )

    async def count_embedded(self) -> int:
        """Rows that have an embedding (what the ivfflat index holds)."""
        count: int = await self._db.fetchval(index_sql.COUNT_EMBEDDED)
        return count

    @contextlib.asynccontextmanager
    async def purge_session(self) -> AsyncIterator[PurgeSession | None]:
        """A `PurgeSession` holding the purge lease; None while another purge holds it."""
        async with leased(self._db, "purge") as lease:
            yield None if lease is None else PurgeSession(self._db, lease)

    async def record_hits(self, hits: Sequence[tuple[str, bytes, int, datetime]]) -> None:
        """Add hit counts and last-hit times to their rows, in one statement."""
        await self._execute_columns(sql.RECORD_HITS, hits)

    async def add_counters(self, rows: Sequence[tuple[str, str, int, float]]) -> None:
        """Add (namespace, tier, lookups, milliseconds) to the shared lookup counters."""
        await self._execute_columns(sql.ADD_COUNTERS, rows)

    async def _execute_columns(self, query: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Run `query` once, its parameters the columns of `rows` (for its unnest)."""
        if rows:
            await self._db.execute(query, *(list(column) for column in zip(*rows, strict=True)))

    async def delete(self, change: Change, notice: str) -> int:
        """Delete the rows `change` names; returns the count. `notice` is sent to the
        listeners of other processes as each statement commits. Many rows go in
        statements of at most `DELETE_CHUNK` rows, each within the statement timeout; then
        the namespace's aliases whose row is gone go too."""
        try:
            deleted = await self._delete(change, notice)
            await self._db.execute(judgment_sql.DROP_ORPHAN_ALIASES, change.namespace)
        finally:  # also when it failed: some statements may have committed
            self._wrote(change.namespace)
        return deleted

    async def _delete(self, change: Change, notice: str) -> int:
        namespace = change.namespace
        if change.key is not None:
            one: int = await self._db.fetchval(sql.DELETE_BY_KEY, namespace, change.key, notice)
            return one
        query: str
        args: tuple[Any, ...]
        if change.tag is not None:
            query, args = sql.DELETE_BY_TAG, (namespace, change.tag, notice, DELETE_CHUNK)
        elif change.model is not None:
            query, args = sql.DELETE_BY_MODEL, (namespace, change.model, notice, DELETE_CHUNK)
        else:
            query, args = sql.DELETE_NAMESPACE, (namespace, notice, DELETE_CHUNK)
        deleted = 0
        while True:
            chunk: int = await self._db.fetchval(query, *args)
            deleted += chunk
            if chunk < DELETE_CHUNK:
                return deleted

    async def bulk_put(self, entries: Sequence[StoredEntry], notices: Sequence[str]) -> int:
        """Upsert many rows in one transaction (`Puts.bulk`); returns the rows written.
        `notices` go to the listeners of other processes on commit."""
        written = await self._puts.bulk(entries, notices)
        for namespace in {entry.namespace for entry in entries}:
            self._wrote(namespace)
        return written

    async def notify(self, notice: str) -> None:
        """Send `notice` to the listeners of other processes, on its own."""
        await self._db.execute(sql.NOTIFY, notice)

    async def listen(
        self, on_notice: Callable[[str], None], on_lost: Callable[[], None], *, heartbeat: float
    ) -> Listener:
        """Hold a connection that hands every invalidation notice to `on_notice`, and proves
        every `heartbeat` seconds that notices still arrive (`sessions.Listener`)."""

        def heard(payload: str) -> None:
            if self.replica is not None:  # lookups read the primary until the replica has it
                self.replica.heard()
            on_notice(payload)

        def lost() -> None:  # lost, or back: anything may have changed meanwhile
            if self.replica is not None:
                self.replica.heard()
            on_lost()

        listener = Listener(self._db, heard, lost, heartbeat=heartbeat, listen_dsn=self.listen_dsn)
        await listener.start()
        return listener

    async def check(self, budget: float) -> None:
        """Prove PostgreSQL answers within `budget` seconds with a schema this code runs on.

        Raises:
            BackendError: it does not answer in time.
            SchemaError: the schema changed under us (see `check_schema`).
        """
        try:
            async with asyncio.timeout(budget), self._db.connection(budget) as connection:
                await check_schema(connection)
        except TimeoutError:
            raise BackendError(f"PostgreSQL did not answer within {budget} s") from None

    async def table_stats(self, namespace: str | None = None, *, top: int = 5) -> TableStats:
        """Row counts, sizes and the most cached models (of one namespace, or all)."""
        return await table_stats(self._db, namespace, top=top)


def _nearest_arguments(
    namespace: str,
    scope_key: bytes,
    embedder: str,
    settings: SearchSettings,
    queries: list[NearestQuery],
) -> tuple[Any, ...]:
    """llm_cache_nearest's arguments: the scope, the queries' vectors and distances, the
    search settings."""
    return (
        namespace,
        scope_key,
        embedder,
        [Vector(q.vector) for q in queries],
        [q.max_distance for q in queries],
        settings.candidates,
        settings.probes,
        settings.max_probes,
        settings.ef_search,
        settings.approximate,
        settings.scan_rows,
    )
