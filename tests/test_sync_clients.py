"""Sync code: the sync openai client through `cached_openai(OpenAI(), sync_cache)`, and
`SyncCache.cached` on sync functions; the blocking work runs in the calling thread.

The tests' servers live on the test's event loop, so the sync code runs in threads."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import asyncpg
import openai
import pytest
from anthropic import Anthropic, AsyncAnthropic
from openai import AsyncOpenAI, OpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm_pgcache import (
    Cache,
    ConfigurationError,
    InvalidInputError,
    SyncCache,
    cache_info,
    cached_anthropic,
    cached_openai,
)

from .chunks import assembled
from .faults import BlackHoleProxy
from .openai_server import OpenAIServer


def ask(question: str, **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], **params}


class Threads:
    """The threads the upstream requests were sent from (an httpx event hook)."""

    def __init__(self) -> None:
        self.seen: list[int] = []

    def hook(self, request: object) -> None:
        self.seen.append(threading.get_ident())


@pytest.fixture
def upstream(openai_api: OpenAIServer) -> Iterator[tuple[OpenAI, Threads]]:
    threads = Threads()
    http = openai.DefaultHttpxClient(event_hooks={"request": [threads.hook]})
    client = OpenAI(
        base_url=openai_api.base_url, api_key="test-key", max_retries=0, http_client=http
    )
    yield client, threads
    client.close()


async def rows(db: asyncpg.Connection, namespace: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace)
    return count


async def test_the_sync_openai_client(
    dsn: str,
    namespace: str,
    upstream: tuple[OpenAI, Threads],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
) -> None:
    client, threads = upstream

    def run() -> dict[str, Any]:
        out: dict[str, Any] = {"thread": threading.get_ident()}
        with SyncCache.connect(dsn, namespace=namespace, lookup_timeout=1.0) as sync:
            cached = cached_openai(client, sync, max_temperature=1.2)
            completions = cached.chat.completions
            out["first"] = completions.create(**ask("sync hello"))
            out["second"] = completions.create(**ask("sync hello"))
            with completions.create(**ask("sync stream"), stream=True) as stream:
                out["live"] = list(stream)
            replay = completions.create(**ask("sync stream"), stream=True)
            out["replay_info"] = getattr(replay, "llm_pgcache")  # noqa: B009
            out["replayed"] = list(replay)
            out["hot"] = completions.create(**ask("sync hello", temperature=1.5))
            hot_stream = completions.create(**ask("hot", temperature=1.5), stream=True)
            out["hot_stream"] = (hot_stream, list(hot_stream))
            out["no_store"] = cached.with_cache(no_store=True).chat.completions.create(
                **ask("not kept")
            )
            out["models_attr"] = cached.models is client.models
            out["cache"] = cached.cache is sync
            vectors = cached.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
            again = cached.embeddings.create(model="text-embedding-3-small", input=["b", "c"])
            out["vectors"] = (vectors, again)
        return out

    out = await asyncio.to_thread(run)
    assert isinstance(out["first"], ChatCompletion)
    assert isinstance(out["second"], ChatCompletion)
    assert cache_info(out["second"]).tier == "postgres-exact"  # type: ignore[union-attr]
    assert out["second"].choices == out["first"].choices
    assert all(isinstance(c, ChatCompletionChunk) for c in out["live"] + out["replayed"])
    assert out["replay_info"]["tier"] == "postgres-exact"
    assert assembled(out["replayed"])["choices"] == assembled(out["live"])["choices"]
    assert cache_info(out["hot"]).tier == "bypass"  # type: ignore[union-attr]
    hot_stream, hot_chunks = out["hot_stream"]
    assert isinstance(hot_stream, openai.Stream)  # the SDK's own stream, untouched
    assert getattr(hot_stream, "llm_pgcache")["tier"] == "bypass"  # noqa: B009
    assert hot_chunks
    assert out["models_attr"]
    assert out["cache"]
    vectors, again = out["vectors"]
    assert again.data[0].embedding == vectors.data[1].embedding
    assert openai_api.state.embedded_texts == ["a", "b", "c"]  # "b" once
    # Upstream: hello, stream, hot, hot stream, not kept; every one from the caller's thread.
    assert openai_api.state.calls["chat"] == 5
    assert set(threads.seen) == {out["thread"]}
    assert await rows(db, namespace) == 2 + 3  # two answers, three embedding items


async def test_threads_share_one_upstream_call(
    dsn: str, namespace: str, upstream: tuple[OpenAI, Threads], openai_api: OpenAIServer
) -> None:
    client, _ = upstream
    openai_api.state.latency = 0.3

    def run() -> list[str | None]:
        with SyncCache.connect(dsn, namespace=namespace, lookup_timeout=1.0) as sync:
            completions = cached_openai(client, sync).chat.completions
            with ThreadPoolExecutor(max_workers=16) as pool:
                replies = list(pool.map(lambda _: completions.create(**ask("the same")), range(16)))
        return [r.choices[0].message.content for r in replies]

    contents = await asyncio.to_thread(run)
    assert set(contents) == {"answer: the same"}
    assert openai_api.state.calls["chat"] == 1


async def test_the_sync_client_fails_open(
    dsn: str, namespace: str, upstream: tuple[OpenAI, Threads], openai_api: OpenAIServer
) -> None:
    client, _ = upstream
    proxy = BlackHoleProxy(dsn)
    await proxy.start()

    def run() -> tuple[float, str | None]:
        with SyncCache.connect(
            proxy.dsn, namespace=namespace, lookup_timeout=0.2, write_timeout=0.2
        ) as sync:
            completions = cached_openai(client, sync).chat.completions
            completions.create(**ask("before"))
            proxy.black_hole()
            started = time.perf_counter()
            reply = completions.create(**ask("during"))
            elapsed = time.perf_counter() - started
            proxy.restore()
        return elapsed, reply.choices[0].message.content

    try:
        elapsed, content = await asyncio.to_thread(run)
    finally:
        await proxy.close()
    assert content == "answer: during"
    assert elapsed < 2.0
    assert openai_api.state.calls["chat"] == 2


async def test_unsupported_call_shapes_pass_through(
    dsn: str,
    namespace: str,
    upstream: tuple[OpenAI, Threads],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client, _ = upstream
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}}
    shapes = [
        ask("several", n=2, stream=True),
        ask("speak", modalities=["text", "audio"], audio={"voice": "alloy", "format": "wav"}),
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [image]}]},
    ]

    def run() -> list[str]:
        tiers = []
        with SyncCache.connect(dsn, namespace=namespace) as sync:
            completions = cached_openai(client, sync).chat.completions
            for shape in shapes * 2:
                reply = completions.create(**shape)
                if shape.get("stream"):
                    list(reply)
                tiers.append(getattr(reply, "llm_pgcache")["tier"])  # noqa: B009
        return tiers

    with caplog.at_level(logging.DEBUG, logger="llm_pgcache.integrations"):
        tiers = await asyncio.to_thread(run)
    assert tiers == ["bypass"] * 6
    for reason in ("n > 1", "audio output", "not text"):
        assert reason in caplog.text
    assert openai_api.state.calls["chat"] == 6
    assert await rows(db, namespace) == 0


async def test_sync_functions_are_cached_in_the_calling_thread(
    dsn: str, namespace: str, db: asyncpg.Connection
) -> None:
    ran: list[int] = []

    def run() -> tuple[list[Any], int, int]:
        with SyncCache.connect(dsn, namespace=namespace) as sync:

            @sync.cached(tags=["scores"], version="2")
            def score(text: str, *, scale: int = 10) -> dict[str, Any]:
                ran.append(threading.get_ident())
                time.sleep(0.2)  # long enough for the threads below to overlap
                return {"text": text, "score": len(text) * scale}

            results = [score("abc"), score("abc", scale=10), score(text="abc")]
            with ThreadPoolExecutor(max_workers=8) as pool:
                results += list(pool.map(lambda _: score("shared"), range(8)))
            dropped = sync.invalidate(tag="scores")
            results.append(score("abc"))
            with pytest.raises(InvalidInputError, match="sync functions"):

                @sync.cached()
                async def not_sync() -> None:
                    return None

        return results, dropped, threading.get_ident()

    results, dropped, caller = await asyncio.to_thread(run)
    assert results[:3] == [{"text": "abc", "score": 30}] * 3
    assert results[3:11] == [{"text": "shared", "score": 60}] * 8
    assert dropped == 2
    assert len(ran) == 3  # abc, shared (once for eight threads), abc after the invalidation
    assert ran[0] == caller
    assert ran[2] == caller


async def test_a_client_and_a_cache_of_different_kinds_are_refused(
    dsn: str, namespace: str, cache: Cache, openai_api: OpenAIServer
) -> None:
    sync_client = OpenAI(base_url=openai_api.base_url, api_key="k")
    with pytest.raises(ConfigurationError, match="goes with a SyncCache"):
        cached_openai(sync_client, cache)  # type: ignore[call-overload]
    with pytest.raises(ConfigurationError, match="goes with a SyncCache"):
        cached_anthropic(Anthropic(api_key="k"), cache)  # type: ignore[call-overload]

    def with_sync_cache() -> None:
        with SyncCache.connect(dsn, namespace=namespace) as sync:
            with pytest.raises(ConfigurationError, match="goes with a Cache"):
                cached_openai(AsyncOpenAI(api_key="k"), sync)  # type: ignore[call-overload]
            with pytest.raises(ConfigurationError, match="goes with a Cache"):
                cached_anthropic(AsyncAnthropic(api_key="k"), sync)  # type: ignore[call-overload]

    await asyncio.to_thread(with_sync_cache)
    sync_client.close()
