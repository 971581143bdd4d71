"""Opening a cache: the object `Cache.connect` returns, and the store it opens."""

from __future__ import annotations

from collections.abc import Generator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from llm_pgcache.errors import SchemaError
from llm_pgcache.postgres import embedded, migrate
from llm_pgcache.postgres.store import PostgresStore

if TYPE_CHECKING:
    from llm_pgcache.cache.facade import Cache


class Connecting:
    """What `Cache.connect` returns: await it, or use it with `async with`."""

    def __init__(self, opening: Any) -> None:
        self._opening = opening
        self._cache: Cache | None = None

    def __await__(self) -> Generator[Any, None, Cache]:
        cache: Cache = yield from self._opening.__await__()
        return cache

    async def __aenter__(self) -> Cache:
        self._cache = await self._opening
        return self._cache

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cache is not None:
            await self._cache.close()


async def open_store(
    dsn: str | None, *, min_size: int, max_size: int, embedded_dir: str | None
) -> PostgresStore:
    if dsn is not None:
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)
    dsn = await embedded.start(embedded_dir)
    try:
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)
    except SchemaError:  # a new embedded server: migrate it, as `llm-pgcache migrate` does
        await migrate.upgrade(dsn)
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)
