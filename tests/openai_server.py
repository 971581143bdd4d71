"""A small OpenAI-compatible HTTP server for the tests, on 127.0.0.1.

The real `openai` client talks to it over HTTP. It counts what it is asked, can be told
to fail or to be slow, and answers deterministically:

- POST /v1/embeddings: bag-of-words vectors (each word a fixed pseudo-random direction,
  seeded by its CRC32), so texts sharing most words are close; `dimensions` is honoured.
- POST /v1/chat/completions: echoes the last user turn ("answer: ..."), with usage, as
  JSON or as an SSE stream; a judge's question ("Stored question: ... New question: ...")
  is answered "yes" when both questions have the same words (in any order, fillers
  aside), else "no" (or `judge_reply`, when set); "[tool]", "[refuse]", "[length]",
  "[filter]" in the question ask for a tool call, a refusal, a truncated or a filtered
  answer, and "[break]" for a stream that breaks off midway (a 500 when not streaming).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import socket
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

WORD = re.compile(r"[a-z0-9]+")
FILLER = frozenset({"a", "an", "the", "is", "of", "what", "s", "whats", "please"})


@dataclass
class ServerState:
    """What the server was asked, and how it should behave next."""

    calls: Counter[str] = field(default_factory=Counter)
    embedded_texts: list[str] = field(default_factory=list)
    fail_status: int | None = None  # answer every request with this HTTP status
    latency: float = 0.0  # seconds to wait before answering
    wrong_dimensions: int | None = None  # return vectors of this size instead
    hold: asyncio.Event | None = None  # streams pause after their first word until set
    chat_bodies: list[dict[str, Any]] = field(default_factory=list)  # as received
    chat_headers: list[dict[str, str]] = field(default_factory=list)  # as received
    judge_reply: str | None = None  # what judges are told instead of yes or no
    in_flight: int = 0  # requests being answered now
    most_in_flight: int = 0  # the most at once since the last reset

    def reset(self) -> None:
        self.calls.clear()
        self.embedded_texts.clear()
        self.fail_status = None
        self.latency = 0.0
        self.wrong_dimensions = None
        self.hold = None
        self.chat_bodies.clear()
        self.chat_headers.clear()
        self.judge_reply = None
        self.in_flight = 0
        self.most_in_flight = 0


def embed_text(text: str, dim: int) -> list[float]:
    vector = np.zeros(dim)
    words = [w for w in WORD.findall(text.lower()) if w not in FILLER] or [text]
    for word in words:
        rng = np.random.default_rng(zlib.crc32(word.encode()))
        vector += rng.standard_normal(dim)
    vector /= np.linalg.norm(vector)
    return [float(x) for x in vector]


STORED_QUESTION = re.compile(r"^Stored question: (.*)$", re.MULTILINE)
NEW_QUESTION = re.compile(r"^New question: (.*)$", re.MULTILINE)


def words(text: str) -> Counter[str]:
    return Counter(w for w in WORD.findall(text.lower()) if w not in FILLER)


def verdict(question: str) -> str | None:
    """A judge's answer: whether the stored and the new question have the same words."""
    stored, new = STORED_QUESTION.search(question), NEW_QUESTION.search(question)
    if stored is None or new is None:
        return None
    return "yes" if words(stored.group(1)) == words(new.group(1)) else "no"


def question_of(body: dict[str, Any]) -> str:
    """The last turn's text (its text parts, when it has parts)."""
    content = body["messages"][-1]["content"]
    if isinstance(content, str):
        return content
    return " ".join(part.get("text", "") for part in content if part.get("type") == "text")


