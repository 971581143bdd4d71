"""Anthropic message streams, on their JSON form: assembling the events of a stream into
the `Message` a non-streaming call returns, and replaying a stored one as events
(message_start, each content block's start, deltas and stop, message_delta with the
stop reason and usage, message_stop), as the Messages API streams them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from llm_pgcache.integrations.openai_chunks import REPLAY_PIECE

# Blocks whose `input` streams as pieces of JSON (`input_json_delta`).
INPUT_BLOCKS = frozenset({"tool_use", "server_tool_use"})
USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "server_tool_use",
)


class EventAccumulator:
    """Builds the `Message` that a sequence of stream events spells."""

    def __init__(self) -> None:
        self._message: dict[str, Any] | None = None
        self._inputs: dict[int, list[str]] = {}  # pieces of each input block's JSON
        self._broken = False
        self._stopped = False

    def add(self, event: Mapping[str, Any]) -> None:
        kind = event.get("type")
        if kind == "message_start":
            self._message = {**event["message"], "content": []}
            return
        message = self._message
        if message is None:  # events before message_start: not a stream we know
            self._broken = True
            return
        content: list[dict[str, Any]] = message["content"]
        if kind == "content_block_start":
            block = dict(event["content_block"])
            if block.get("type") in INPUT_BLOCKS:
                self._inputs[event["index"]] = []
            content.append(block)
        elif kind == "content_block_delta":
            self._delta(content[event["index"]], event["index"], event["delta"])
        elif kind == "content_block_stop":
            pieces = self._inputs.pop(event["index"], None)
            if pieces:
                try:
                    content[event["index"]]["input"] = json.loads("".join(pieces))
                except ValueError:
                    self._broken = True
        elif kind == "message_delta":
            delta = event.get("delta") or {}
            for field, value in delta.items():
                if value is not None:
                    message[field] = value
            usage = event.get("usage") or {}
            message["usage"] = {
                **(message.get("usage") or {}),
                **{k: v for k, v in usage.items() if v is not None},
            }
        elif kind == "message_stop":
            self._stopped = True

    def _delta(self, block: dict[str, Any], index: int, delta: Mapping[str, Any]) -> None:
        kind = delta.get("type")
        if kind == "text_delta":
            block["text"] = block.get("text", "") + delta["text"]
        elif kind == "input_json_delta":
            self._inputs.setdefault(index, []).append(delta["partial_json"])
        elif kind == "thinking_delta":
            block["thinking"] = block.get("thinking", "") + delta["thinking"]
        elif kind == "signature_delta":
            block["signature"] = delta["signature"]
        elif kind == "citations_delta":
            block["citations"] = [*(block.get("citations") or []), delta["citation"]]
        else:  # a delta this version does not know: the message cannot be rebuilt
            self._broken = True

    @property
    def complete(self) -> bool:
        """The stream ended with message_stop, after a stop reason, and was understood."""
        message = self._message
        return (
            message is not None
            and self._stopped
            and not self._broken
            and message.get("stop_reason") is not None
        )

    def result(self) -> dict[str, Any]:
        """The assembled `Message`, as JSON."""
        if self._message is None:
            raise ValueError("no message_start in this stream")
        return self._message


def replay_events(message: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """The stream events of a stream that spells `message`."""
    usage = dict(message.get("usage") or {})
    yield {
        "type": "message_start",
        "message": {
            **message,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {**usage, "output_tokens": 0},
        },
    }
    for index, block in enumerate(message.get("content") or ()):
        yield from _block_events(index, block)
    yield {
        "type": "message_delta",
        "delta": {
            "stop_reason": message.get("stop_reason"),
            "stop_sequence": message.get("stop_sequence"),
        },
        "usage": {
            "output_tokens": usage.get("output_tokens", 0),
            **{k: usage[k] for k in USAGE_FIELDS if usage.get(k) is not None},
        },
    }
    yield {"type": "message_stop"}


def _block_events(index: int, block: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    kind = block.get("type")

    def start(opened: Mapping[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_start", "index": index, "content_block": dict(opened)}

    def delta(body: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": index, "delta": body}

    if kind == "text":
        citations = block.get("citations") or []
        yield start({**block, "text": "", "citations": [] if citations else None})
        for piece in _pieces(block.get("text") or ""):
            yield delta({"type": "text_delta", "text": piece})
        for citation in citations:
            yield delta({"type": "citations_delta", "citation": citation})
    elif kind in INPUT_BLOCKS:
        yield start({**block, "input": {}})
        for piece in _pieces(json.dumps(block.get("input") or {})):
            yield delta({"type": "input_json_delta", "partial_json": piece})
    elif kind == "thinking":
        yield start({**block, "thinking": "", "signature": ""})
        for piece in _pieces(block.get("thinking") or ""):
            yield delta({"type": "thinking_delta", "thinking": piece})
        yield delta({"type": "signature_delta", "signature": block.get("signature", "")})
    else:  # blocks that arrive whole (redacted thinking, server tool results, ...)
        yield start(block)
    yield {"type": "content_block_stop", "index": index}


def _pieces(text: str) -> Iterator[str]:
    for start in range(0, len(text), REPLAY_PIECE):
        yield text[start : start + REPLAY_PIECE]
