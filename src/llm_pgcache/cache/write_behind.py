"""What lookups leave behind, written in batches: never one write per read.

Hit counts and last-hit times per entry (for the size cap's least-recently-used
eviction) and the lookup counters per namespace and tier (for `llm-pgcache stats`) are
aggregated in memory and written every `interval` seconds, and on close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import UTC, datetime

from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.errors import BackendError
from llm_pgcache.postgres.store import PostgresStore

logger = logging.getLogger(__name__)


class WriteBehind:
    """Aggregates hits per (namespace, key), and the metrics' lookup counters, until the
    next flush."""

    def __init__(
        self,
        store: PostgresStore,
        metrics: Metrics,
        *,
        interval: float = 5.0,
        max_pending: int = 50_000,
    ) -> None:
        self._store = store
        self._metrics = metrics
        self.interval = interval
        self._max_pending = max_pending
        self._pending: dict[tuple[str, bytes], tuple[int, float]] = {}  # (hits, last epoch)
        self._task: asyncio.Task[None] | None = None

    def record(self, namespace: str, key: bytes) -> None:
        slot = (namespace, key)
        count = self._pending[slot][0] + 1 if slot in self._pending else 1
        if count == 1 and len(self._pending) >= self._max_pending:
            return  # a backlog this large means flushes fail: drop, do not grow
        self._pending[slot] = (count, time.time())
        self.schedule()

    def schedule(self) -> None:
        """Make sure a flush comes within `interval` seconds."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush_later())

    async def flush(self) -> None:
        """Write what was recorded; on a backend failure, the counts are dropped."""
        pending, self._pending = self._pending, {}
        rows = [
            (ns, key, count, datetime.fromtimestamp(at, UTC))
            for (ns, key), (count, at) in pending.items()
        ]
        counters = self._metrics.take_unwritten()
        try:
            await self._store.record_hits(rows)
            await self._store.add_counters(counters)
        except BackendError as exc:
            logger.warning("llm-pgcache could not write its hit counts: %s", exc)

    async def close(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _flush_later(self) -> None:
        await asyncio.sleep(self.interval)
        await self.flush()
