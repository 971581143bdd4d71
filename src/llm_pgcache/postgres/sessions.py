"""Connections held for one purpose: a purge run's, and the invalidation listener's."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import asyncpg

from llm_pgcache.errors import BackendError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.driver import DRIVER_ERRORS, translate_error


class PurgeSession:
    """The statements of one purge run, on the connection that holds the purge lock."""

    def __init__(self, connection: asyncpg.Connection) -> None:
        self._connection = connection

    async def count_expired(self) -> int:
        return await self._value(sql.COUNT_EXPIRED)

    async def volume(self) -> tuple[int, int]:
        """(rows, total bytes of table and indexes)."""
        try:
            record = await self._connection.fetchrow(sql.TABLE_VOLUME)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        return record["rows"], record["bytes"]

    async def delete_expired(self, batch: int) -> int:
        """Delete up to `batch` expired rows, oldest expiry first; returns how many."""
        return await self._deleted(sql.PURGE_EXPIRED_BATCH, batch)

    async def evict_least_recent(self, batch: int) -> int:
        """Delete up to `batch` rows, least recently hit first; returns how many."""
        return await self._deleted(sql.EVICT_LEAST_RECENT_BATCH, batch)

    async def _value(self, query: str) -> int:
        try:
            value: int = await self._connection.fetchval(query)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        return value

    async def _deleted(self, query: str, batch: int) -> int:
        try:
            status: str = await self._connection.execute(query, batch)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        return int(status.rsplit(" ", 1)[-1])


class Listener:
    """LISTEN on the invalidation channel, on a connection of its own.

    When the connection is lost, `on_lost` is called (the memory tier can no longer know
    what changed) and the listener reconnects in the background; `connected` says whether
    notices are arriving.
    """

    def __init__(
        self, pool: asyncpg.Pool, on_notice: Callable[[str], None], on_lost: Callable[[], None]
    ) -> None:
        self._pool = pool
        self._on_notice = on_notice
        self._on_lost = on_lost
        self._connection: asyncpg.Connection | None = None
        self._reconnecting: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def connected(self) -> bool:
        connection = self._connection
        try:
            return connection is not None and not connection.is_closed()
        except asyncpg.InterfaceError:  # released to the pool meanwhile
            return False

    async def start(self) -> None:
        try:
            connection = await self._pool.acquire()
            await connection.add_listener(sql.INVALIDATION_CHANNEL, self._received)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        connection.add_termination_listener(self._terminated)
        self._connection = connection

    async def close(self) -> None:
        self._closed = True
        if self._reconnecting is not None:
            self._reconnecting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnecting
        connection, self._connection = self._connection, None
        if connection is not None and not connection.is_closed():
            with contextlib.suppress(*DRIVER_ERRORS):
                await connection.remove_listener(sql.INVALIDATION_CHANNEL, self._received)
            await self._pool.release(connection)

    def _received(self, connection: object, pid: int, channel: str, payload: str) -> None:
        self._on_notice(payload)

    def _terminated(self, connection: asyncpg.Connection) -> None:
        self._on_lost()
        if self._closed:
            return
        dead, self._connection = self._connection, None  # the pool's proxy we hold
        if self._reconnecting is None or self._reconnecting.done():
            self._reconnecting = asyncio.get_running_loop().create_task(self._reconnect(dead))

    async def _reconnect(self, dead: asyncpg.Connection | None) -> None:
        if dead is not None:
            with contextlib.suppress(*DRIVER_ERRORS):
                await self._pool.release(dead)  # the pool discards a closed connection
        while not self._closed:
            await asyncio.sleep(0.5)
            try:
                await self.start()
            except BackendError:
                continue
            self._on_lost()  # anything may have changed while nobody was listening
            return
