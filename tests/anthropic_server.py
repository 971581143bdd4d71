"""A small Anthropic-compatible HTTP server for the tests, on 127.0.0.1.

The real `anthropic` client talks to it over HTTP (`POST /v1/messages`, JSON or SSE
streams with named events, a ping among them, as the Messages API sends them). It
echoes the last user turn ("answer: ..."); "[tool]" in the question asks for a tool_use
block, "[think]" for a thinking block before the text, "[refuse]" for a refusal,
"[pause]" for a paused turn, "[length]" for max_tokens, "[break]" for a stream that
breaks off midway (a 500 when not streaming) and "[error]" for an `error` event midway.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from .openai_server import LocalServer


@dataclass
class AnthropicState:
    calls: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    fail_status: int | None = None
    latency: float = 0.0

    def reset(self) -> None:
        self.calls.clear()
        self.bodies.clear()
        self.fail_status = None
        self.latency = 0.0


def last_text(body: dict[str, Any]) -> str:
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(block.get("text", "") for block in content if block.get("type") == "text")


def message(body: dict[str, Any], number: int) -> dict[str, Any]:
    question = last_text(body)
    content: list[dict[str, Any]] = []
    stop_reason = "end_turn"
    if "[think]" in question:
        content.append({"type": "thinking", "thinking": "Let me think.", "signature": "sig-1"})
    content.append({"type": "text", "text": f"answer: {question}", "citations": None})
    if "[tool]" in question:
        content.append(
            {
                "type": "tool_use",
                "id": "toolu_1",
                "name": "get_weather",
                "input": {"city": "Paris", "unit": "C"},
            }
        )
        stop_reason = "tool_use"
    elif "[refuse]" in question:
        content = []
        stop_reason = "refusal"
    elif "[pause]" in question:
        stop_reason = "pause_turn"
    elif "[length]" in question:
        stop_reason = "max_tokens"
    return {
        "id": f"msg_test_{number}",
        "type": "message",
        "role": "assistant",
        "model": body["model"],
        "content": content,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": len(question.split()),
            "output_tokens": len(question.split()) + 1,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        },
    }


def event(name: str, data: dict[str, Any]) -> str:
    return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n"


async def sse(answer: dict[str, Any], *, breaks: bool, errors: bool) -> AsyncIterator[str]:
    """The message as the API streams it: text word by word, tool input in pieces."""
    usage = answer["usage"]
    start = {**answer, "content": [], "stop_reason": None, "usage": {**usage, "output_tokens": 1}}
    yield event("message_start", {"message": start})
    yield event("ping", {})
    for index, block in enumerate(answer["content"]):
        if block["type"] == "text":
            yield event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
            for n, word in enumerate(block["text"].split(" ")):
                piece = word if n == 0 else f" {word}"
                yield event(
                    "content_block_delta",
                    {"index": index, "delta": {"type": "text_delta", "text": piece}},
                )
                if n == 1 and breaks:
                    raise ConnectionResetError("the upstream broke off midway")
                if n == 1 and errors:
                    yield event(
                        "error", {"error": {"type": "overloaded_error", "message": "Overloaded"}}
                    )
                    return
        elif block["type"] == "tool_use":
            opened = {**block, "input": {}}
            yield event("content_block_start", {"index": index, "content_block": opened})
            arguments = json.dumps(block["input"])
            for at in range(0, len(arguments), 5):
                delta = {"type": "input_json_delta", "partial_json": arguments[at : at + 5]}
                yield event("content_block_delta", {"index": index, "delta": delta})
        elif block["type"] == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            yield event("content_block_start", {"index": index, "content_block": opened})
            delta = {"type": "thinking_delta", "thinking": block["thinking"]}
            yield event("content_block_delta", {"index": index, "delta": delta})
            delta = {"type": "signature_delta", "signature": block["signature"]}
            yield event("content_block_delta", {"index": index, "delta": delta})
        yield event("content_block_stop", {"index": index})
    yield event(
        "message_delta",
        {
            "delta": {"stop_reason": answer["stop_reason"], "stop_sequence": None},
            "usage": {"output_tokens": usage["output_tokens"]},
        },
    )
    yield event("message_stop", {})


def build_app(state: AnthropicState) -> Starlette:
    async def messages(request: Request) -> Response:
        state.calls["messages"] += 1
        if state.latency:
            await asyncio.sleep(state.latency)
        if state.fail_status is not None:
            return JSONResponse(
                {"type": "error", "error": {"type": "api_error", "message": "injected"}},
                status_code=state.fail_status,
            )
        body: dict[str, Any] = await request.json()
        state.bodies.append(body)
        answer = message(body, state.calls["messages"])
        question = last_text(body)
        if not body.get("stream"):
            if "[break]" in question:
                return JSONResponse(
                    {"type": "error", "error": {"type": "api_error", "message": "broken"}},
                    status_code=500,
                )
            return JSONResponse(answer)
        return StreamingResponse(
            sse(answer, breaks="[break]" in question, errors="[error]" in question),
            media_type="text/event-stream",
        )

    return Starlette(routes=[Route("/v1/messages", messages, methods=["POST"])])


class AnthropicServer(LocalServer):
    """The Anthropic-compatible server, with its state."""

    def __init__(self) -> None:
        self.state = AnthropicState()
        super().__init__(build_app(self.state), lifespan=False)
