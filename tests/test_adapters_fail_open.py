"""Every adapter fails open: with PostgreSQL behind a network that drops every packet,
each one answers from the upstream (or runs the function) within the cache's budgets,
and raises nothing of its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic import AsyncAnthropic
from langchain_core.outputs import Generation
from openai import AsyncOpenAI

from llm_pgcache import Cache, SyncCache, cache_info, cached_anthropic, cached_openai
from llm_pgcache.integrations.langchain import PgCache

from .anthropic_server import AnthropicServer
from .conftest import connect_cache
from .faults import BlackHoleProxy
from .openai_server import OpenAIServer

BUDGET = 0.2  # lookup and write timeouts
CHAT = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "during"}]}


@pytest.fixture
async def proxy(dsn: str) -> AsyncIterator[BlackHoleProxy]:
    opened = BlackHoleProxy(dsn)
    await opened.start()
    yield opened
    await opened.close()


@pytest.fixture
async def dark_cache(proxy: BlackHoleProxy, namespace: str) -> AsyncIterator[Cache]:
    """A cache whose PostgreSQL stops answering once it is open."""
    async with connect_cache(
        proxy.dsn, namespace=namespace, lookup_timeout=BUDGET, write_timeout=BUDGET
    ) as cache:
        proxy.black_hole()
        yield cache
        proxy.restore()


async def within_budget(call: Any) -> Any:
    started = time.perf_counter()
    result = await call
    assert time.perf_counter() - started < 10 * BUDGET
    return result


async def test_async_adapters_answer_while_postgres_is_dark(
    dark_cache: Cache,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    anthropic_api: AnthropicServer,
) -> None:
    chat = cached_openai(openai_client, dark_cache)
    reply = await within_budget(chat.chat.completions.create(**CHAT))
    assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
    vectors = await within_budget(
        chat.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    )
    assert len(vectors.data) == 2
    async with AsyncAnthropic(
        base_url=anthropic_api.url, api_key="k", max_retries=0
    ) as anthropic_client:
        messages = cached_anthropic(anthropic_client, dark_cache).messages
        message = await within_budget(
            messages.create(model="claude-haiku-4-5", max_tokens=64, messages=CHAT["messages"])
        )
    assert message.content[0].text == "answer: during"
    runs: list[int] = []

    @dark_cache.cached()
    async def double(n: int) -> int:
        runs.append(n)
        return 2 * n

    assert await within_budget(double(4)) == 8
    assert runs == [4]
    langchain = PgCache(dark_cache)
    assert await within_budget(langchain.alookup("prompt", "llm")) is None
    await within_budget(langchain.aupdate("prompt", "llm", [Generation(text="x")]))
    assert openai_api.state.calls["chat"] == 1
    assert openai_api.state.calls["embeddings"] == 1
    assert anthropic_api.state.calls["messages"] == 1


async def test_sync_adapters_answer_while_postgres_is_dark(
    proxy: BlackHoleProxy, namespace: str, openai_api: OpenAIServer
) -> None:
    from openai import OpenAI  # noqa: PLC0415 - the sync client of this test only

    def run() -> tuple[float, Any, int, Any]:
        with SyncCache.connect(
            proxy.dsn, namespace=namespace, lookup_timeout=BUDGET, write_timeout=BUDGET
        ) as sync:
            proxy.black_hole()
            started = time.perf_counter()
            client = OpenAI(base_url=openai_api.base_url, api_key="k", max_retries=0)
            reply = cached_openai(client, sync).chat.completions.create(**CHAT)

            @sync.cached()
            def triple(n: int) -> int:
                return 3 * n

            value = triple(3)
            looked_up = PgCache(sync).lookup("prompt", "llm")
            elapsed = time.perf_counter() - started
            proxy.restore()
            client.close()
        return elapsed, reply, value, looked_up

    elapsed, reply, value, looked_up = await asyncio.to_thread(run)
    assert reply.choices[0].message.content == "answer: during"
    assert value == 9
    assert looked_up is None
    assert elapsed < 30 * BUDGET
