"""What the proxy reads off a request: its body (size-limited), its namespace (a header,
or the tenant map), its cache controls (headers), and the headers that go upstream; and
what it says back (the `X-LLM-Cache` headers, errors as the API shapes them)."""

from __future__ import annotations

import hmac
import json
from collections.abc import AsyncIterable, AsyncIterator, Mapping
from typing import Any

from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse
from starlette.types import Receive, Scope

from llm_pgcache.errors import InvalidInputError
from llm_pgcache.server.config import NAMESPACE_HEADER, ProxyConfig, key_hash
from llm_pgcache.server.upstream import forwarded
from llm_pgcache.validation import check_namespace, check_tags, check_threshold, ttl_seconds

CONTROL_HEADER = "x-llm-cache-control"  # "no-cache", "no-store", or both
TTL_HEADER = "x-llm-cache-ttl"
TAGS_HEADER = "x-llm-cache-tags"  # comma-separated
THRESHOLD_HEADER = "x-llm-cache-threshold"
OURS = frozenset({NAMESPACE_HEADER, CONTROL_HEADER, TTL_HEADER, TAGS_HEADER, THRESHOLD_HEADER})
NOT_FORWARDED = OURS | {"accept-encoding"}


class RefusedError(Exception):
    """A request the proxy answers itself, with `status` and `message`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message)


def error_response(status: int, message: str) -> JSONResponse:
    """An error shaped as the OpenAI API shapes its own."""
    body = {"error": {"message": message, "type": "llm_pgcache_error", "code": status}}
    return JSONResponse(body, status_code=status)


async def read_body(chunks: AsyncIterable[bytes], headers: Mapping[str, str], limit: int) -> bytes:
    """The body coming in `chunks` (`request.stream()`, or `asgi_body`), refused (413)
    past `limit` bytes, declared in `headers` or not."""
    declared = headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RefusedError(413, f"request body over {limit} bytes")
    parts, size = [], 0
    async for chunk in chunks:
        size += len(chunk)
        if size > limit:
            raise RefusedError(413, f"request body over {limit} bytes")
        parts.append(chunk)
    return b"".join(parts)


async def read_json(
    chunks: AsyncIterable[bytes], headers: Mapping[str, str], limit: int
) -> dict[str, Any]:
    """The body as a JSON object (400 otherwise), as `read_body` reads it."""
    body = await read_body(chunks, headers, limit)
    try:
        value = json.loads(body)
    except ValueError:
        raise RefusedError(400, "the request body is not JSON") from None
    if not isinstance(value, dict):
        raise RefusedError(400, "the request body is not a JSON object")
    return value


def bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization", "")
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def headers_of(scope: Scope) -> dict[str, str]:
    """A request's headers as a plain dict, names in lower case (read once: each lookup
    in Starlette's `Headers` scans them all)."""
    return {name.decode("latin-1"): value.decode("latin-1") for name, value in scope["headers"]}


async def asgi_body(receive: Receive) -> AsyncIterator[bytes]:
    """A request's body as its ASGI messages bring it (`Request.stream()` without the
    request).

    Raises:
        ClientDisconnect: the caller went away first.
    """
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnect
        yield message.get("body", b"")
        if not message.get("more_body", False):
            return


def namespace_of(headers: Mapping[str, str], config: ProxyConfig) -> str | None:
    """The caller's namespace: with a tenant map, its key's (a header naming another is
    refused); else the namespace header's; None: the cache's own."""
    asked = headers.get(NAMESPACE_HEADER)
    if config.tenants is not None:
        token = bearer(headers)
        namespace = None if token is None else config.tenants.get(key_hash(token))
        if namespace is None:
            raise RefusedError(401, "this proxy does not know that API key")
        if asked is not None and asked != namespace:
            raise RefusedError(403, f"{NAMESPACE_HEADER} names a namespace that is not this key's")
        return namespace
    if asked is None:
        return None
    try:
        return check_namespace(asked)
    except InvalidInputError as exc:
        raise RefusedError(400, f"{NAMESPACE_HEADER}: {exc}") from None


def controls_of(headers: Mapping[str, str], namespace: str | None) -> dict[str, Any]:
    """The `CacheControls` the headers ask for."""
    words = {w.strip().lower() for w in headers.get(CONTROL_HEADER, "").split(",") if w.strip()}
    if unknown := words - {"no-cache", "no-store"}:
        raise RefusedError(400, f"{CONTROL_HEADER}: unknown {', '.join(sorted(unknown))}")
    controls: dict[str, Any] = {
        "namespace": namespace,
        "no_cache": "no-cache" in words,
        "no_store": "no-store" in words,
    }
    try:
        if (ttl := headers.get(TTL_HEADER)) is not None:
            controls["ttl"] = ttl_seconds(float(ttl))
        if (tags := headers.get(TAGS_HEADER)) is not None:
            controls["tags"] = check_tags([t.strip() for t in tags.split(",") if t.strip()])
        if (threshold := headers.get(THRESHOLD_HEADER)) is not None:
            controls["threshold"] = check_threshold(float(threshold))
    except (ValueError, InvalidInputError) as exc:
        raise RefusedError(400, f"a cache header is invalid: {exc}") from None
    return controls


def upstream_headers(headers: Mapping[str, str], config: ProxyConfig) -> dict[str, str]:
    """The caller's `headers` (names in lower case) as the upstream gets them: without
    ours and the hop-by-hop ones, and with the server's key in place of the caller's
    when it holds one."""
    sent = forwarded(headers, drop=NOT_FORWARDED)
    key = config.upstream_key()
    if key is not None:
        sent["authorization"] = f"Bearer {key}"
    return sent


def info_headers(info: Mapping[str, Any] | None) -> dict[str, str]:
    """What the cache did, for the caller: `X-LLM-Cache: hit|miss|bypass` and details."""
    if info is None:
        return {"x-llm-cache": "bypass", "x-llm-cache-tier": "bypass"}
    tier = str(info.get("tier"))
    headers = {
        "x-llm-cache": tier if tier in ("miss", "bypass") else "hit",
        "x-llm-cache-tier": tier,
        "x-llm-cache-lookup-ms": f"{float(info.get('lookup_ms') or 0.0):.3f}",
    }
    if info.get("similarity") is not None:
        headers["x-llm-cache-similarity"] = f"{float(info['similarity']):.4f}"
    if info.get("shared"):
        headers["x-llm-cache-shared"] = "true"
    return headers


def admin_allowed(request: Request, config: ProxyConfig) -> None:
    """Refuse an admin call without the admin token (or with the admin API off)."""
    token = config.admin_token()
    if token is None:
        raise RefusedError(404, "the admin API is off: start the proxy with --admin-token-env")
    given = bearer(request.headers)
    if given is None or not hmac.compare_digest(given.encode(), token.encode()):
        raise RefusedError(401, "the admin API needs Authorization: Bearer <admin token>")
