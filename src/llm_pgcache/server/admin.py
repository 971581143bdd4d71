"""The proxy's own routes: probes and metrics (open), and the admin API (behind the admin
token): stats, invalidation, and the OpenAPI description of both."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from llm_pgcache.cache.facade import Cache
from llm_pgcache.errors import BackendError, SchemaError
from llm_pgcache.server.config import ProxyConfig
from llm_pgcache.server.requests import RefusedError, admin_allowed, error_response, read_json

Handler = Callable[[Request], Awaitable[Response]]
READY_BUDGET = 2.0  # seconds /readyz waits for PostgreSQL
ADMIN_BODY_LIMIT = 64 * 1024


def routes(
    cache_of: Callable[[], Cache], config: ProxyConfig, handled: Callable[[Handler], Handler]
) -> list[Route]:
    """The proxy's own routes, over its cache (`cache_of()`, open once the app started)."""

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        try:
            await cache_of().ready(READY_BUDGET)
        except (BackendError, SchemaError) as exc:
            return JSONResponse({"status": "unavailable", "reason": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(request: Request) -> Response:
        try:
            from prometheus_client import (  # noqa: PLC0415 - the `prometheus` extra
                CONTENT_TYPE_LATEST,
                CollectorRegistry,
                generate_latest,
            )
        except ImportError:
            return error_response(404, "metrics need the `prometheus` extra")
        from llm_pgcache.integrations.prometheus import CacheCollector  # noqa: PLC0415

        registry = CollectorRegistry()
        registry.register(CacheCollector(cache_of()))
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    async def stats(request: Request) -> Response:
        admin_allowed(request, config)
        namespace = request.query_params.get("namespace")
        found = await cache_of().stats(namespace=namespace)
        return JSONResponse(json.loads(json.dumps(dataclasses.asdict(found), default=_jsonable)))

    async def invalidate(request: Request) -> Response:
        admin_allowed(request, config)
        body = await read_json(request.stream(), request.headers, ADMIN_BODY_LIMIT)
        unknown = set(body) - {"key", "tag", "model", "namespace"}
        if unknown:
            raise RefusedError(400, f"unknown fields: {', '.join(sorted(unknown))}")
        key = body.get("key")
        if isinstance(key, str):  # the hex of an exact key
            try:
                key = bytes.fromhex(key)
            except ValueError:
                raise RefusedError(
                    400, "key: a request object, or the hex of an exact key"
                ) from None
        deleted = await cache_of().invalidate(
            key=key, tag=body.get("tag"), model=body.get("model"), namespace=body.get("namespace")
        )
        return JSONResponse({"deleted": deleted})

    async def openapi(request: Request) -> Response:
        return JSONResponse(OPENAPI)

    return [
        Route("/healthz", healthz),
        Route("/readyz", readyz),
        Route("/metrics", metrics),
        Route("/cache/stats", handled(stats)),
        Route("/cache/invalidate", handled(invalidate), methods=["POST"]),
        Route("/cache/openapi.json", openapi),
    ]


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    raise TypeError(f"{type(value).__name__} is not JSON")


_ERROR = {"$ref": "#/components/schemas/Error"}
_AUTH_FAILED = {
    "description": "no or a wrong admin token",
    "content": {"application/json": {"schema": _ERROR}},
}
OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "llm-pgcache proxy: admin API", "version": "1"},
    "components": {
        "securitySchemes": {"admin": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "code": {"type": "integer"},
                        },
                    }
                },
            },
            "Invalidation": {
                "type": "object",
                "description": "At most one of key, tag, model; none: the whole namespace, "
                "which must then be named.",
                "properties": {
                    "key": {
                        "description": "a chat request (its exact key), or its exact key as hex",
                        "oneOf": [{"type": "object"}, {"type": "string"}],
                    },
                    "tag": {"type": "string"},
                    "model": {"type": "string"},
                    "namespace": {"type": "string"},
                },
                "additionalProperties": False,
            },
        },
    },
    "paths": {
        "/cache/stats": {
            "get": {
                "summary": "This worker's counters, the table's sizes, the serve thresholds",
                "security": [{"admin": []}],
                "parameters": [{"name": "namespace", "in": "query", "schema": {"type": "string"}}],
                "responses": {
                    "200": {"description": "the `Cache.stats()` of this worker, as JSON"},
                    "401": _AUTH_FAILED,
                    "404": {"description": "the admin API is off"},
                },
            }
        },
        "/cache/invalidate": {
            "post": {
                "summary": "Delete entries (every worker and process drops its copies)",
                "security": [{"admin": []}],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/Invalidation"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "how many entries were deleted",
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {"deleted": {"type": "integer"}},
                                }
                            }
                        },
                    },
                    "400": {
                        "description": "a bad invalidation",
                        "content": {"application/json": {"schema": _ERROR}},
                    },
                    "401": _AUTH_FAILED,
                    "404": {"description": "the admin API is off"},
                },
            }
        },
        "/healthz": {
            "get": {"summary": "The process is up", "responses": {"200": {"description": "up"}}}
        },
        "/readyz": {
            "get": {
                "summary": "PostgreSQL answers and its schema runs with this code",
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready, and why"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics of this worker",
                "responses": {"200": {"description": "text format"}},
            }
        },
    },
}
