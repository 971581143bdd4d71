"""`embeddings.create` through the wrapped openai client, over HTTP to the tests' server:
each input item cached on its own; one upstream call for the missing ones, in the
caller's order, with that call's usage; keyed by model, dimensions and format."""

from __future__ import annotations

from openai import AsyncOpenAI
from openai.types import CreateEmbeddingResponse

from llm_pgcache import cached_openai

from .conftest import connect_cache
from .openai_server import OpenAIServer


async def test_each_item_is_cached_and_only_the_missing_ones_go_upstream(
    dsn: str, namespace: str, openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    texts = [f"sentence number {n} about caching" for n in range(10)]
    direct = await openai_client.embeddings.create(
        model="text-embedding-3-small", input=texts, dimensions=64
    )
    openai_api.state.reset()
    async with connect_cache(dsn, namespace=namespace) as cache:
        client = cached_openai(openai_client, cache)
        first = await client.embeddings.create(
            model="text-embedding-3-small",
            input=[texts[n] for n in (0, 2, 4, 6, 8, 9)],
            dimensions=64,
        )
        assert isinstance(first, CreateEmbeddingResponse)
        assert openai_api.state.calls["embeddings"] == 1
        assert first.usage.prompt_tokens == 6  # the server counts one token per text

        answer = await client.embeddings.create(
            model="text-embedding-3-small", input=texts, dimensions=64, user="someone"
        )
        assert openai_api.state.calls["embeddings"] == 2  # one call, for the other four
        assert openai_api.state.embedded_texts[-4:] == [texts[n] for n in (1, 3, 5, 7)]
        assert answer.usage.prompt_tokens == 4
        assert [item.index for item in answer.data] == list(range(10))
        for got, want in zip(answer.data, sorted(direct.data, key=lambda d: d.index), strict=True):
            assert got.embedding == want.embedding  # the caller's order, the same vectors

        again = await client.embeddings.create(
            model="text-embedding-3-small", input=texts[3], dimensions=64
        )
        assert openai_api.state.calls["embeddings"] == 2  # all cached
        assert again.usage.prompt_tokens == 0
        assert again.data[0].embedding == answer.data[3].embedding

        other = await client.embeddings.create(
            model="text-embedding-3-small", input=texts[3], dimensions=32
        )
        assert openai_api.state.calls["embeddings"] == 3  # another size: another key
        assert len(other.data[0].embedding) == 32

        tokens = await client.embeddings.create(model="text-embedding-3-small", input=[[1, 2, 3]])
        assert openai_api.state.calls["embeddings"] == 4  # token arrays: not cached
        assert len(tokens.data) == 1

        no_cache = client.with_cache(no_cache=True)
        await no_cache.embeddings.create(
            model="text-embedding-3-small", input=texts[0], dimensions=64
        )
        assert openai_api.state.calls["embeddings"] == 5


async def test_a_failing_cache_answers_from_the_upstream(
    dsn: str, namespace: str, openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    async with connect_cache(dsn, namespace=namespace, lookup_timeout=0.001) as cache:
        client = cached_openai(openai_client, cache)
        await cache.close()  # every lookup and store now fails, and fails open
        answer = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
        assert [item.index for item in answer.data] == [0, 1]
        assert openai_api.state.calls["embeddings"] == 1
