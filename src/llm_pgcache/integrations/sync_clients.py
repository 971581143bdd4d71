"""Sync SDK clients (`openai.OpenAI`, `anthropic.Anthropic`) through the same cached
calls as the async ones, with a `SyncCache`.

The cached client is the async one, built over an `AsyncView` of the sync client (each
of its methods runs in the calling thread, through `in_caller_thread`; its streams are
read the same way), living on the SyncCache's loop; a `SyncView` of it is what the caller
holds: each call blocks on the loop (`SyncCache.result_of`), async streams become sync
ones, and what is not cached is the sync client's own object. One implementation of
hits, streaming replay, single-flight, policy and fail-open serves both kinds of client.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import TracebackType
from typing import Any, Self

from llm_pgcache.errors import ConfigurationError
from llm_pgcache.integrations.calls import CachedClient, CachedCreate, Resource
from llm_pgcache.integrations.events import EventStream
from llm_pgcache.integrations.openai_embeddings import CachedEmbeddings
from llm_pgcache.integrations.policy import INFO_FIELD
from llm_pgcache.integrations.sync_cache import SyncCache, in_caller_thread

_END = object()
_CACHED = (CachedClient, CachedCreate, CachedEmbeddings, Resource)


def check_pairing(client: object, cache: object, *, async_client: type, sync_client: type) -> None:
    """A sync SDK client goes with a `SyncCache`, an async one with a `Cache`.

    Raises:
        ConfigurationError: the two do not go together.
    """
    sync = isinstance(cache, SyncCache)
    if sync and isinstance(client, async_client):
        raise ConfigurationError(
            f"an {async_client.__name__} goes with a Cache (await Cache.connect(...)), "
            "not a SyncCache"
        )
    if not sync and isinstance(client, sync_client):
        raise ConfigurationError(
            f"a sync {sync_client.__name__} client goes with a SyncCache "
            "(SyncCache.connect(...)), not a Cache"
        )


class AsyncView:
    """A sync client (or one of its resources) seen as an async one."""

    def __init__(self, target: Any) -> None:
        self.target = target  # the sync object

    def __getattr__(self, name: str) -> Any:
        value = getattr(self.target, name)
        if not callable(value):
            return AsyncView(value)

        async def call(*args: Any, **kwargs: Any) -> Any:
            result = await in_caller_thread(value, *args, **kwargs)
            return _AsyncIterator(result) if hasattr(result, "__next__") else result

        return call


class _AsyncIterator:
    """A sync stream read as an async one, in the calling thread."""

    def __init__(self, iterator: Any) -> None:
        self.iterator = iterator

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        item = await in_caller_thread(next, self.iterator, _END)
        if item is _END:
            raise StopAsyncIteration
        return item

    async def close(self) -> None:
        await in_caller_thread(self.iterator.close)


class SyncView:
    """A cached async client (or one of its resources) seen as a sync one."""

    def __init__(self, target: Any, sync: SyncCache) -> None:
        self._target = target
        self._sync = sync

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._target, name)
        if not callable(value):
            return self._sync_of(value)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = value(*args, **kwargs)
            if hasattr(result, "__await__"):
                result = self._sync.result_of(result)
            return self._sync_of(result)

        return call

    def _sync_of(self, value: Any) -> Any:
        if isinstance(value, _CACHED):
            return SyncView(value, self._sync)
        if isinstance(value, AsyncView):
            return value.target
        if isinstance(value, _AsyncIterator):  # a stream that was not cached (bypassed)
            info = vars(value).get(INFO_FIELD)
            if info is not None:
                setattr(value.iterator, INFO_FIELD, info)
            return value.iterator
        if isinstance(value, EventStream):
            return SyncStream(value, self._sync)
        if value is self._sync.cache:
            return self._sync
        return value


class SyncStream:
    """A cached call's stream, read from sync code like the SDK's `Stream` (`for`,
    `with`, `close()`), carrying its `CacheInfo` as `.llm_pgcache`."""

    def __init__(self, stream: EventStream, sync: SyncCache) -> None:
        self._stream = stream
        self._sync = sync
        setattr(self, INFO_FIELD, getattr(stream, INFO_FIELD))

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return self._sync.result_of(self._stream.__anext__())
        except StopAsyncIteration:
            raise StopIteration from None

    def close(self) -> None:
        self._sync.result_of(self._stream.close())

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