def answer(body: dict[str, Any], number: int, judge_reply: str | None = None) -> dict[str, Any]:
    """The completion for a request; directives in the question pick its kind."""
    question = question_of(body)
    judged = verdict(question)
    message: dict[str, Any] = {
        "role": "assistant",
        "content": f"answer: {question}" if judged is None else (judge_reply or judged),
        "refusal": None,
    }
    finish_reason = "stop"
    if "[tool]" in question:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": "call_1",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "C"}'},
            }
        ]
        finish_reason = "tool_calls"
    elif "[refuse]" in question:
        message["content"] = None
        message["refusal"] = "I can't help with that."
    elif "[length]" in question:
        finish_reason = "length"
    elif "[filter]" in question:
        finish_reason = "content_filter"
    prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"])
    completion_tokens = len((message["content"] or "").split()) + 1
    return {
        "id": f"chatcmpl-test-{number}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "system_fingerprint": "fp_test",
        "choices": [
            {"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


async def sse(
    completion: dict[str, Any], *, include_usage: bool, breaks: bool, hold: asyncio.Event | None
) -> AsyncIterator[str]:
    """The completion as the API streams it: role, content word by word, tool calls in
    pieces, the finish reason, then usage when asked for."""
    head = {k: completion[k] for k in ("id", "created", "model", "system_fingerprint")}
    head["object"] = "chat.completion.chunk"
    choice = completion["choices"][0]
    message = choice["message"]

    def event(delta: dict[str, Any], finish_reason: str | None = None) -> str:
        chunk = {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}]}
        return f"data: {json.dumps(chunk)}\n\n"

    yield event({"role": "assistant", "content": ""})
    for n, word in enumerate((message["content"] or "").split(" ")):
        yield event({"content": word if n == 0 else f" {word}"})
        if hold is not None and n == 0:
            await hold.wait()
        if breaks and n == 1:
            raise ConnectionResetError("the upstream broke off midway")
    if message["refusal"]:
        yield event({"refusal": message["refusal"]})
    for i, call in enumerate(message.get("tool_calls") or ()):
        arguments = call["function"]["arguments"]
        yield event(
            {
                "tool_calls": [
                    {
                        "index": i,
                        "id": call["id"],
                        "type": "function",
                        "function": {"name": call["function"]["name"], "arguments": ""},
                    }
                ]
            }
        )
        for start in range(0, len(arguments), 7):
            piece = arguments[start : start + 7]
            yield event({"tool_calls": [{"index": i, "function": {"arguments": piece}}]})
    yield event({}, choice["finish_reason"])
    if include_usage:
        yield f"data: {json.dumps({**head, 'choices': [], 'usage': completion['usage']})}\n\n"
    yield "data: [DONE]\n\n"


def build_app(state: ServerState) -> Starlette:
    async def gate(kind: str) -> JSONResponse | None:
        state.calls[kind] += 1
        state.in_flight += 1
        state.most_in_flight = max(state.most_in_flight, state.in_flight)
        try:
            if state.latency:
                await asyncio.sleep(state.latency)
        finally:
            state.in_flight -= 1
        if state.fail_status is not None:
            return JSONResponse(
                {"error": {"message": "injected failure", "type": "server_error"}},
                status_code=state.fail_status,
            )
        return None

    async def embeddings(request: Request) -> JSONResponse:
        if (failure := await gate("embeddings")) is not None:
            return failure
        body: dict[str, Any] = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        # token arrays: their numbers as words
        texts = [t if isinstance(t, str) else " ".join(map(str, t)) for t in texts]
        state.embedded_texts.extend(texts)
        dim = state.wrong_dimensions or body.get("dimensions") or 1536
        data = [
            {"object": "embedding", "index": i, "embedding": embed_text(text, dim)}
            for i, text in enumerate(texts)
        ]
        data.reverse()  # the API does not promise order: clients must sort by index
        return JSONResponse(
            {
                "object": "list",
                "data": data,
                "model": body["model"],
                "usage": {"prompt_tokens": len(texts), "total_tokens": len(texts)},
            }
        )

    async def chat_completions(request: Request) -> Response:
        if (failure := await gate("chat")) is not None:
            return failure
        body: dict[str, Any] = await request.json()
        state.chat_bodies.append(body)
        state.chat_headers.append(dict(request.headers))
        completion = answer(body, state.calls["chat"], state.judge_reply)
        if not body.get("stream"):
            if "[break]" in question_of(body):
                return JSONResponse({"error": {"message": "broken"}}, status_code=500)
            return JSONResponse(completion)
        options = body.get("stream_options") or {}
        breaks = "[break]" in question_of(body)
        return StreamingResponse(
            sse(
                completion,
                include_usage=bool(options.get("include_usage")),
                breaks=breaks,
                hold=state.hold,
            ),
            media_type="text/event-stream",
        )

    async def models(request: Request) -> JSONResponse:
        state.calls["models"] += 1
        model = {"id": "gpt-4o-mini", "object": "model", "created": 0, "owned_by": "test"}
        return JSONResponse({"object": "list", "data": [model]})

    return Starlette(
        routes=[
            Route("/v1/models", models, methods=["GET"]),
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ]
    )


class LocalServer:
    """An ASGI app served by uvicorn on 127.0.0.1 (a free port), in the running loop."""

    def __init__(self, app: Any, *, lifespan: bool = True) -> None:
        self._lifespan = lifespan
        # IPPROTO_TCP: asyncio sets TCP_NODELAY on accepted connections only then
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(app, log_level="warning", lifespan="on" if lifespan else "off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:
            if self._task.done():
                self._task.result()  # startup failed: raise why
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Stop; an app with a lifespan runs its shutdown (closing its cache). A server
        without one does not wait for idle keep-alive connections: a test's need not."""
        self._server.should_exit = True
        self._server.force_exit = not self._lifespan
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), 5.0 if self._lifespan else 1.0)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
        self._socket.close()


class OpenAIServer(LocalServer):
    """The OpenAI-compatible server, with its state."""

    def __init__(self) -> None:
        self.state = ServerState()
        super().__init__(build_app(self.state), lifespan=False)
        self.base_url = f"{self.url}/v1"
