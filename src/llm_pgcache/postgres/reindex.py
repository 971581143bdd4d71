"""Index maintenance: rebuild the ANN index, ivfflat (the default) or HNSW.

An ivfflat index clusters the vectors present when it is built; one built on an empty
table (as the migration builds it) clusters nothing. Until the first rebuild, semantic
lookups scan exactly. Its `lists` are sized from the row count; run `llm-pgcache reindex
--if-needed` from cron: it rebuilds when the number of embedded rows has doubled or
halved since the last build.

An HNSW index (`--method hnsw`) is a graph that takes new rows as they come: it needs
no rebuild as the table grows, and `--if-needed` leaves it alone. It costs more to build
and more space, and searches faster at a given recall on large tables
(docs/benchmarks.md says when to pick which).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, replace
from typing import Literal

import asyncpg

from llm_pgcache.errors import InvalidInputError
from llm_pgcache.postgres import index_sql
from llm_pgcache.postgres.ann import IndexBuild, IndexSpec
from llm_pgcache.postgres.index_sql import IVFFLAT_MAX_LISTS, METHODS, create_new_index
from llm_pgcache.postgres.leases import leased
from llm_pgcache.postgres.partitions import embedded_per_partition, partitions
from llm_pgcache.postgres.store import PostgresStore

BUILD_TIMEOUT = 24 * 3600.0  # seconds an index build may take
GROWTH_FACTOR = 2.0  # --if-needed rebuilds once the rows grew or shrank by this factor
HNSW_M = 16  # pgvector's defaults
HNSW_EF_CONSTRUCTION = 64


def lists_for(rows: int) -> int:
    """pgvector's guidance: rows / 1000 up to 1M rows, sqrt(rows) above; at least 1."""
    lists = rows // 1000 if rows <= 1_000_000 else math.isqrt(rows)
    return max(1, min(lists, IVFFLAT_MAX_LISTS))


MAX_DEFAULT_PROBES = 10  # past 100 lists, more probes cost more than clustered data needs


def probes_for(lists: int) -> int:
    """Lists a lookup searches first: about sqrt(lists) (pgvector's guidance), at most
    `MAX_DEFAULT_PROBES`, and always fewer than all of them once there are four or more:
    probes >= lists makes the planner scan the table instead (10k rows, 10 lists, 10
    probes: 54 ms a lookup). At 1M x 1536, probes 10 cost 39 ms, 31 would cost ~3x that
    (docs/benchmarks.md)."""
    return max(1, min(math.isqrt(lists), MAX_DEFAULT_PROBES))


def rebuild_reason(rows: int, last: IndexBuild | None, method: str) -> str | None:
    """Why the index needs a rebuild now (as a `method` index), or None when it does not."""
    if rows == 0:
        return None  # nothing to cluster yet: lookups keep scanning exactly
    if last is None:
        return "never built on data"
    if last.spec.method != method:
        return f"the index is {last.spec.method}, {method} asked for"
    if method == "hnsw":
        return None  # a graph takes new rows as they come
    grown = last.rows == 0 or rows >= last.rows * GROWTH_FACTOR
    if grown or rows * GROWTH_FACTOR <= last.rows:
        return f"rows {'grew' if grown else 'shrank'} from {last.rows} to {rows}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReindexReport:
    """What `reindex` did."""

    action: Literal["rebuilt", "skipped", "locked"]
    rows: int
    spec: IndexSpec | None  # the index built (or that would have been)
    previous: IndexBuild | None
    seconds: float
    reason: str

    @property
    def lists(self) -> int | None:
        """The ivfflat lists built; None for HNSW or when nothing was built."""
        return self.spec.lists if self.spec is not None else None

    def summary(self) -> str:
        before = (
            f"{self.previous.spec.describe()} ({self.previous.rows} rows)"
            if self.previous
            else "never built"
        )
        if self.action == "rebuilt" and self.spec is not None:
            return (
                f"rebuilt the index: {self.rows} rows, {self.spec.describe()} "
                f"(was {before}) in {self.seconds:.1f} s; {self.reason}"
            )
        if self.action == "locked":
            return "another reindex is running; nothing done"
        return f"no rebuild needed: {self.rows} rows, index {before}; {self.reason}"


async def reindex(
    store: PostgresStore,
    *,
    if_needed: bool = False,
    method: str | None = None,
    lists: int | None = None,
    m: int | None = None,
    ef_construction: int | None = None,
    maintenance_work_mem: str = "1GB",
) -> ReindexReport:
    """Rebuild the ANN index concurrently (lookups go on) and record the build.

    Args:
        store: the cache's store.
        if_needed: only rebuild when `rebuild_reason` says so.
        method: "ivfflat" or "hnsw" (default: the method of the last build, else
            ivfflat). Another method than the index's replaces it.
        lists: ivfflat lists (default: `lists_for(rows)`).
        m, ef_construction: HNSW links per node and build-time candidates (default 16
            and 64, pgvector's; ef_construction at least 2 m).
        maintenance_work_mem: memory for the build (PostgreSQL setting); an HNSW build
            much larger than it slows down a lot (pgvector warns).

    Raises:
        InvalidInputError: an unknown method, or options of the other method.
    """
    started = time.monotonic()
    rows = await store.count_embedded()
    previous = await store.last_index_build()
    method = method or (previous.spec.method if previous else "ivfflat")
    spec = index_spec(method, rows, lists=lists, m=m, ef_construction=ef_construction)
    reason = rebuild_reason(rows, previous, method)
    if if_needed and reason is None:
        return ReindexReport(
            action="skipped",
            rows=rows,
            spec=None,
            previous=previous,
            seconds=time.monotonic() - started,
            reason="no embedded rows yet"
            if rows == 0
            else "an HNSW index takes new rows as they come"
            if method == "hnsw"
            else "row count within a factor 2 of the last build",
        )
    builds = await _builds(store, spec, given_lists=lists is not None)
    built = await rebuild_index(store, builds, rows=rows, maintenance_work_mem=maintenance_work_mem)
    return ReindexReport(
        action="rebuilt" if built else "locked",
        rows=rows,
        spec=spec,
        previous=previous,
        seconds=time.monotonic() - started,
        reason=reason or "requested",
    )


