"""Index maintenance: rebuild the ivfflat index with `lists` sized from the row count.

An ivfflat index clusters the vectors present when it is built; one built on an empty
table (as the migration builds it) clusters nothing. Until the first rebuild, semantic
lookups scan exactly. Run `llm-pgcache reindex --if-needed` from cron: it rebuilds when
the number of embedded rows has doubled or halved since the last build.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Literal

from llm_pgcache.postgres.index_sql import IVFFLAT_MAX_LISTS
from llm_pgcache.postgres.store import IndexBuild, PostgresStore

GROWTH_FACTOR = 2.0  # --if-needed rebuilds once the rows grew or shrank by this factor


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


def rebuild_reason(rows: int, last: IndexBuild | None) -> str | None:
    """Why the index needs a rebuild now, or None when it does not."""
    if rows == 0:
        return None  # nothing to cluster yet: lookups keep scanning exactly
    if last is None:
        return "never built on data"
    if last.rows == 0 or rows >= last.rows * GROWTH_FACTOR:
        return f"rows grew from {last.rows} to {rows}"
    if rows * GROWTH_FACTOR <= last.rows:
        return f"rows shrank from {last.rows} to {rows}"
    return None


@dataclass(frozen=True, slots=True, kw_only=True)
class ReindexReport:
    """What `reindex` did."""

    action: Literal["rebuilt", "skipped", "locked"]
    rows: int
    lists: int | None
    previous: IndexBuild | None
    seconds: float
    reason: str

    def summary(self) -> str:
        before = (
            f"lists {self.previous.lists} ({self.previous.rows} rows)"
            if self.previous
            else "never built"
        )
        if self.action == "rebuilt":
            return (
                f"rebuilt ivfflat index: {self.rows} rows, lists {self.lists} "
                f"(was {before}) in {self.seconds:.1f} s; {self.reason}"
            )
        if self.action == "locked":
            return "another reindex is running; nothing done"
        return f"no rebuild needed: {self.rows} rows, index {before}; {self.reason}"


async def reindex(
    store: PostgresStore,
    *,
    if_needed: bool = False,
    lists: int | None = None,
    maintenance_work_mem: str = "1GB",
) -> ReindexReport:
    """Rebuild the ivfflat index concurrently (lookups go on) and record the build.

    Args:
        store: the cache's store.
        if_needed: only rebuild when `rebuild_reason` says so.
        lists: override the number of lists (default: `lists_for(rows)`).
        maintenance_work_mem: memory for the build's k-means (PostgreSQL setting).
    """
    started = time.monotonic()
    rows = await store.count_embedded()
    previous = await store.last_index_build()
    reason = rebuild_reason(rows, previous)
    if if_needed and reason is None:
        return ReindexReport(
            action="skipped",
            rows=rows,
            lists=None,
            previous=previous,
            seconds=time.monotonic() - started,
            reason="no embedded rows yet"
            if rows == 0
            else "row count within a factor 2 of the last build",
        )
    target = lists or lists_for(rows)
    built = await store.rebuild_ivfflat(
        lists=target, rows=rows, maintenance_work_mem=maintenance_work_mem
    )
    return ReindexReport(
        action="rebuilt" if built else "locked",
        rows=rows,
        lists=target,
        previous=previous,
        seconds=time.monotonic() - started,
        reason=reason or "requested",
    )
