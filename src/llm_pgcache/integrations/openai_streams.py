"""The openai wrapper's streams: the upstream stream passed through and recorded on a
miss, and a stored completion replayed on a hit, both as `ChatCompletionChunk`s.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import asdict
from types import TracebackType
from typing import Any, Protocol, Self

from openai.types.chat import ChatCompletionChunk

from llm_pgcache.integrations.policy import INFO_FIELD, CacheInfo
from llm_pgcache.integrations.streams import ChunkAccumulator, replay_chunks
from llm_pgcache.singleflight import AbandonedError, Flight


class Store(Protocol):
    """Stores a complete upstream answer (the wrapper's `store`)."""

    async def __call__(
        self, request: Mapping[str, Any], body: dict[str, Any], *, upstream_ms: float
    ) -> None: ...


class ChunkStream:
    """An async stream of `ChatCompletionChunk`, used like openai's `AsyncStream`
    (`async for`, `async with`, `close()`), carrying its `CacheInfo` as `.llm_pgcache`."""

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> ChatCompletionChunk:
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


class RecordingStream(ChunkStream):
    """The upstream stream, passed through chunk by chunk and stored once complete."""

    def __init__(
        self,
        store: Store,
        flight: Flight[dict[str, Any]],
        request: Mapping[str, Any],
        upstream: Any,
        info: CacheInfo,
        *,
        hide_usage: bool,
        started: float,
    ) -> None:
        self._store = store
        self._flight = flight
        self._request = request
        self._upstream = upstream
        self._hide_usage = hide_usage
        self._started = started
        self._chunks = self._run()
        setattr(self, INFO_FIELD, asdict(info))

    @classmethod
    async def open(
        cls,
        create: Callable[..., Awaitable[Any]],
        store: Store,
        flight: Flight[dict[str, Any]],
        request: Mapping[str, Any],
        info: CacheInfo,
    ) -> RecordingStream:
        """Ask the upstream (`create`, the wrapped `chat.completions.create`) for the
        stream of `request`, led by `flight`; `store` keeps the completion once whole."""
        # Ask for usage (to count what hits save); hide it from a caller that did not.
        options = request.get("stream_options") or {}
        wants_usage = bool(options.get("include_usage"))
        sent = (
            dict(request)
            if wants_usage
            else {**request, "stream_options": {**options, "include_usage": True}}
        )
        started = time.perf_counter()
        try:
            upstream = await create(**sent)
        except BaseException as exc:
            give_up(flight, exc)
            raise
        return cls(
            store,
            flight,
            request,
            upstream,
            info,
            hide_usage=not wants_usage,
            started=started,
        )

    async def _run(self) -> AsyncGenerator[ChatCompletionChunk, None]:
        accumulator = ChunkAccumulator()
        try:
            async for chunk in self._upstream:
                accumulator.add(chunk.model_dump(mode="json"))
                if self._hide_usage and not chunk.choices and chunk.usage is not None:
                    continue
                yield chunk
        except BaseException as exc:  # an upstream error, or the caller stopped reading
            give_up(self._flight, exc)
            raise
        if not accumulator.complete:  # the stream ended early: nothing is stored
            self._flight.fail(AbandonedError())
            return
        body = accumulator.completion()
        self._flight.finish(body)
        upstream_ms = (time.perf_counter() - self._started) * 1000
        await self._store(self._request, body, upstream_ms=upstream_ms)

    async def __anext__(self) -> ChatCompletionChunk:
        return await self._chunks.__anext__()

    async def close(self) -> None:
        """Stop reading: the upstream response is closed and nothing is stored."""
        await self._chunks.aclose()
        await self._upstream.close()


class ReplayStream(ChunkStream):
    """A stored completion replayed as an async stream of `ChatCompletionChunk`."""

    def __init__(
        self, completion: Mapping[str, Any], info: CacheInfo, *, include_usage: bool
    ) -> None:
        self._chunks = iter(list(replay_chunks(completion, include_usage=include_usage)))
        setattr(self, INFO_FIELD, asdict(info))

    async def __anext__(self) -> ChatCompletionChunk:
        try:
            return ChatCompletionChunk.model_validate(next(self._chunks))
        except StopIteration:
            raise StopAsyncIteration from None

    async def close(self) -> None:
        self._chunks = iter(())


def give_up(flight: Flight[dict[str, Any]], exc: BaseException) -> None:
    """End a flight without a result: followers get an upstream error as their own, and
    retry by themselves when the leader was cancelled or stopped reading."""
    flight.fail(exc if isinstance(exc, Exception) else AbandonedError())
