"""One bad request fails alone, and hostile input gets a clear error: never an innocent
lookup's failure, a raw RecursionError, a blocked event loop or a refused notice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import numpy as np
import pytest
from openai import AsyncOpenAI

from llm_pgcache import (
    Cache,
    HashingEmbedder,
    InvalidInputError,
    InvalidNamespaceError,
    InvalidRequestError,
    InvalidResponseError,
    MemoryTier,
    cache_info,
    cached_openai,
)
from llm_pgcache.postgres.store import PostgresStore

from .conftest import connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]
LONE_SURROGATE = "tenant-\udc80"


async def test_a_namespace_postgres_would_refuse_fails_only_its_own_lookup(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    """40 lookups at once share rounds; one of them names a namespace PostgreSQL cannot
    store (a lone surrogate): it alone raises."""
    await cache.set(make_request(), make_response())
    outcomes = await asyncio.gather(
        *(cache.get(make_request()) for _ in range(20)),
        cache.get(make_request(), namespace=LONE_SURROGATE),
        *(cache.get(make_request()) for _ in range(19)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[20], InvalidNamespaceError)
    innocent = outcomes[:20] + outcomes[21:]
    assert all(hit is not None and not isinstance(hit, BaseException) for hit in innocent)


async def test_a_round_the_server_refuses_is_retried_one_by_one(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory, cache: Cache
) -> None:
    """Below the façade's checks: the store's shared round meets a value the server
    refuses, and only the lookup that carried it fails."""
    await cache.set(make_request(), make_response())
    key = (await cache.get(make_request())).key  # type: ignore[union-attr]
    store = await PostgresStore.open(dsn)
    try:
        outcomes = await asyncio.gather(
            *(store.get(namespace, key, 0.0, 1.0) for _ in range(12)),
            store.get(LONE_SURROGATE, key, 0.0, 1.0),
            *(store.get(namespace, key, 0.0, 1.0) for _ in range(12)),
            return_exceptions=True,
        )
    finally:
        await store.close()
    assert isinstance(outcomes[12], InvalidInputError)
    innocent = outcomes[:12] + outcomes[13:]
    assert all(row is not None and not isinstance(row, BaseException) for row in innocent)


async def test_a_bad_namespace_through_the_wrapper_fails_alone(
    cache: Cache, openai_client: AsyncOpenAI, openai_api: OpenAIServer, make_request: Factory
) -> None:
    client = cached_openai(openai_client, cache)
    request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    await client.chat.completions.create(**request)  # stored

    async def innocent() -> str | None:
        reply = await client.chat.completions.create(**request)
        return cache_info(reply).tier  # type: ignore[union-attr]

    outcomes = await asyncio.gather(
        *(innocent() for _ in range(20)),
        client.with_cache(namespace=LONE_SURROGATE).chat.completions.create(**request),
        *(innocent() for _ in range(19)),
        return_exceptions=True,
    )
    assert isinstance(outcomes[20], InvalidNamespaceError)
    assert outcomes[:20] + outcomes[21:] == ["postgres-exact"] * 39


def nested(depth: int) -> object:
    value: object = "bottom"
    for _ in range(depth):
        value = [value]
    return value


async def test_deeply_nested_json_is_a_clear_error_and_loses_nothing(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    await cache.set(make_request(), make_response("kept"))
    deep_request = make_request(tools=nested(10_000))
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        await cache.get(deep_request)
    with pytest.raises(InvalidRequestError, match="nested too deeply"):
        await cache.set(deep_request, make_response())
    deep_response = {**make_response(), "extra": nested(10_000)}
    with pytest.raises(InvalidResponseError, match="nested too deeply"):
        await cache.set(make_request(), deep_response)
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response["choices"][0]["message"]["content"] == "kept"


class NaNForOnePrompt:
    """An embedder that returns NaN for the prompt "poison" (a real embedder's bug)."""

    name = "nan-for-one:test"
    dim = 1536

    def __init__(self) -> None:
        self._inner = HashingEmbedder(1536)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        vectors = await self._inner.embed(texts)
        for row, text in enumerate(texts):
            if text == "poison":
                vectors[row] = np.nan
        return vectors


async def test_an_embedder_returning_nan_fails_open_through_the_wrapper(
    dsn: str, namespace: str, openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    async with connect_cache(dsn, namespace=namespace, embedder=NaNForOnePrompt()) as cache:
        client = cached_openai(openai_client, cache)
        request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "poison"}]}
        reply = await client.chat.completions.create(**request)  # the upstream answers
        assert reply.choices[0].message.content
        assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
        fine = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "fine"}]}
        await client.chat.completions.create(**fine)
        again = await client.chat.completions.create(**fine)
        assert cache_info(again).tier == "postgres-exact"  # type: ignore[union-attr]


async def test_a_megabyte_prompt_is_embedded_without_blocking() -> None:
    """The HashingEmbedder reads `max_chars` characters one by one and the rest as one
    digest: a 1 MB prompt took 5.5-6.8 s of the event loop."""
    embedder = HashingEmbedder(384)
    started = time.perf_counter()
    long_a, long_b, long_a_again = await embedder.embed(
        ["question " * 110_000 + "A", "question " * 110_000 + "B", "question " * 110_000 + "A"]
    )
    assert time.perf_counter() - started < 2.0
    assert float(long_a @ long_b) < 0.6  # tails that differ keep texts apart
    assert float(long_a @ long_a_again) > 0.999
    short = "What is the capital of France?"
    capped = HashingEmbedder(384, max_chars=len(short))
    np.testing.assert_array_equal(  # a text within the cap: the same vector as before
        (await capped.embed([short]))[0], (await embedder.embed([short]))[0]
    )


async def test_the_longest_names_fit_every_notice(
    dsn: str, make_request: Factory, make_response: Factory
) -> None:
    """A namespace, tag and model name at their limits, in characters that JSON escapes
    widest, still make notices that NOTIFY carries to another process's memory tier."""
    namespace = "\U0001f600" * 200
    tag = "\U0001f601" * 200
    model = "\U0001f602" * 200
    request = {**make_request(), "model": model}
    async with (
        connect_cache(dsn, namespace=namespace) as writer,
        connect_cache(dsn, namespace=namespace, memory=MemoryTier()) as reader,
    ):
        for drop in ({"tag": tag}, {"model": model}, {"key": request}):
            await writer.set(request, make_response(), tags=[tag])
            for _ in range(100):
                hit = await reader.get(request)
                if hit is not None and hit.tier == "memory":
                    break
                await asyncio.sleep(0.02)
            assert await writer.invalidate(**drop) == 1
            for _ in range(100):
                if await reader.get(request) is None:
                    break
                await asyncio.sleep(0.02)
            assert await reader.get(request) is None, drop

        too_long = {**make_request(), "model": "m" * 201}
        with pytest.raises(InvalidRequestError, match="model"):
            await writer.set(too_long, make_response())
        with pytest.raises(InvalidInputError, match="model"):
            await writer.invalidate(model="m" * 201)
        with pytest.raises(InvalidInputError, match="tag"):
            await writer.invalidate(tag="t" * 201)
