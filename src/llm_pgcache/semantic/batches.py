"""Embeddings in batches: texts asked for while an embedder call is under way share the
next call.

A text that finds fewer than `in_flight` calls running goes at once, with whatever else
came in the same turn of the event loop; otherwise it waits for a call to return, and the
next call takes every text that waited meanwhile (up to `max_batch`). A local model then
embeds 32 concurrent lookups' texts in a few batched calls instead of 32, and an API
embedder makes fewer requests. Each text gets its own vector or its own error: one
unusable vector fails only the lookup it belongs to.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

from llm_pgcache.errors import EmbedderError, InvalidEmbeddingError
from llm_pgcache.semantic.embedders import check_values

Vector = npt.NDArray[np.float32]


class _Waiting(NamedTuple):
    text: str
    future: asyncio.Future[Vector]


class EmbeddingBatches:
    """One embedder's texts, gathered into batched calls of `embed_many`."""

    def __init__(
        self,
        embed_many: Callable[[list[str]], Awaitable[npt.NDArray[np.float32]]],
        *,
        in_flight: int = 2,
        max_batch: int = 64,
    ) -> None:
        self._embed_many = embed_many
        self._limit = in_flight
        self._max_batch = max_batch
        self._in_flight = 0
        self._waiting: list[_Waiting] = []
        self._scheduled = False
        self.calls = 0  # embedder calls made (for tests and benchmarks)

    async def embed(self, text: str) -> Vector:
        """The embedding of `text`, from the batch it joins.

        Raises:
            EmbedderError: the embedder failed.
            InvalidEmbeddingError, EmbeddingDimensionError: its vectors are unusable.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Vector] = loop.create_future()
        self._waiting.append(_Waiting(text, future))
        if not self._scheduled and self._in_flight < self._limit:
            self._scheduled = True
            loop.call_soon(self._flush)  # the texts of this turn join the batch
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        while self._in_flight < self._limit and self._waiting:
            batch = [w for w in self._waiting[: self._max_batch] if not w.future.done()]
            del self._waiting[: self._max_batch]
            if batch:
                self._in_flight += 1
                asyncio.get_running_loop().create_task(self._call(batch))

    async def _call(self, batch: list[_Waiting]) -> None:
        try:
            self.calls += 1
            vectors = await self._embed_many([w.text for w in batch])
        except BaseException as exc:
            failure = exc if isinstance(exc, Exception) else EmbedderError("cancelled")
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(failure)
            if failure is not exc:
                raise
        else:
            for waiting, vector in zip(batch, vectors, strict=True):
                if waiting.future.done():
                    continue
                try:
                    check_values(vector[np.newaxis, :])
                except InvalidEmbeddingError as exc:  # this text's alone
                    waiting.future.set_exception(exc)
                else:
                    waiting.future.set_result(vector)
        finally:
            self._in_flight -= 1
            if self._waiting and not self._scheduled:
                self._flush()
