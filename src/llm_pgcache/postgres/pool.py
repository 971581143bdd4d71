"""Pooled connections with a deadline on every wait, and driver errors translated.

`budget` arguments are seconds; None means the statement timeout.

Every statement runs under a timeout (the pool's `command_timeout`, or the one the call
gives). A statement that runs out of time, or whose caller is cancelled (a lookup's
deadline), leaves its connection waiting for the server to confirm the cancellation; on
a dead network that confirmation never comes. So such a connection is handed back in the
background, where the driver waits at most `release_timeout` before it closes it: the
caller returns at once, and the pool is whole again within that bound.

A connection that did its statement goes back to the cache's own idle list (pools the
cache opened itself), not through asyncpg's acquire and release, unless a caller waits
in asyncpg's acquire meanwhile: then it goes to that caller.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any, NoReturn

import asyncpg

from llm_pgcache.config import asyncpg_dsn, pooler_of, redact_dsn
from llm_pgcache.errors import BackendError
from llm_pgcache.postgres.driver import (
    DRIVER_ERRORS,
    Schema,
    check_schema,
    init_connection,
    keep_session,
    translate_error,
)

DEFAULT_STATEMENT_TIMEOUT = 5.0  # seconds any statement may take (lookups have less)
RELEASE_TIMEOUT = 1.0  # seconds a cancelled statement's connection may take to come back


class Connections:
    """An asyncpg pool whose every acquire, statement and release has a deadline."""

    def __init__(
        self, pool: asyncpg.Pool, *, statement_timeout: float, keep_idle: bool = False
    ) -> None:
        self.pool = pool
        self.statement_timeout = statement_timeout
        self._releasing: set[asyncio.Task[None]] = set()
        # With `keep_idle` (a pool we own, that nothing else draws from), a statement's
        # connection goes back here, not to asyncpg's pool: its acquire and release
        # (its queue, a task, its housekeeping) cost 60-80 µs of CPU a statement, a third
        # of an exact hit. Taken again last in, first out.
        self._keep_idle = keep_idle
        self._idle: list[asyncpg.Connection] = []
        self._waiting = 0  # takes waiting in asyncpg's acquire: they get what comes back

    @contextlib.asynccontextmanager
    async def connection(self, budget: float | None = None) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection, acquired within `budget` seconds (default: the statement
        timeout). Driver errors inside become our errors."""
        connection = await self.take(budget)
        try:
            yield connection
        except BaseException as exc:
            self._failed(connection, exc)
        self._done(connection)

    def _failed(self, connection: asyncpg.Connection, exc: BaseException) -> NoReturn:
        """A statement on `connection` raised `exc`: the connection goes back behind the
        caller (it may wait for the server to confirm a cancellation), a driver error
        becomes ours."""
        self._release_later(connection)
        if isinstance(exc, DRIVER_ERRORS):
            raise translate_error(exc) from exc
        raise exc

    def _done(self, connection: asyncpg.Connection) -> None:
        """A statement on `connection` is done: it goes back to the idle list, or behind
        the caller to asyncpg (whose release takes a task and two turns of the loop)."""
        if self._keep_idle and not self._waiting and _reusable(connection):
            self._idle.append(connection)
        else:
            self._release_later(connection)

    async def take(self, budget: float | None = None) -> asyncpg.Connection:
        """A connection for the caller to keep (`give_back` when done), within `budget`."""
        while self._idle:
            kept = self._idle.pop()
            if _reusable(kept):
                return kept
            self._release_later(kept)  # closed meanwhile: the driver cleans it up
        try:
            # Our own deadline, not acquire(timeout=...): asyncpg wraps a timed acquire in
            # a task of its own, one more turn of the event loop for every statement.
            self._waiting += 1
            async with asyncio.timeout(budget or self.statement_timeout):
                connection: asyncpg.Connection = await self.pool.acquire()
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
        finally:
            self._waiting -= 1
        return connection

    async def give_back(self, connection: asyncpg.Connection) -> None:
        """Return a connection from `take` to the pool (within `RELEASE_TIMEOUT`)."""
        with contextlib.suppress(*DRIVER_ERRORS):
            await self.pool.release(connection, timeout=RELEASE_TIMEOUT)

    async def fetch(self, query: str, *args: Any, budget: float | None = None) -> list[Any]:
        rows: list[Any] = await self._statement("fetch", query, args, budget)
        return rows

    async def fetchrow(self, query: str, *args: Any, budget: float | None = None) -> Any:
        return await self._statement("fetchrow", query, args, budget)

    async def fetchval(self, query: str, *args: Any, budget: float | None = None) -> Any:
        return await self._statement("fetchval", query, args, budget)

    async def execute(self, query: str, *args: Any, budget: float | None = None) -> str:
        status: str = await self._statement("execute", query, args, budget)
        return status

    async def _statement(
        self, method: str, query: str, args: tuple[Any, ...], budget: float | None
    ) -> Any:
        """One statement (the connection's `method`: fetch, fetchrow, fetchval, execute) on
        a connection of its own, within `budget`. Written out rather than through
        `connection()`: a generator context manager costs ~10 µs a statement (measured at
        one lookup in flight, where a semantic hit runs two)."""
        connection = await self.take(budget)
        try:
            result = await getattr(connection, method)(
                query, *args, timeout=budget or self.statement_timeout
            )
        except BaseException as exc:
            self._failed(connection, exc)
        self._done(connection)
        return result

    def _release_later(self, connection: asyncpg.Connection) -> None:
        """Hand `connection` back without making the caller wait for it."""

        async def release() -> None:
            with contextlib.suppress(*DRIVER_ERRORS, asyncio.CancelledError):
                await self.pool.release(connection, timeout=RELEASE_TIMEOUT)

        task = asyncio.get_running_loop().create_task(release())
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)

    async def close(self, *, owned: bool, grace: float) -> None:
        """Wait at most `grace` seconds for the connections handed back in the background,
        then, for a pool we own, for the rest; what is still busy is terminated."""
        idle, self._idle = self._idle, []
        for connection in idle:
            self._release_later(connection)
        try:
            async with asyncio.timeout(grace):
                await asyncio.gather(*self._releasing, return_exceptions=True)
                if owned:
                    await self.pool.close()
        except TimeoutError:
            if owned:
                self.pool.terminate()


