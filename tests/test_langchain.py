"""The LangChain cache: LangChain's own standard cache test suites (langchain-tests),
unmodified, over `PgCache` (sync over `PgCache.connect`, async over an async `Cache`
and over `PgCache.connect`), and a real `ChatOpenAI` served by the tests' OpenAI-
compatible server, through `set_llm_cache`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
from langchain_core.caches import BaseCache
from langchain_core.globals import set_llm_cache
from langchain_core.outputs import Generation
from langchain_openai import ChatOpenAI
from langchain_tests.integration_tests import AsyncCacheTestSuite, SyncCacheTestSuite
from pydantic import SecretStr

from llm_pgcache import ConfigurationError, HashingEmbedder
from llm_pgcache.integrations.langchain import PgCache, model_of

from .conftest import connect_cache
from .openai_server import OpenAIServer


def fresh_namespace() -> str:
    return f"langchain-{uuid.uuid4().hex[:12]}"


class TestPgCacheSync(SyncCacheTestSuite):
    @pytest.fixture
    def cache(self, dsn: str) -> Iterator[BaseCache]:
        pg = PgCache.connect(dsn, namespace=fresh_namespace(), lookup_timeout=1.0)
        yield pg
        pg.close()


class TestPgCacheAsync(AsyncCacheTestSuite):
    @pytest.fixture
    async def cache(self, dsn: str) -> AsyncIterator[BaseCache]:
        async with connect_cache(dsn, namespace=fresh_namespace()) as cache:
            yield PgCache(cache)


class TestPgCacheConnectedAsync(AsyncCacheTestSuite):
    """`PgCache.connect` (made in sync code) used from async code."""

    @pytest.fixture
    async def cache(self, dsn: str) -> AsyncIterator[BaseCache]:
        pg = await asyncio.to_thread(
            PgCache.connect, dsn, namespace=fresh_namespace(), lookup_timeout=1.0
        )
        yield pg
        await asyncio.to_thread(pg.close)


def chat(server: OpenAIServer) -> ChatOpenAI:
    return ChatOpenAI(
        model="gpt-4o-mini", base_url=server.base_url, api_key=SecretStr("k"), max_retries=0
    )


async def test_a_real_chat_model_through_set_llm_cache(dsn: str, openai_api: OpenAIServer) -> None:
    """Sync LangChain code (in a thread: the test server runs on this test's loop)."""
    pg = await asyncio.to_thread(
        PgCache.connect, dsn, namespace=fresh_namespace(), lookup_timeout=1.0
    )
    set_llm_cache(pg)
    try:
        model = chat(openai_api)

        async def ask(llm: ChatOpenAI, question: str) -> object:
            return (await asyncio.to_thread(llm.invoke, question)).content

        first = await ask(model, "What is the capital of France?")
        assert openai_api.state.calls["chat"] == 1
        again = await ask(model, "What is the capital of France?")
        assert openai_api.state.calls["chat"] == 1  # from PostgreSQL
        assert again == first == "answer: What is the capital of France?"
        await ask(model, "What is the capital of Spain?")
        assert openai_api.state.calls["chat"] == 2
        hotter = ChatOpenAI(
            model="gpt-4o-mini",
            base_url=openai_api.base_url,
            api_key=SecretStr("k"),
            temperature=0.3,
            max_retries=0,
        )
        await ask(hotter, "What is the capital of France?")  # another llm_string: a miss
        assert openai_api.state.calls["chat"] == 3
        await asyncio.to_thread(pg.clear, model="gpt-4o-mini")
        await ask(model, "What is the capital of France?")
        assert openai_api.state.calls["chat"] == 4
    finally:
        set_llm_cache(None)
        await asyncio.to_thread(pg.close)


async def test_a_real_chat_model_async(dsn: str, openai_api: OpenAIServer) -> None:
    async with connect_cache(dsn, namespace=fresh_namespace()) as cache:
        set_llm_cache(PgCache(cache))
        try:
            model = chat(openai_api)
            first = await model.ainvoke("Name a prime.")
            again = await model.ainvoke("Name a prime.")
            assert openai_api.state.calls["chat"] == 1
            assert again.content == first.content
        finally:
            set_llm_cache(None)


async def test_semantic_lookups_stay_within_one_llm_string(dsn: str) -> None:
    async with connect_cache(
        dsn, namespace=fresh_namespace(), embedder=HashingEmbedder(1536), similarity_threshold=0.5
    ) as cache:
        pg = PgCache(cache, semantic=True)
        llm = '{"kwargs": {"model_name": "gpt-4o-mini"}}---[("stop", None)]'
        other_llm = '{"kwargs": {"model_name": "gpt-4o-mini", "temperature": 0.9}}'
        await pg.aupdate("What is the capital of France?", llm, [Generation(text="Paris")])
        found = await pg.alookup("what is the capital of france", llm)
        assert found == [Generation(text="Paris")]
        assert await pg.alookup("what is the capital of france", other_llm) is None
        with pytest.raises(ConfigurationError, match="async methods only"):
            pg.lookup("what is the capital of france", llm)
    assert model_of(llm) == "langchain:gpt-4o-mini"
    assert model_of("no model here") == "langchain:unknown"
