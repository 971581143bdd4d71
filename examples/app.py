"""A Starlette app whose chat endpoint goes through llm-pgcache.

    pip install -e '.[embedded]' starlette uvicorn
    OPENAI_API_KEY=... uvicorn examples.app:app          # LLM_PGCACHE_DSN, or embedded

One `Cache` per process, opened in the app's lifespan and shared by all requests; the
openai client is wrapped once. Each answer says which cache tier served it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from openai import AsyncOpenAI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from llm_pgcache import Cache, cache_info, cached_openai


def create_app(dsn: str | None = None, openai_client: AsyncOpenAI | None = None) -> Starlette:
    """The app; `dsn` None reads LLM_PGCACHE_DSN (or starts the embedded server)."""

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with Cache.connect(dsn, namespace="example-app", default_ttl=24 * 3600) as cache:
            app.state.cache = cache
            app.state.client = cached_openai(
                openai_client or AsyncOpenAI(), cache, max_temperature=0.7
            )
            yield

    async def ask(request: Request) -> JSONResponse:
        body = await request.json()
        reply = await request.app.state.client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": str(body["question"])}],
            temperature=0,
        )
        info = cache_info(reply)
        return JSONResponse(
            {
                "answer": reply.choices[0].message.content,
                "tier": info.tier if info else None,
                "lookup_ms": info.lookup_ms if info else None,
            }
        )

    async def stats(request: Request) -> JSONResponse:
        counters = request.app.state.cache.counters
        return JSONResponse(
            {
                "hits": counters.hits,
                "misses": counters.misses,
                "hit_rate": counters.hit_rate,
                "tokens_saved": counters.tokens_saved,
                "cost_saved_usd": counters.cost_saved,
            }
        )

    return Starlette(
        routes=[Route("/ask", ask, methods=["POST"]), Route("/stats", stats)],
        lifespan=lifespan,
    )


app = create_app()
