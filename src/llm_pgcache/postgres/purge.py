"""The expiry purge: delete expired rows, and enforce an optional size cap.

Reads never return expired rows, so the purge only reclaims space. It deletes in short
batches (one statement and transaction each, skipping locked rows), holds a lease
(`postgres.leases`: no session lock, so it works through a transaction-mode pooler) so
that overlapping runs do not collide (a second run reports "locked" and does nothing),
and can be killed at any point: every batch is atomic, and the next run carries on once
the killed run's lease expires (a minute after its last renewal).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from llm_pgcache.errors import InvalidInputError

if TYPE_CHECKING:
    from llm_pgcache.postgres.sessions import PurgeSession
    from llm_pgcache.postgres.store import PostgresStore

Progress = Callable[[int, int], None]  # (rows done, rows to do)

DEFAULT_BATCH_SIZE = 5000


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeLimits:
    """How a purge deletes, and what it keeps.

    Attributes:
        batch_size: rows per delete statement.
        max_rows: keep at most this many rows.
        max_bytes: keep the table (with its indexes) near this size, estimated from its
            bytes per row; space freed by deletes is reused by later rows.

    Raises:
        InvalidInputError: a batch size below 1, or a negative cap.
    """

    batch_size: int = DEFAULT_BATCH_SIZE
    max_rows: int | None = None
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise InvalidInputError("batch_size must be at least 1")
        for name, cap in (("max_rows", self.max_rows), ("max_bytes", self.max_bytes)):
            if cap is not None and cap < 0:
                raise InvalidInputError(f"{name} must not be negative")


@dataclass(frozen=True, slots=True, kw_only=True)
class PurgeReport:
    """What a purge run did (or, with `dry_run`, would do)."""

    action: Literal["purged", "dry-run", "locked"]
    expired: int  # expired rows deleted (dry run: found)
    evicted: int  # live rows deleted by the size cap (dry run: that would be)
    seconds: float

    def summary(self) -> str:
        if self.action == "locked":
            return "another purge is running; nothing done"
        verb = "would delete" if self.action == "dry-run" else "deleted"
        return (
            f"{verb} {self.expired} expired rows and evicted {self.evicted} least recently "
            f"used rows in {self.seconds:.1f} s"
        )


async def purge(
    store: PostgresStore,
    limits: PurgeLimits,
    *,
    dry_run: bool = False,
    progress: Progress | None = None,
) -> PurgeReport:
    """Delete expired rows, then the least recently used ones above the size cap.

    Args:
        store: the cache's store.
        limits: batch size and size cap.
        dry_run: count, delete nothing.
        progress: called after each batch with (rows done, rows to do).
    """
    started = time.monotonic()
    async with store.purge_session() as session:
        if session is None:
            return PurgeReport(action="locked", expired=0, evicted=0, seconds=0.0)
        expired = await session.count_expired()
        over = await _rows_over_cap(session, limits, expired)
        if dry_run:
            return PurgeReport(
                action="dry-run", expired=expired, evicted=over, seconds=time.monotonic() - started
            )
        total = expired + over
        deleted = await _in_batches(
            session.delete_expired,
            expired,
            batch_size=limits.batch_size,
            done=0,
            total=total,
            progress=progress,
        )
        over = await _rows_over_cap(session, limits, 0)
        evicted = await _in_batches(
            session.evict_least_recent,
            over,
            batch_size=limits.batch_size,
            done=deleted,
            total=deleted + over,
            progress=progress,
        )
    return PurgeReport(
        action="purged", expired=deleted, evicted=evicted, seconds=time.monotonic() - started
    )


async def purge_forever(
    store: PostgresStore,
    limits: PurgeLimits,
    *,
    every: float,
    on_report: Callable[[PurgeReport], None],
) -> None:
    """`purge` every `every` seconds until cancelled."""
    while True:
        on_report(await purge(store, limits))
        await asyncio.sleep(every)


async def _rows_over_cap(session: PurgeSession, limits: PurgeLimits, expired: int) -> int:
    """Live rows above the cap (after `expired` rows are gone)."""
    max_rows, max_bytes = limits.max_rows, limits.max_bytes
    if max_rows is None and max_bytes is None:
        return 0
    rows, size = await session.volume()
    keep = rows
    if max_rows is not None:
        keep = min(keep, max_rows)
    if max_bytes is not None and rows:
        keep = min(keep, int(max_bytes / (size / rows)))
    return max(0, rows - expired - keep)


async def _in_batches(
    delete: Callable[[int], Awaitable[int]],
    count: int,
    *,
    batch_size: int,
    done: int,
    total: int,
    progress: Progress | None,
) -> int:
    """Delete `count` rows through `delete(batch)`; stops early when none are left."""
    deleted = 0
    while deleted < count:
        batch = await delete(min(batch_size, count - deleted))
        if not batch:
            break
        deleted += batch
        if progress is not None:
            progress(done + deleted, total)
    return deleted
