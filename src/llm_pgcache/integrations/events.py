"""A cached call's streams, for any SDK: the upstream stream passed through and recorded
on a miss, and a stored answer replayed on a hit, both as the SDK's own event objects.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator
from types import TracebackType
from typing import Any, Self

from llm_pgcache.integrations.dialect import Dialect
from llm_pgcache.integrations.policy import INFO_FIELD, CacheInfo, info_dict
from llm_pgcache.singleflight import AbandonedError, Flight


class EventStream:
    """An async stream of an SDK's events, used like the SDK's `AsyncStream` (`async
    for`, `async with`, `close()`), carrying its `CacheInfo` as `.llm_pgcache`."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


class RecordingStream(EventStream):
    """The upstream stream, passed through event by event and stored once complete."""

    def __init__(
        self,
        upstream: Any,
        dialect: Dialect,
        flight: Flight[dict[str, Any]],
        store: Callable[[dict[str, Any]], Awaitable[None]],
        info: CacheInfo,
        *,
        hide_added: bool,
    ) -> None:
        self._upstream = upstream
        self._dialect = dialect
        self._flight = flight
        self._store = store
        self._hide_added = hide_added
        self._events = self._run()
        setattr(self, INFO_FIELD, info_dict(info))

    async def _run(self) -> AsyncGenerator[Any, None]:
        accumulator = self._dialect.accumulator()
        try:
            async for event in self._upstream:
                accumulator.add(event.model_dump(mode="json"))
                if self._hide_added and self._dialect.added(event):
                    continue
                yield event
        except BaseException as exc:  # an upstream error, or the caller stopped reading
            give_up(self._flight, exc)
            raise
        if not accumulator.complete:  # the stream ended early: nothing is stored
            self._flight.fail(AbandonedError())
            return
        body = accumulator.result()
        self._flight.finish(body)
        await self._store(body)

    async def __anext__(self) -> Any:
        return await self._events.__anext__()

    async def close(self) -> None:
        """Stop reading: the upstream response is closed and nothing is stored."""
        await self._events.aclose()
        await self._upstream.close()


class ReplayStream(EventStream):
    """A stored answer replayed as the SDK's stream events."""

    def __init__(self, events: Iterator[Any], info: CacheInfo) -> None:
        self._events = events
        setattr(self, INFO_FIELD, info_dict(info))

    async def __anext__(self) -> Any:
        try:
            return next(self._events)
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        self._events = iter(())


def give_up(flight: Flight[dict[str, Any]], exc: BaseException) -> None:
    """End a flight without a result: followers get an upstream error as their own, and
    retry by themselves when the leader was cancelled or stopped reading."""
    flight.fail(exc if isinstance(exc, Exception) else AbandonedError())
