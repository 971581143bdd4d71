"""`SyncCache`: the `Cache` for code without an event loop (scripts, Django or Flask
views, Celery tasks).

One background thread runs one event loop, on which an ordinary async `Cache` lives;
each method hands its call to that loop and blocks until it returns. The cache's own
budgets bound every call as in async code (a lookup that PostgreSQL does not answer in
`lookup_timeout` is a miss), and lookups from many threads share the cache's rounds, as
concurrent async lookups do. This keeps one implementation of every behaviour, instead of
a second one over a sync driver.

Blocking work that a call needs on the way (a sync SDK client's upstream request, the
body of a function decorated with `SyncCache.cached`) runs in the thread that made the
call, which waits anyway (`in_caller_thread`): its thread-locals are there, the loop
never blocks, and no pool caps how many threads call at once.

Calling it from inside a running event loop would block that loop: it raises instead;
async code uses `Cache`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import inspect
import queue
import threading
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, ParamSpec, Self, TypeVar

from llm_pgcache.cache.facade import Cache
from llm_pgcache.cache.metrics import Counters, Stats
from llm_pgcache.cache.warming import WarmItem
from llm_pgcache.entries import CacheHit
from llm_pgcache.errors import ConfigurationError, InvalidInputError
from llm_pgcache.postgres.purge import PurgeReport
from llm_pgcache.validation import TTL

T = TypeVar("T")
P = ParamSpec("P")


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
        self._refuse_closed(call)
        caller = _CallerThread(self._loop)
        return caller.wait(self.submit(caller.serve(call)))

    def submit(self, call: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        """Run `call` (a coroutine of `self.cache`) on the cache's loop; its future.

        Raises:
            ConfigurationError: the SyncCache is closed.
        """
        self._refuse_closed(call)
        return asyncio.run_coroutine_threadsafe(call, self._loop)

    def _refuse_closed(self, call: Coroutine[Any, Any, Any]) -> None:
        if not self._thread.is_alive():
            call.close()
            raise ConfigurationError("this SyncCache is closed")

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

    def cached(
        self,
        *,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        key: Callable[..., object] | None = None,
        version: str = "",
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """`Cache.cached` for sync functions (the same keys: a sync and an async function
        of one qualified name share results). The function runs in the calling thread.

        Raises:
            InvalidInputError: the decorated object is an async function (use
                `Cache.cached`).
        """

        def decorate(function: Callable[P, T]) -> Callable[P, T]:
            if inspect.iscoroutinefunction(function):
                raise InvalidInputError(
                    f"SyncCache.cached decorates sync functions; {function!r} is async"
                )

            @functools.wraps(function)
            async def in_caller(*args: P.args, **kwargs: P.kwargs) -> T:
                return await in_caller_thread(function, *args, **kwargs)

            cached = self.cache.cached(
                ttl=ttl, tags=tags, namespace=namespace, key=key, version=version
            )(in_caller)

            @functools.wraps(function)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
                return self.result_of(cached(*args, **kwargs))

            return wrapper

        return decorate

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


_CALLER: contextvars.ContextVar[_CallerThread] = contextvars.ContextVar("llm_pgcache_caller")


async def in_caller_thread(function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """Run a blocking `function` for the call under way: in the thread blocked in
    `SyncCache.result_of` on it, or (for work that outlives its call, or a call made by
    `submit`) in a worker thread."""
    caller = _CALLER.get(None)
    done = None if caller is None else caller.post(functools.partial(function, *args, **kwargs))
    if done is None:
        return await asyncio.to_thread(function, *args, **kwargs)
    result: T = await done
    return result


class _CallerThread:
    """A thread waiting in `result_of`, which runs the blocking jobs its call posts."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._jobs: queue.SimpleQueue[tuple[Callable[[], Any], asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._lock = threading.Lock()
        self._open = True

    async def serve(self, call: Awaitable[T]) -> T:
        """`call`, with this thread as its caller (on the loop)."""
        _CALLER.set(self)  # in this task's own context: it ends with the task
        return await call

    def post(self, job: Callable[[], Any]) -> asyncio.Future[Any] | None:
        """Queue `job` for the caller (on the loop); its result's future, or None when
        the caller has stopped waiting."""
        done = self._loop.create_future()
        with self._lock:
            if not self._open:
                return None
            self._jobs.put((job, done))
        return done

    def wait(self, future: concurrent.futures.Future[T]) -> T:
        """Run posted jobs until `future` is done; its result."""
        future.add_done_callback(lambda _: self._jobs.put(None))
        try:
            while (item := self._jobs.get()) is not None:
                self._run(*item)
        except BaseException:  # KeyboardInterrupt, say: the call is abandoned
            future.cancel()
            raise
        finally:
            with self._lock:
                self._open = False
            self._hand_off()
        return future.result()

    def _run(self, job: Callable[[], Any], done: asyncio.Future[Any]) -> None:
        try:
            result = job()
        except BaseException as exc:  # the awaiting coroutine gets it
            self._settle(done, None, exc)
        else:
            self._settle(done, result, None)

    def _settle(self, done: asyncio.Future[Any], result: Any, exc: BaseException | None) -> None:
        def settle() -> None:
            if done.done():  # its awaiter was cancelled
                return
            if exc is None:
                done.set_result(result)
            else:
                done.set_exception(exc)

        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the SyncCache was closed meanwhile
            return

    def _hand_off(self) -> None:
        """Jobs posted as the wait ended: nobody runs them here any more."""
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                threading.Thread(target=self._run, args=item, daemon=True).start()


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