def _reusable(connection: asyncpg.Connection) -> bool:
    """Open, and not in a transaction (a statement cut short inside one leaves it so)."""
    try:
        return not connection.is_closed() and not connection.is_in_transaction()
    except asyncpg.InterfaceError:  # closed under us: asyncpg took it back already
        return False


async def open_pools(
    dsn: str,
    *,
    min_size: int,
    max_size: int,
    connect_timeout: float,
    statement_timeout: float,
    pooler: str | None,
    read_dsn: str | None,
) -> tuple[asyncpg.Pool, asyncpg.Pool | None, Schema, str | None]:
    """Check the schema of `dsn`, then open a pool on it and one on `read_dsn` (if
    given): (pool, read pool, schema, pooler in force). Behind a transaction-mode
    pooler, without named prepared statements.

    Raises:
        BackendError: the server cannot be reached.
        SchemaError: the schema is missing or at an unknown revision.
    """
    pooler = pooler_of(dsn, pooler)
    pooled = pooler == "transaction"
    dsn = asyncpg_dsn(dsn)
    statement_cache_size = 0 if pooled else 100  # 100: asyncpg's default
    try:
        connection = await asyncpg.connect(
            dsn,
            timeout=connect_timeout,
            command_timeout=connect_timeout,
            statement_cache_size=statement_cache_size,
        )
    except DRIVER_ERRORS as exc:
        raise BackendError(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: {exc or type(exc).__name__}"
        ) from exc
    try:
        schema = await check_schema(connection)
    finally:
        connection.terminate()

    async def pool_on(target: str) -> asyncpg.Pool:
        try:
            return await asyncpg.create_pool(
                target,
                min_size=min_size,
                max_size=max_size,
                init=init_connection,
                reset=keep_session,
                timeout=connect_timeout,
                command_timeout=statement_timeout,  # also bounds a cancellation
                statement_cache_size=statement_cache_size,
            )
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc

    pool = await pool_on(dsn)
    try:
        read_pool = await pool_on(asyncpg_dsn(read_dsn)) if read_dsn else None
    except BaseException:
        await pool.close()
        raise
    return pool, read_pool, schema, pooler
