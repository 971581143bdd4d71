"""`SyncCache`: the `Cache` for code without an event loop (scripts, Django or Flask
views, Celery tasks).

One background thread runs one event loop, on which an ordinary async `Cache` lives;
each method hands its call to that loop and blocks until it returns. The cache's own
budgets bound every call as in async code (a lookup that PostgreSQL does not answer in
`lookup_timeout` is a miss), and lookups from many threads share the cache's rounds, as
concurrent async lookups do. This keeps one implementation of every behaviour, instead of
a second one over a sync driver.

Calling it from inside a running event loop would block that loop: it raises instead;
async code uses `Cache`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, Self, TypeVar

from llm_pgcache.cache.facade import Cache
from llm_pgcache.cache.metrics import Counters, Stats
from llm_pgcache.cache.warming import WarmItem
from llm_pgcache.entries import CacheHit
from llm_pgcache.errors import ConfigurationError
from llm_pgcache.postgres.purge import PurgeReport

T = TypeVar("T")


class SyncCache:
    """A `Cache` for sync code: `SyncCache.connect(dsn, **options)`, then `get`, `set`,
    `invalidate`, ... as on `Cache`, without `await`. Share one per process; `close()` (or
    `with SyncCache.connect(...) as cache:`) stops its thread."""

    def __init__(self, cache: Cache, loop: asyncio.AbstractEventLoop, thread: threading.Thread):
        self.cache = cache  # the async cache, living on `loop`
        self._loop = loop
        self._thread = thread

    @classmethod
    def connect(cls, dsn: str | None = None, **options: Any) -> Self:
        """Open a cache (the arguments of `Cache.connect`) on a loop of its own thread.

        Raises:
            ConfigurationError: called from a running event loop (use `Cache`), or as
                `Cache.connect` raises.
        """
        _refuse_running_loop()
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="llm-pgcache-sync", daemon=True)
        thread.start()
        try:
            opening = _open(dsn, dict(options))
            cache = asyncio.run_coroutine_threadsafe(opening, loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()
            raise
        return cls(cache, loop, thread)

    def result_of(self, call: Coroutine[Any, Any, T]) -> T:
        """Run `call` (a coroutine of `self.cache`) on the cache's loop and wait for it,
        from code without a running loop (a running loop would be blocked:
        ConfigurationError)."""
        _refuse_running_loop(call)
        return self.submit(call).result()

    def submit(self, call: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `call` (a coroutine of `self.cache`) on the cache's loop; its future.

        Raises:
            ConfigurationError: the SyncCache is closed.
        """
        if not self._thread.is_alive():
            call.close()
            raise ConfigurationError("this SyncCache is closed")
        return asyncio.run_coroutine_threadsafe(call, self._loop)

    def get(self, request: Mapping[str, Any], **options: Any) -> CacheHit | None:
        """`Cache.get`."""
        return self.result_of(self.cache.get(request, **options))

    def set(self, request: Mapping[str, Any], response: object, **options: Any) -> None:
        """`Cache.set`."""
        self.result_of(self.cache.set(request, response, **options))

    def invalidate(self, **options: Any) -> int:
        """`Cache.invalidate`."""
        return self.result_of(self.cache.invalidate(**options))

    def load(self, items: Iterable[WarmItem], **options: Any) -> int:
        """`Cache.load`."""
        return self.result_of(self.cache.load(items, **options))

    def report_wrong_hit(self, hit: CacheHit) -> bool:
        """`Cache.report_wrong_hit`."""
        return self.result_of(self.cache.report_wrong_hit(hit))

    def report_good_hit(self, hit: CacheHit) -> bool:
        """`Cache.report_good_hit`."""
        return self.result_of(self.cache.report_good_hit(hit))

    def purge(self, **options: Any) -> PurgeReport:
        """`Cache.purge`."""
        return self.result_of(self.cache.purge(**options))

    def stats(self, **options: Any) -> Stats:
        """`Cache.stats`."""
        return self.result_of(self.cache.stats(**options))

    @property
    def counters(self) -> Counters:
        return self.cache.counters

    def close(self, *, grace: float = 5.0) -> None:
        """Close the cache, then stop its thread."""
        if not self._thread.is_alive():
            return
        try:
            self.result_of(self.cache.close(grace=grace))
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join()
            self._loop.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def _open(dsn: str | None, options: dict[str, Any]) -> Cache:
    cache: Cache = await Cache.connect(dsn, **options)
    return cache


def _refuse_running_loop(call: Coroutine[Any, Any, Any] | None = None) -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    if call is not None:
        call.close()
    raise ConfigurationError(
        "SyncCache blocks its caller: inside a running event loop use Cache (await it)"
    )
