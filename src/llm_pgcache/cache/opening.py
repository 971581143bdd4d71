"""Opening a cache: the awaitable context `Cache.connect` returns, and the store it opens."""

from __future__ import annotations

from collections.abc import Coroutine, Generator
from types import TracebackType
from typing import Any, Generic, Protocol, TypeVar

from llm_pgcache.errors import SchemaError
from llm_pgcache.postgres import embedded
from llm_pgcache.postgres.store import PostgresStore


class Closable(Protocol):
    async def close(self) -> None: ...


Opened = TypeVar("Opened", bound=Closable)


class Opening(Generic[Opened]):
    """What `Cache.connect` returns: await it for the opened object, or use it with
    `async with`, which closes it on exit."""

    def __init__(self, opening: Coroutine[Any, Any, Opened]) -> None:
        self._opening = opening
        self._opened: Opened | None = None

    def __await__(self) -> Generator[Any, None, Opened]:
        return self._opening.__await__()

    async def __aenter__(self) -> Opened:
        self._opened = await self._opening
        return self._opened

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._opened is not None:
            await self._opened.close()


async def open_store(
    dsn: str | None,
    *,
    min_size: int,
    max_size: int,
    embedded_dir: str | None,
    statement_timeout: float,
    listen_dsn: str | None,
    pooler: str | None,
    read_dsn: str | None,
) -> PostgresStore:
    """A store on `dsn`; without one, on the embedded server (migrated on first use)."""

    async def on(target: str) -> PostgresStore:
        return await PostgresStore.open(
            target,
            min_size=min_size,
            max_size=max_size,
            statement_timeout=statement_timeout,
            listen_dsn=listen_dsn,
            pooler=pooler,
            read_dsn=read_dsn,
        )

    if dsn is not None:
        return await on(dsn)
    dsn = await embedded.start(embedded_dir)
    try:
        return await on(dsn)
    except SchemaError:  # a new embedded server: migrate it, as `llm-pgcache migrate` does
        from llm_pgcache.postgres import migrate  # noqa: PLC0415 - alembic only when needed

        await migrate.upgrade(dsn)
        return await on(dsn)
