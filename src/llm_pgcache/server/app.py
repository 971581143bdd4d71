"""`llm-pgcache serve`: an OpenAI-compatible caching proxy, as an ASGI app (uvicorn).

- `POST /v1/chat/completions`: the library's cached call (`integrations.calls`) over the
  upstream's JSON: hits answered from the cache (JSON, or `stream: true` replayed as
  server-sent events), misses forwarded and passed through chunk by chunk, stored when
  complete; errors, refusals and cut streams never stored; a cache that fails is a miss.
- `POST /v1/embeddings`: each input item cached on its own.
- any other `/v1/*`: forwarded as it is.
- `/healthz` (the process is up), `/readyz` (PostgreSQL answers, schema current),
  `/metrics` (Prometheus), and the admin API behind a token: `GET /cache/stats`,
  `POST /cache/invalidate`, its description at `GET /cache/openapi.json`.

Prompts are never logged.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from llm_pgcache.cache.facade import Cache
from llm_pgcache.errors import LLMPgCacheError
from llm_pgcache.integrations.calls import CachedClient
from llm_pgcache.integrations.events import EventStream
from llm_pgcache.integrations.openai import ChatCompletions
from llm_pgcache.integrations.openai_chunks import replay_chunks
from llm_pgcache.integrations.openai_embeddings import CachedEmbeddings
from llm_pgcache.integrations.policy import INFO_FIELD
from llm_pgcache.semantic.embedders import named_embedder
from llm_pgcache.server import admin
from llm_pgcache.server.config import ProxyConfig
from llm_pgcache.server.flights import HostLeadCreate, HostLocks
from llm_pgcache.server.requests import (
    RefusedError,
    asgi_body,
    controls_of,
    error_response,
    headers_of,
    info_headers,
    namespace_of,
    read_body,
    read_json,
    upstream_headers,
)
from llm_pgcache.server.upstream import (
    Json,
    SseStream,
    Upstream,
    UpstreamError,
    UpstreamUnreachableError,
    forwarded,
)
from llm_pgcache.tiers.memory import MemoryTier
from llm_pgcache.tiers.redis import RedisTier

logger = logging.getLogger(__name__)
MAX_CLIENTS = 4096  # per-request clients kept (by their controls), then made anew
Resource = Callable[["ProxyClient"], Any]  # a cached route's resource of a client


class ProxyChat(ChatCompletions):
    """The chat dialect on the upstream's JSON instead of openai's objects."""

    def answer_of(self, body: Mapping[str, Any]) -> Json:
        return Json(body)

    def added(self, event: Any) -> bool:
        return not event.get("choices") and event.get("usage") is not None

    def replay(self, body: Mapping[str, Any], call: Mapping[str, Any]) -> Iterator[Json]:
        options = call.get("stream_options") or {}
        for chunk in replay_chunks(body, include_usage=bool(options.get("include_usage"))):
            yield Json(chunk)


class ProxyEmbeddings(CachedEmbeddings):
    """Per-item embeddings on the upstream's JSON (vectors as floats or base64 text,
    as the caller's `encoding_format` asked)."""

    def vectors_of(self, answer: Any) -> list[Any] | None:
        data = answer.get("data")
        if not isinstance(data, list):
            return None
        return [item.get("embedding") for item in sorted(data, key=lambda d: d.get("index", 0))]

    def usage_of(self, answer: Any) -> Any:
        return answer.get("usage")

    def respond(self, vectors: list[Any], model: str, usage: Any) -> Json:
        return Json(
            {
                "object": "list",
                "data": [
                    {"object": "embedding", "index": i, "embedding": vector}
                    for i, vector in enumerate(vectors)
                ],
                "model": model,
                "usage": usage or {"prompt_tokens": 0, "total_tokens": 0},
            }
        )


class ProxyClient(CachedClient):
    """The cached calls of the proxy, over its `Upstream`."""

    def __init__(self, client: Upstream, cache: Cache, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, cache, *args, **kwargs)
        self.completions = HostLeadCreate(
            client.endpoint("chat/completions"),
            self,
            ProxyChat(),
            client.locks,
            timeout=client.timeout,
        )
        self.embeddings = ProxyEmbeddings(client.endpoint("embeddings"), self)


