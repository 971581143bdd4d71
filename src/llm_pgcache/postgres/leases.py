"""Leases: who runs the purge or a reindex, in a row of `llm_pgcache_leases`, renewed
while the work runs.

A session advisory lock would do on a direct connection, but a transaction-mode pooler
hands the session to others after each transaction and the lock goes with it; a lease
needs no session. Its name is shared by every version that may run at once (a deploy's
old and new processes): never change one. A holder that dies leaves its lease to expire
(`ttl` seconds after its last renewal); the next run takes it then.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import AsyncIterator

from llm_pgcache.errors import BackendError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.pool import Connections

logger = logging.getLogger(__name__)

LEASE_TTL = 60.0  # seconds a lease outlives its holder's last renewal


class Lease:
    """A lease held by this process, renewed every third of its `ttl` in the background;
    `held` turns False if a renewal fails (another process may take it then)."""

    def __init__(self, db: Connections, name: str, ttl: float) -> None:
        self.name = name
        self.ttl = ttl
        self.holder = uuid.uuid4().hex
        self.held = False
        self._db = db

    async def take(self) -> bool:
        """Take or renew the lease; whether this process holds it."""
        holder = await self._db.fetchval(sql.TAKE_LEASE, self.name, self.holder, self.ttl)
        self.held = holder == self.holder
        return self.held

    async def keep(self) -> None:
        """Renew the lease until cancelled, or until a renewal fails."""
        while self.held:
            await asyncio.sleep(self.ttl / 3)
            try:
                if not await self.take():
                    logger.warning("llm-pgcache: the %s lease was taken over", self.name)
            except BackendError as exc:
                self.held = False
                logger.warning("llm-pgcache: the %s lease was not renewed: %s", self.name, exc)

    async def give_back(self) -> None:
        with contextlib.suppress(BackendError):  # it expires anyway
            await self._db.execute(sql.DROP_LEASE, self.name, self.holder)
        self.held = False


@contextlib.asynccontextmanager
async def leased(db: Connections, name: str, ttl: float = LEASE_TTL) -> AsyncIterator[Lease | None]:
    """The lease `name`, held and renewed for the block; None while another holds it."""
    lease = Lease(db, name, ttl)
    if not await lease.take():
        yield None
        return
    keeping = asyncio.get_running_loop().create_task(lease.keep())
    try:
        yield lease
    finally:
        keeping.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await keeping
        await lease.give_back()
