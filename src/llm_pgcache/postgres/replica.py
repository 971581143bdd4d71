"""Reads from a streaming replica, never behind this process's writes or the
invalidations it heard of.

Lookups go to the replica, except in a namespace that this process wrote to (a store, a
load, an invalidation) or heard an invalidation notice for, until the replica has
replayed the primary's WAL up to the point where that write was visible: such lookups go
to the primary meanwhile. A watcher task reads the primary's WAL position once for the
writes that wait (any position read after a write committed is at or past it) and polls
the replica's replay position until it gets there, usually within milliseconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Final, LiteralString

from llm_pgcache.errors import BackendError
from llm_pgcache.postgres.pool import Connections

logger = logging.getLogger(__name__)

ALL: Final = "\x00all"  # the barrier of every namespace (a notice this process heard)
POLL = 0.01  # seconds between reads of the replica's replay position
PRIMARY_LSN: Final[LiteralString] = "SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint"
REPLAYED_LSN: Final[LiteralString] = (
    "SELECT (coalesce(pg_last_wal_replay_lsn(), '0/0'::pg_lsn) - '0/0'::pg_lsn)::bigint"
)


class ReplicaReads:
    """Where a lookup reads: the replica (`db`), or the primary while the replica is
    behind what this process knows of."""

    def __init__(self, primary: Connections, replica: Connections) -> None:
        self.db = replica
        self._primary = primary
        # namespace (or ALL) -> the primary WAL position the replica must replay first
        # (None: not read yet)
        self._barriers: dict[str, int | None] = {}
        self._watcher: asyncio.Task[None] | None = None

    def readable(self, namespace: str) -> bool:
        """Whether a lookup in `namespace` may read the replica."""
        barriers = self._barriers
        return not barriers or (namespace not in barriers and ALL not in barriers)

    def wrote(self, namespace: str) -> None:
        """A write of this process to `namespace` committed."""
        self._barriers[namespace] = None
        self._watch()

    def heard(self) -> None:
        """An invalidation notice arrived (from any process, for any namespace)."""
        self._barriers[ALL] = None
        self._watch()

    def _watch(self) -> None:
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.get_running_loop().create_task(self._catch_up())

    async def _catch_up(self) -> None:
        """Until no barrier is left: give the new ones the primary's position, and drop
        those the replica has replayed."""
        while self._barriers:
            try:
                if None in self._barriers.values():
                    position: int = await self._primary.fetchval(PRIMARY_LSN)
                    for namespace, barrier in list(self._barriers.items()):
                        if barrier is None:
                            self._barriers[namespace] = position
                replayed: int = await self.db.fetchval(REPLAYED_LSN)
            except BackendError as exc:  # reads go to the primary meanwhile
                logger.warning("llm-pgcache: replica position unknown: %s", exc)
                await asyncio.sleep(10 * POLL)
                continue
            for namespace, barrier in list(self._barriers.items()):
                if barrier is not None and barrier <= replayed:
                    del self._barriers[namespace]
            if self._barriers:
                await asyncio.sleep(POLL)

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
