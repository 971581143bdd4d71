"""A small OpenAI-compatible HTTP server for the tests, on 127.0.0.1.

The real `openai` client talks to it over HTTP. It counts what it is asked, can be told
to fail or to be slow, and answers deterministically:

- POST /v1/embeddings: bag-of-words vectors (each word a fixed pseudo-random direction,
  seeded by its CRC32), so texts sharing most words are close; `dimensions` is honoured.
- POST /v1/chat/completions: echoes the last user turn ("answer: ..."), with usage.
"""

from __future__ import annotations

import asyncio
import re
import socket
import time
import zlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
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

    def reset(self) -> None:
        self.calls.clear()
        self.embedded_texts.clear()
        self.fail_status = None
        self.latency = 0.0
        self.wrong_dimensions = None


def embed_text(text: str, dim: int) -> list[float]:
    vector = np.zeros(dim)
    words = [w for w in WORD.findall(text.lower()) if w not in FILLER] or [text]
    for word in words:
        rng = np.random.default_rng(zlib.crc32(word.encode()))
        vector += rng.standard_normal(dim)
    vector /= np.linalg.norm(vector)
    return [float(x) for x in vector]


def build_app(state: ServerState) -> Starlette:
    async def gate(kind: str) -> JSONResponse | None:
        state.calls[kind] += 1
        if state.latency:
            await asyncio.sleep(state.latency)
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

    async def chat_completions(request: Request) -> JSONResponse:
        if (failure := await gate("chat")) is not None:
            return failure
        body: dict[str, Any] = await request.json()
        question = body["messages"][-1]["content"]
        answer = f"answer: {question}"
        return JSONResponse(
            {
                "id": f"chatcmpl-test-{state.calls['chat']}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": body["model"],
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": answer},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": len(question.split()),
                    "completion_tokens": len(answer.split()),
                    "total_tokens": len(question.split()) + len(answer.split()),
                },
            }
        )

    return Starlette(
        routes=[
            Route("/v1/embeddings", embeddings, methods=["POST"]),
            Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        ]
    )


class OpenAIServer:
    """The server running in the test session's event loop."""

    def __init__(self) -> None:
        self.state = ServerState()
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        config = uvicorn.Config(build_app(self.state), log_level="warning", lifespan="off")
        self._server = uvicorn.Server(config)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._server.serve(sockets=[self._socket]))
        while not self._server.started:  # noqa: ASYNC110 - uvicorn offers only a flag
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self._server.should_exit = True
        if self._task is not None:
            await self._task
        self._socket.close()
