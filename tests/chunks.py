"""A streamed chat completion's chunks put together, as the tests compare them."""

from __future__ import annotations

from typing import Any

from openai.types.chat import ChatCompletionChunk

from llm_pgcache.integrations.openai_chunks import ChunkAccumulator


def assembled(chunks: list[ChatCompletionChunk]) -> dict[str, Any]:
    """The completion the chunks make, by the library's own accumulator."""
    accumulator = ChunkAccumulator()
    for chunk in chunks:
        accumulator.add(chunk.model_dump(mode="json"))
    return accumulator.result()
