"""Chat completion streams: assembling chunks into a completion, and replaying one as chunks.

Both work on the JSON form (`model_dump(mode="json")`) of openai's types, so that what is
stored is exactly what a non-streaming call would have returned.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

# Replayed content comes in pieces of this many characters, so that a consumer that
# renders as it reads sees a stream, not one block.
REPLAY_PIECE = 64


class ChunkAccumulator:
    """Builds the `chat.completion` that a sequence of `chat.completion.chunk`s spells."""

    def __init__(self) -> None:
        self._head: dict[str, Any] = {}
        self._choices: dict[int, dict[str, Any]] = {}
        self._usage: dict[str, Any] | None = None

    def add(self, chunk: Mapping[str, Any]) -> None:
        for field in ("id", "created", "model", "system_fingerprint", "service_tier"):
            if chunk.get(field) is not None:
                self._head[field] = chunk[field]
        if chunk.get("usage"):
            self._usage = dict(chunk["usage"])
        for part in chunk.get("choices") or ():
            choice = self._choices.setdefault(
                part["index"],
                {
                    "role": None,
                    "content": [],
                    "refusal": [],
                    "tool_calls": {},
                    "finish_reason": None,
                },
            )
            delta = part.get("delta") or {}
            if delta.get("role"):
                choice["role"] = delta["role"]
            if delta.get("content"):
                choice["content"].append(delta["content"])
            if delta.get("refusal"):
                choice["refusal"].append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                _add_tool_call(choice["tool_calls"], call)
            if part.get("finish_reason"):
                choice["finish_reason"] = part["finish_reason"]

    @property
    def complete(self) -> bool:
        """Every choice seen has finished."""
        return bool(self._choices) and all(c["finish_reason"] for c in self._choices.values())

    def result(self) -> dict[str, Any]:
        """The assembled `chat.completion`, as JSON."""
        choices = []
        for index in sorted(self._choices):
            choice = self._choices[index]
            message: dict[str, Any] = {
                "role": choice["role"] or "assistant",
                "content": "".join(choice["content"]) if choice["content"] else None,
                "refusal": "".join(choice["refusal"]) if choice["refusal"] else None,
            }
            if choice["tool_calls"]:
                message["tool_calls"] = [
                    {
                        "id": call["id"],
                        "type": call["type"],
                        "function": {
                            "name": "".join(call["name"]),
                            "arguments": "".join(call["arguments"]),
                        },
                    }
                    for _, call in sorted(choice["tool_calls"].items())
                ]
            choices.append(
                {
                    "index": index,
                    "message": message,
                    "finish_reason": choice["finish_reason"],
                    "logprobs": None,
                }
            )
        return {
            "id": self._head.get("id", ""),
            "object": "chat.completion",
            "created": self._head.get("created", 0),
            "model": self._head.get("model", ""),
            "system_fingerprint": self._head.get("system_fingerprint"),
            "choices": choices,
            "usage": self._usage,
        }


def _add_tool_call(calls: dict[int, dict[str, Any]], delta: Mapping[str, Any]) -> None:
    """Merge a tool call delta: id and type once, name and arguments in pieces."""
    into = calls.setdefault(
        delta["index"], {"id": None, "type": "function", "name": [], "arguments": []}
    )
    if delta.get("id"):
        into["id"] = delta["id"]
    if delta.get("type"):
        into["type"] = delta["type"]
    function = delta.get("function") or {}
    if function.get("name"):
        into["name"].append(function["name"])
    if function.get("arguments"):
        into["arguments"].append(function["arguments"])


def replay_chunks(
    completion: Mapping[str, Any], *, include_usage: bool
) -> Iterator[dict[str, Any]]:
    """The `chat.completion.chunk`s of a stream that spells `completion`."""
    head = {
        "id": completion.get("id", ""),
        "object": "chat.completion.chunk",
        "created": completion.get("created", 0),
        "model": completion.get("model", ""),
        "system_fingerprint": completion.get("system_fingerprint"),
    }

    def chunk(
        index: int, delta: dict[str, Any], finish_reason: str | None = None
    ) -> dict[str, Any]:
        return {
            **head,
            "choices": [
                {"index": index, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
            ],
        }

    for choice in completion.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        yield chunk(index, {"role": message.get("role", "assistant"), "content": ""})
        content = message.get("content") or ""
        for start in range(0, len(content), REPLAY_PIECE):
            yield chunk(index, {"content": content[start : start + REPLAY_PIECE]})
        if message.get("refusal"):
            yield chunk(index, {"refusal": message["refusal"]})
        for position, call in enumerate(message.get("tool_calls") or ()):
            yield chunk(
                index,
                {
                    "tool_calls": [
                        {
                            "index": position,
                            "id": call.get("id"),
                            "type": call.get("type", "function"),
                            "function": call.get("function"),
                        }
                    ]
                },
            )
        yield chunk(index, {}, choice.get("finish_reason") or "stop")
    if include_usage and completion.get("usage"):
        yield {**head, "choices": [], "usage": completion["usage"]}
