"""The proxy's upstream: the OpenAI-compatible API behind it, over httpx, seen as a
client whose `create` takes a call's JSON and returns JSON (a `Json` for an answer, an
`SseStream` of `Json` events for a stream), so that the cached call of the library
(`integrations.calls`) serves the proxy too. Calls are bounded in number in flight."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any, Self

import httpx

from llm_pgcache.server.flights import HostLocks

# Headers that describe one hop, never forwarded (RFC 9110 7.6.1), and those httpx sets.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "content-encoding",
    }
)


class Json(dict[str, Any]):
    """A JSON object standing where the library expects an SDK object."""

    def model_dump(self, **_: Any) -> dict[str, Any]:
        return dict(self)


class UpstreamError(Exception):
    """The upstream answered with an error status: handed to the caller as it came."""

    def __init__(self, status: int, content: bytes, headers: Mapping[str, str]) -> None:
        super().__init__(f"upstream answered {status}")
        self.status = status
        self.content = content
        self.headers = dict(headers)


class Upstream:
    """An httpx client on the upstream base URL, with at most `max_in_flight` calls;
    `locks` make identical calls of the host's workers one (`flights`)."""

    def __init__(
        self, base_url: str, *, timeout: float, max_in_flight: int, locks: HostLocks
    ) -> None:
        self.timeout = timeout
        self.locks = locks
        self.http = httpx.AsyncClient(
            base_url=base_url.rstrip("/") + "/",
            timeout=httpx.Timeout(timeout, connect=min(timeout, 10.0)),
            limits=httpx.Limits(max_connections=max_in_flight),
        )
        self.slots = asyncio.Semaphore(max_in_flight)

    async def close(self) -> None:
        await self.http.aclose()

    def endpoint(self, path: str) -> Endpoint:
        return Endpoint(self, path)


class Endpoint:
    """One JSON endpoint (`chat/completions`, `embeddings`) as an SDK resource: `create`
    takes the call's fields, and its headers as `extra_headers` (outside every key)."""

    def __init__(self, upstream: Upstream, path: str) -> None:
        self._upstream = upstream
        self._path = path

    async def create(self, **call: Any) -> Json | SseStream:
        headers = dict(call.pop("extra_headers", None) or {})
        upstream = self._upstream
        request = upstream.http.build_request("POST", self._path, json=call, headers=headers)
        await upstream.slots.acquire()  # held until the answer is read (or the stream ends)
        streaming = False
        try:
            response = await upstream.http.send(request, stream=True)
            if response.status_code >= 400:
                content = await response.aread()
                await response.aclose()
                raise UpstreamError(response.status_code, content, response.headers)
            if call.get("stream") is True:
                streaming = True
                return SseStream(response, upstream.slots.release)
            try:
                body = json.loads(await response.aread())
            finally:
                await response.aclose()
        finally:
            if not streaming:
                upstream.slots.release()
        if not isinstance(body, dict):
            raise UpstreamError(502, b'{"error": {"message": "upstream answered no object"}}', {})
        return Json(body)


class SseStream:
    """An upstream stream of server-sent events: each `data:` line's JSON as a `Json`,
    until `[DONE]`; `release` is called once, when it ends or is closed."""

    def __init__(self, response: httpx.Response, release: Callable[[], None]) -> None:
        self._response = response
        self._release: Callable[[], None] | None = release
        self._events = self._read()

    async def _read(self) -> AsyncIterator[Json]:
        try:
            async for line in self._response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    return
                event = json.loads(data)
                if isinstance(event, dict):
                    yield Json(event)
        finally:
            await self.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Json:
        return await self._events.__anext__()

    async def close(self) -> None:
        await self._response.aclose()
        release, self._release = self._release, None
        if release is not None:
            release()


def forwarded(headers: Mapping[str, str], *, drop: frozenset[str] = frozenset()) -> dict[str, str]:
    """`headers` without the hop-by-hop ones (and `drop`)."""
    return {k: v for k, v in headers.items() if k.lower() not in HOP_BY_HOP | drop}
