"""Connections held for one purpose: a purge run's, and the invalidation listener's."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Callable

import asyncpg

from llm_pgcache.errors import BackendError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.driver import DRIVER_ERRORS, translate_error
from llm_pgcache.postgres.leases import Lease
from llm_pgcache.postgres.pool import Connections


class PurgeSession:
    """The statements of one purge run, while it holds the purge lease: each batch is a
    statement and a transaction of its own, on any pooled connection."""

    def __init__(self, db: Connections, lease: Lease) -> None:
        self._db = db
        self._lease = lease

    async def count_expired(self) -> int:
        value: int = await self._db.fetchval(sql.COUNT_EXPIRED)
        return value

    async def volume(self) -> tuple[int, int]:
        """(rows, total bytes of table and indexes)."""
        record = await self._db.fetchrow(sql.TABLE_VOLUME)
        return record["rows"], record["bytes"]

    async def delete_expired(self, batch: int) -> int:
        """Delete up to `batch` expired rows, oldest expiry first; returns how many."""
        return await self._deleted(sql.PURGE_EXPIRED_BATCH, batch)

    async def evict_least_recent(self, batch: int) -> int:
        """Delete up to `batch` rows, least recently hit first; returns how many."""
        return await self._deleted(sql.EVICT_LEAST_RECENT_BATCH, batch)

    async def _deleted(self, query: str, batch: int) -> int:
        if not self._lease.held:  # lost: another run may hold it now, stop between batches
            return 0
        status: str = await self._db.execute(query, batch)
        return int(status.rsplit(" ", 1)[-1])


class Listener:
    """LISTEN on the invalidation channel, on a connection of its own, proven alive by a
    heartbeat.

    Every `heartbeat` seconds the listener sends a notice on a channel of its own through
    the pool, and expects it back on the listening connection within another `heartbeat`.
    A listening connection that closes, or stays silent past that (a network that drops
    every packet leaves the socket open, and nothing else would tell), is lost: `on_lost`
    is called (the memory tier can no longer know what changed), `connected` turns False,
    and the listener reconnects in the background; once back, `on_lost` is called again
    (anything may have changed while nobody listened).

    The listening connection comes from `listen_dsn` when given (a direct connection,
    e.g. past a transaction-mode pooler), else from the pool.
    """

    def __init__(
        self,
        db: Connections,
        on_notice: Callable[[str], None],
        on_lost: Callable[[], None],
        *,
        heartbeat: float,
        listen_dsn: str | None = None,
    ) -> None:
        self._db = db
        self._on_notice = on_notice
        self._on_lost = on_lost
        self.heartbeat = heartbeat
        self._listen_dsn = listen_dsn
        self._beat_channel = f"{sql.INVALIDATION_CHANNEL}_beat_{uuid.uuid4().hex}"
        self._connection: asyncpg.Connection | None = None
        self._alive = False
        self._beats = 0
        self._answered = asyncio.Event()
        self._lost = asyncio.Event()
        self._background: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        """Whether notices are known to arrive (as of the last heartbeat)."""
        return self._alive

    async def start(self) -> None:
        """Listen, and keep proving it; raises BackendError when it cannot listen now."""
        await self._listen()
        self._background = asyncio.get_running_loop().create_task(self._keep_alive())

    async def close(self) -> None:
        self._closed = True
        self._alive = False
        if self._background is not None:
            self._background.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._background
        await self._drop_connection(gracefully=True)

    async def _listen(self) -> None:
        budget = self._db.statement_timeout
        try:
            if self._listen_dsn is not None:
                connection = await asyncpg.connect(
                    self._listen_dsn, timeout=budget, command_timeout=budget
                )
            else:
                connection = await self._db.take(budget)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        self._connection = connection
        try:
            async with asyncio.timeout(budget):
                await connection.add_listener(sql.INVALIDATION_CHANNEL, self._received)
                await connection.add_listener(self._beat_channel, self._received)
        except DRIVER_ERRORS as exc:
            await self._drop_connection(gracefully=False)
            raise translate_error(exc) from exc
        connection.add_termination_listener(self._terminated)
        self._alive = True
        self._lost.clear()

    async def _keep_alive(self) -> None:
        """Beat while alive; when lost, reconnect (every half second until it works)."""
        while not self._closed:
            if self._alive:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(self.heartbeat):
                        await self._lost.wait()  # a closed connection cuts the wait short
                if self._alive and not await self._beat():
                    self._lose()
                continue
            await self._drop_connection(gracefully=False)
            await asyncio.sleep(0.5)
            try:
                await self._listen()
            except BackendError:
                continue
            self._on_lost()  # anything may have changed while nobody was listening

    async def _beat(self) -> bool:
        """Whether a notice sent now comes back within a heartbeat."""
        self._beats += 1
        self._answered.clear()
        try:
            async with asyncio.timeout(self.heartbeat):
                await self._db.execute(sql.NOTIFY_CHANNEL, self._beat_channel, str(self._beats))
                await self._answered.wait()
        except (TimeoutError, BackendError):
            return not self._alive or self._closed  # already lost, or closing: no news
        return True

    def _received(self, connection: object, pid: int, channel: str, payload: str) -> None:
        if channel == self._beat_channel:
            if payload == str(self._beats):
                self._answered.set()
            return
        self._on_notice(payload)

    def _terminated(self, connection: asyncpg.Connection) -> None:
        self._lose()

    def _lose(self) -> None:
        if self._closed or not self._alive:
            return
        self._alive = False
        self._lost.set()
        self._on_lost()

    async def _drop_connection(self, *, gracefully: bool) -> None:
        """Let go of the listening connection: UNLISTEN first when `gracefully` (a second
        at most), else close it at once. A pooled connection the server closed has been
        taken back by the pool already; the driver then refuses every call, ignored here."""
        connection, self._connection = self._connection, None
        if connection is None:
            return
        with contextlib.suppress(*DRIVER_ERRORS):
            if not (gracefully and await self._unlisten(connection)):
                connection.terminate()
            if self._listen_dsn is None:
                await self._db.give_back(connection)
            elif not connection.is_closed():
                await connection.close(timeout=1.0)

    async def _unlisten(self, connection: asyncpg.Connection) -> bool:
        """UNLISTEN within a second; whether that worked."""
        if connection.is_closed():
            return False
        try:
            async with asyncio.timeout(1.0):
                await connection.remove_listener(sql.INVALIDATION_CHANNEL, self._received)
                await connection.remove_listener(self._beat_channel, self._received)
        except TimeoutError:
            return False
        return True