async def _builds(
    store: PostgresStore, spec: IndexSpec, *, given_lists: bool
) -> list[tuple[str, IndexSpec]]:
    """The index to build on each table: llm_cache's own, or one per partition when it
    is partitioned, ivfflat lists sized from each partition's rows (unless given)."""
    tables = await partitions(store.primary)
    if not tables:
        return [(index_sql.TABLE, spec)]
    if spec.method != "ivfflat" or given_lists:
        return [(table, spec) for table in tables]
    rows = await embedded_per_partition(store.primary)
    return [(table, replace(spec, lists=lists_for(rows.get(table, 0)))) for table in tables]


async def rebuild_index(
    store: PostgresStore,
    builds: list[tuple[str, IndexSpec]],
    *,
    rows: int,
    maintenance_work_mem: str,
) -> bool:
    """Build each new ANN index (a table, its spec) concurrently and swap it in for the
    one there (of either method); record the build (lists: the largest, from which
    lookups choose their probes); False if another rebuild runs.

    Lookups go on meanwhile: each new index is built CONCURRENTLY beside the old one, the
    old one is dropped CONCURRENTLY and the new one renamed in its place. A build may take
    as long as it needs (`BUILD_TIMEOUT`).
    """
    db = store.primary
    pooled = store.pooler == "transaction"
    async with leased(db, "reindex") as lease:
        if lease is None:
            return False
        # CREATE INDEX CONCURRENTLY runs alone, never in a transaction; behind a
        # transaction-mode pooler the session setting would outlive this use of the
        # connection, so the build gets the server's maintenance_work_mem there.
        async with db.connection() as connection:
            if not pooled:
                await connection.execute(index_sql.SET_MAINTENANCE_WORK_MEM, maintenance_work_mem)
            try:
                for table, spec in builds:
                    await _swap_in(connection, table, spec, store.embedding_type)
                await connection.execute(index_sql.ANALYZE_TABLE, timeout=BUILD_TIMEOUT)
            finally:
                if not pooled:
                    await connection.execute(index_sql.RESET_MAINTENANCE_WORK_MEM)
        method = builds[0][1].method
        lists = [spec.lists for _, spec in builds if spec.lists is not None]
        await db.execute(
            index_sql.RECORD_INDEX_BUILD,
            index_sql.INDEX_NAMES[method],
            method,
            max(lists) if lists else None,
            builds[0][1].m,
            builds[0][1].ef_construction,
            rows,
        )
    return True


async def _swap_in(
    connection: asyncpg.Connection, table: str, spec: IndexSpec, embedding_type: str
) -> None:
    create = index_sql.create_new_index(
        spec.method,
        embedding_type,
        table=table,
        lists=spec.lists,
        m=spec.m,
        ef_construction=spec.ef_construction,
    )
    for drop in index_sql.drop_new_indexes(table):  # left by a killed run
        await connection.execute(drop, timeout=BUILD_TIMEOUT)
    await connection.execute(create, timeout=BUILD_TIMEOUT)
    for method in index_sql.METHODS:  # the old one, either method
        await connection.execute(index_sql.drop_index(table, method), timeout=BUILD_TIMEOUT)
    await connection.execute(index_sql.rename_new_index(table, spec.method))


def index_spec(
    method: str,
    rows: int,
    *,
    lists: int | None = None,
    m: int | None = None,
    ef_construction: int | None = None,
) -> IndexSpec:
    """The index to build for `rows` rows, checked.

    Raises:
        InvalidInputError: an unknown method, options of the other method, or values
            out of pgvector's ranges.
    """
    if method not in METHODS:
        raise InvalidInputError(f"index method must be one of {', '.join(METHODS)}, got {method!r}")
    if method == "ivfflat":
        if m is not None or ef_construction is not None:
            raise InvalidInputError("m and ef_construction are HNSW options, not ivfflat's")
        spec = IndexSpec(method="ivfflat", lists=lists_for(rows) if lists is None else lists)
    else:
        if lists is not None:
            raise InvalidInputError("lists is an ivfflat option, not HNSW's")
        m = HNSW_M if m is None else m
        ef = max(HNSW_EF_CONSTRUCTION, 2 * m) if ef_construction is None else ef_construction
        if isinstance(m, int) and isinstance(ef, int) and ef < 2 * m:
            raise InvalidInputError(f"ef_construction ({ef}) must be at least 2 m ({2 * m})")
        spec = IndexSpec(method="hnsw", m=m, ef_construction=ef)
    try:  # the DDL's own checks of every value
        create_new_index(
            spec.method, "vector", lists=spec.lists, m=spec.m, ef_construction=spec.ef_construction
        )
    except ValueError as exc:
        raise InvalidInputError(str(exc)) from None
    return spec
