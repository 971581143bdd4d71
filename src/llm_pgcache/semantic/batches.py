"""Embeddings in batches: texts asked for while an embedder call is under way share the
next call (`rounds.Rounds`).

A text that finds fewer than `in_flight` calls running goes at once, with whatever else
came in the same turn of the event loop; otherwise it waits for a call to return, and the
next call takes every text that waited meanwhile (up to `max_batch`). A local model then
embeds 32 concurrent lookups' texts in a few batched calls instead of 32, and an API
embedder makes fewer requests. Each text gets its own vector or its own error: one
unusable vector fails only the lookup it belongs to.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import numpy as np
import numpy.typing as npt

from llm_pgcache.errors import InvalidEmbeddingError
from llm_pgcache.rounds import Rounds
from llm_pgcache.semantic.vectors import check_vector

Vector = npt.NDArray[np.float32]


class EmbeddingBatches:
    """One embedder's texts, gathered into batched calls of `embed_many` (`Rounds`)."""

    def __init__(
        self,
        embed_many: Callable[[list[str]], Awaitable[npt.NDArray[np.float32]]],
        *,
        in_flight: int = 2,
        max_batch: int = 64,
    ) -> None:
        self._embed_many = embed_many
        self._rounds: Rounds[str, Vector] = Rounds(
            self._call, rounds=in_flight, max_batch=max_batch
        )
        self.calls = 0  # embedder calls made (for tests and benchmarks)

    async def embed(self, text: str) -> Vector:
        """The embedding of `text`, from the batch it joins.

        Raises:
            EmbedderError: the embedder failed.
            InvalidEmbeddingError, EmbeddingDimensionError: its vectors are unusable.
        """
        return await self._rounds.join(text, None)

    async def close(self) -> None:
        """Fail the texts waiting for a call and stop the calls under way."""
        await self._rounds.close()

    async def _call(self, texts: list[str], budget: float | None) -> list[Vector | Exception]:
        self.calls += 1
        vectors = await self._embed_many(texts)
        outcomes: list[Vector | Exception] = []
        for vector in vectors:
            try:
                check_vector(vector)
            except InvalidEmbeddingError as exc:  # this text's alone
                outcomes.append(exc)
            else:
                outcomes.append(vector)
        return outcomes