class Proxy:
    """The proxy's parts, opened by the app's lifespan."""

    def __init__(self, config: ProxyConfig) -> None:
        self.config = config
        self._client: ProxyClient | None = None
        self._clients: dict[tuple[tuple[str, Any], ...], ProxyClient] = {}
        self._upstream: Upstream | None = None

    @property
    def client(self) -> ProxyClient:
        if self._client is None:
            raise RuntimeError("the proxy is not started")
        return self._client

    @property
    def cache(self) -> Cache:
        return self.client.cache

    @property
    def upstream(self) -> Upstream:
        if self._upstream is None:
            raise RuntimeError("the proxy is not started")
        return self._upstream

    def started(self, cache: Cache, upstream: Upstream) -> None:
        self._client = ProxyClient.around(upstream, cache)
        self._upstream = upstream

    def _client_for(self, controls: dict[str, Any]) -> ProxyClient:
        """The client with these per-request controls: made once for each set of them
        (there are few: namespaces times header values), not for every request."""
        memo = tuple((name, tuple(v) if isinstance(v, list) else v) for name, v in controls.items())
        client = self._clients.get(memo)
        if client is None:
            if len(self._clients) >= MAX_CLIENTS:
                self._clients.clear()
            client = self._clients[memo] = self.client.with_cache(**controls)
        return client

    async def cached(self, scope: Scope, receive: Receive, resource: Resource) -> Response:
        """The answer to a call of a cached route (`resource` of the client its headers
        ask for), read straight off the ASGI messages."""
        config = self.config
        try:
            headers = headers_of(scope)
            namespace = namespace_of(headers, config)
            body = await read_json(asgi_body(receive), headers, config.max_body_bytes)
            call = {**body, "extra_headers": upstream_headers(headers, config)}
            client = self._client_for(controls_of(headers, namespace))
            result = await resource(client).create(**call)
        except UpstreamError as exc:
            return Response(exc.content, exc.status, headers=forwarded(exc.headers))
        except UpstreamUnreachableError as exc:
            return error_response(502, f"the upstream did not answer: {exc}")
        except (RefusedError, LLMPgCacheError) as exc:
            return refusal(exc)
        info = info_headers(getattr(result, INFO_FIELD, None))
        if isinstance(result, EventStream | SseStream):
            return StreamingResponse(events(result), media_type="text/event-stream", headers=info)
        return JSONResponse(dict(result), headers=info)

    async def passthrough(self, request: Request) -> Response:
        """Any other `/v1/*` route, forwarded as it is (streamed back)."""
        config = self.config
        headers = headers_of(request.scope)
        namespace_of(headers, config)  # with a tenant map, unknown keys go no further
        body = await read_body(request.stream(), headers, config.max_body_bytes)
        try:
            response, release = await self.upstream.open(
                request.method,
                request.url.path.removeprefix("/v1/"),
                headers=upstream_headers(headers, config),
                query=request.url.query,
                body=body,
            )
        except UpstreamUnreachableError as exc:
            return error_response(502, f"the upstream did not answer: {exc}")

        async def relay() -> AsyncIterator[bytes]:
            try:
                async for chunk in response.content.iter_any():
                    yield chunk
            finally:
                response.release()
                release()

        headers = forwarded(response.headers)
        headers.update(info_headers(None))
        return StreamingResponse(relay(), status_code=response.status, headers=headers)


async def events(stream: Any) -> AsyncIterator[bytes]:
    """A stream as server-sent events, ending with `[DONE]` when it ended whole (a cut
    upstream stream is cut here too)."""
    try:
        async for event in stream:
            yield b"data: " + json.dumps(dict(event), separators=(",", ":")).encode() + b"\n\n"
        yield b"data: [DONE]\n\n"
    except Exception as exc:  # the upstream broke off: so does the caller's stream
        logger.warning("llm-pgcache proxy: an upstream stream broke off: %s", type(exc).__name__)
    finally:
        await stream.close()


def refusal(exc: RefusedError | LLMPgCacheError) -> Response:
    """A refused request, or one our own checks failed, as a JSON error response."""
    if isinstance(exc, RefusedError):
        return exc.response()
    return error_response(400, str(exc).splitlines()[0] if str(exc) else type(exc).__name__)


def handled(
    handler: Callable[[Request], Awaitable[Response]],
) -> Callable[[Request], Awaitable[Response]]:
    """`handler`, with `RefusedError` and our own errors as JSON error responses."""

    async def run(request: Request) -> Response:
        try:
            return await handler(request)
        except (RefusedError, LLMPgCacheError) as exc:
            return refusal(exc)

    return run


class ProxyApp:
    """The proxy as an ASGI app. The cached routes, which nearly every request of a
    client of the proxy calls, are served as bare ASGI handlers: no router or middleware
    on the way (they took a third of a hit's CPU); everything else goes through
    Starlette (its lifespan opens the proxy's parts)."""

    def __init__(self, proxy: Proxy, rest: Starlette) -> None:
        self._proxy = proxy
        self._rest = rest
        self._cached: dict[str, Resource] = {
            "/v1/chat/completions": lambda client: client.completions,
            "/v1/embeddings": lambda client: client.embeddings,
        }

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            resource = self._cached.get(scope["path"])
            if resource is not None:
                response = await self._proxy.cached(scope, receive, resource)
                await response(scope, receive, send)
                return
        await self._rest(scope, receive, send)


async def open_cache(config: ProxyConfig) -> Cache:
    """The proxy's cache: `cache_options`, the tiers `config` asks for, and the embedder
    it names (made for the table's dimension, read off the table first)."""
    options: dict[str, Any] = dict(config.cache_options)
    if config.memory_entries > 0:
        options["memory"] = MemoryTier(max_entries=config.memory_entries)
    if config.redis_url is not None:
        options["redis"] = RedisTier(config.redis_url)
    if config.embedder is not None:
        async with Cache.connect(config.dsn, min_size=1, max_size=1) as probe:
            options["embedder"] = named_embedder(config.embedder, probe.embedding_dim)
    cache: Cache = await Cache.connect(config.dsn, **options)
    return cache


def create_app(config: ProxyConfig | None = None, *, cache: Cache | None = None) -> ProxyApp:
    """The proxy app. `config`: from `ProxyConfig.from_env()` when not given (the workers
    of `serve`); `cache`: an open cache to use (not closed), else one opened at startup."""
    proxy = Proxy(config or ProxyConfig.from_env())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        settings = proxy.config
        opened = cache or await open_cache(settings)
        upstream = Upstream(
            settings.upstream,
            timeout=settings.upstream_timeout,
            max_in_flight=settings.max_upstream_in_flight,
            locks=HostLocks(Path(settings.flight_dir) if settings.flight_dir else None),
        )
        proxy.started(opened, upstream)
        try:
            yield
        finally:
            await upstream.close()
            if cache is None:
                await opened.close()

    routes = [
        Route(
            "/v1/{path:path}",
            handled(proxy.passthrough),
            methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        ),
        *admin.routes(lambda: proxy.cache, proxy.config, handled),
    ]
    return ProxyApp(proxy, Starlette(routes=routes, lifespan=lifespan))
