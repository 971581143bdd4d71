"""The drop-in wrapper: the real openai client, over HTTP, against the test server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import openai
import pytest
from openai import AsyncOpenAI
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm_pgcache import Cache, OpenAIEmbedder
from llm_pgcache.integrations.openai import CachedOpenAI, cache_info, cached_openai
from llm_pgcache.pricing import DEFAULT_PRICES

from .chunks import assembled
from .conftest import connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]


def ask(question: str, **params: Any) -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": question},
        ],
        **params,
    }


@pytest.fixture
def wrap(cache: Cache, openai_client: AsyncOpenAI) -> Callable[..., CachedOpenAI]:
    def make(**policy: Any) -> CachedOpenAI:
        return cached_openai(openai_client, cache, **policy)

    return make


async def rows(db: asyncpg.Connection, namespace: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace)
    return count


async def collect(stream: Any) -> list[ChatCompletionChunk]:
    return [chunk async for chunk in stream]


async def test_miss_then_hit_returns_chat_completions(
    wrap: Callable[..., CachedOpenAI], openai_api: OpenAIServer
) -> None:
    client = wrap()
    first = await client.chat.completions.create(**ask("What is 2 + 2?"))
    second = await client.chat.completions.create(**ask("What is 2 + 2?"))
    assert isinstance(first, ChatCompletion)
    assert isinstance(second, ChatCompletion)
    assert openai_api.state.calls["chat"] == 1
    assert second.choices[0].message.content == first.choices[0].message.content
    assert second.id == first.id
    assert cache_info(first).tier == "miss"  # type: ignore[union-attr]
    info = cache_info(second)
    assert info is not None
    assert info.tier == "postgres-exact"
    assert info.similarity == 1.0
    assert second.model_dump()["llm_pgcache"]["tier"] == "postgres-exact"
    # Exactly the caller's arguments went upstream.
    assert openai_api.state.chat_bodies == [ask("What is 2 + 2?")]


async def test_semantic_hit(
    dsn: str, namespace: str, openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    embedder = OpenAIEmbedder(openai_client)
    async with connect_cache(
        dsn, namespace=namespace, embedder=embedder, similarity_threshold=0.8
    ) as cache:
        client = cached_openai(openai_client, cache)
        await client.chat.completions.create(**ask("What is the capital of France?"))
        reply = await client.chat.completions.create(**ask("what's the capital city of France?"))
    info = cache_info(reply)
    assert info is not None
    assert info.tier == "postgres-semantic"
    assert 0.8 <= (info.similarity or 0) < 1
    assert openai_api.state.calls["chat"] == 1


async def test_everything_else_passes_through(
    wrap: Callable[..., CachedOpenAI], openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    client = wrap()
    assert client.base_url == openai_client.base_url
    assert client.models is openai_client.models
    assert client.chat.completions.with_raw_response is not None
    reply = await client.embeddings.create(model="text-embedding-3-small", input=["hi"])
    assert len(reply.data[0].embedding) == 1536
    assert openai_api.state.calls["embeddings"] == 1


async def test_per_request_controls(
    wrap: Callable[..., CachedOpenAI],
    cache: Cache,
    namespace: str,
    db: asyncpg.Connection,
    openai_api: OpenAIServer,
) -> None:
    client = wrap()
    await client.with_cache(no_store=True).chat.completions.create(**ask("one"))
    assert await rows(db, namespace) == 0
    await client.chat.completions.create(**ask("one"))
    fresh = await client.with_cache(no_cache=True).chat.completions.create(**ask("one"))
    assert cache_info(fresh).tier == "miss"  # type: ignore[union-attr]
    assert openai_api.state.calls["chat"] == 3

    await client.with_cache(ttl=60, tags=["faq"]).chat.completions.create(**ask("two"))
    hit = await cache.get(ask("two"))
    assert hit is not None
    assert hit.tags == ("faq",)
    assert hit.expires_at is not None
    assert await cache.invalidate(tag="faq") == 1

    other = f"{namespace}-other"
    await client.with_cache(namespace=other).chat.completions.create(**ask("three"))
    assert await cache.get(ask("three")) is None
    assert await cache.get(ask("three"), namespace=other) is not None
    await cache.invalidate(namespace=other)
    # Nothing of the controls reached the API.
    assert all(set(body) == {"model", "messages"} for body in openai_api.state.chat_bodies)


@pytest.mark.parametrize(
    ("policy", "request_"),
    [
        ({"models": ["gpt-4o"]}, ask("x")),
        ({"max_temperature": 0.5}, ask("x", temperature=0.9)),
        ({"max_temperature": 0.5}, ask("x")),  # absent temperature is the API's 1.0
    ],
)
async def test_policy_bypasses_requests(
    wrap: Callable[..., CachedOpenAI],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
    policy: dict[str, Any],
    request_: dict[str, Any],
) -> None:
    client = wrap(**policy)
    reply = await client.chat.completions.create(**request_)
    assert cache_info(reply).tier == "bypass"  # type: ignore[union-attr]
    await client.chat.completions.create(**request_)
    assert openai_api.state.calls["chat"] == 2
    assert await rows(db, namespace) == 0


async def test_policy_caches_allowed_requests(
    wrap: Callable[..., CachedOpenAI], openai_api: OpenAIServer
) -> None:
    client = wrap(models=["gpt-4o*"], max_temperature=0.5)
    await client.chat.completions.create(**ask("x", temperature=0.2))
    reply = await client.chat.completions.create(**ask("x", temperature=0.2))
    assert cache_info(reply).tier == "postgres-exact"  # type: ignore[union-attr]
    assert openai_api.state.calls["chat"] == 1


@pytest.mark.parametrize(
    ("question", "policy", "stored"),
    [
        ("[tool] weather?", {}, True),
        ("[tool] weather?", {"cache_tool_calls": False}, False),
        ("[length] long story", {}, False),
        ("[length] long story", {"cache_truncated": True}, True),
        ("[refuse] something bad", {}, False),
        ("[filter] something filtered", {}, False),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_what_is_stored(
    wrap: Callable[..., CachedOpenAI],
    db: asyncpg.Connection,
    namespace: str,
    question: str,
    policy: dict[str, Any],
    stored: bool,
    stream: bool,
) -> None:
    client = wrap(**policy)
    reply = await client.chat.completions.create(**ask(question), stream=stream)
    if stream:
        await collect(reply)
    assert await rows(db, namespace) == int(stored)


async def test_errors_are_never_stored(
    wrap: Callable[..., CachedOpenAI],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    client = wrap()
    openai_api.state.fail_status = 500
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(**ask("x"))
    openai_api.state.fail_status = None
    await client.chat.completions.create(**ask("x"))
    assert openai_api.state.calls["chat"] == 2
    assert await rows(db, namespace) == 1


async def test_streaming_passes_chunks_through_then_replays_them(
    wrap: Callable[..., CachedOpenAI],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    client = wrap()
    openai_api.state.hold = asyncio.Event()
    stream = await client.chat.completions.create(
        **ask("Tell me a long story about caches"), stream=True
    )
    first = [await anext(stream), await anext(stream)]  # while the upstream is still held
    assert first[0].choices[0].delta.role == "assistant"
    assert first[1].choices[0].delta.content == "answer:"
    assert await rows(db, namespace) == 0
    openai_api.state.hold.set()
    live = first + await collect(stream)
    assert all(isinstance(c, ChatCompletionChunk) for c in live)
    assert all(c.choices for c in live)  # the usage chunk it asked for is hidden
    assert await rows(db, namespace) == 1

    replay = await client.chat.completions.create(
        **ask("Tell me a long story about caches"), stream=True
    )
    assert getattr(replay, "llm_pgcache")["tier"] == "postgres-exact"  # noqa: B009
    replayed = await collect(replay)
    assert all(isinstance(c, ChatCompletionChunk) for c in replayed)
    original, again = assembled(live), assembled(replayed)
    assert again["choices"] == original["choices"]
    assert again["id"] == original["id"]
    assert openai_api.state.calls["chat"] == 1

    # A non-streaming call is answered from what the stream stored, with usage.
    whole = await client.chat.completions.create(**ask("Tell me a long story about caches"))
    assert whole.choices[0].message.content == "answer: Tell me a long story about caches"
    assert whole.usage is not None
    assert whole.usage.completion_tokens > 0


async def test_streamed_usage_when_asked_for(wrap: Callable[..., CachedOpenAI]) -> None:
    client = wrap()
    options = {"stream": True, "stream_options": {"include_usage": True}}
    live = await collect(await client.chat.completions.create(**ask("usage please"), **options))
    replayed = await collect(await client.chat.completions.create(**ask("usage please"), **options))
    assert live[-1].usage is not None
    assert replayed[-1].usage == live[-1].usage
    assert not replayed[-1].choices


async def test_streamed_tool_calls_replay(
    wrap: Callable[..., CachedOpenAI], openai_api: OpenAIServer
) -> None:
    client = wrap()
    live = await collect(await client.chat.completions.create(**ask("[tool] weather"), stream=True))
    replayed = await collect(
        await client.chat.completions.create(**ask("[tool] weather"), stream=True)
    )
    assert openai_api.state.calls["chat"] == 1
    message = assembled(replayed)["choices"][0]
    assert message == assembled(live)["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    call = message["message"]["tool_calls"][0]
    assert (call["id"], call["function"]["name"]) == ("call_1", "get_weather")
    assert call["function"]["arguments"] == '{"city": "Paris", "unit": "C"}'


async def test_a_stream_read_halfway_stores_nothing(
    wrap: Callable[..., CachedOpenAI],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    client = wrap()
    stream = await client.chat.completions.create(**ask("a b c d e f g"), stream=True)
    await anext(stream)
    await anext(stream)
    await stream.close()
    assert await rows(db, namespace) == 0
    await collect(await client.chat.completions.create(**ask("a b c d e f g"), stream=True))
    assert openai_api.state.calls["chat"] == 2


async def test_a_stream_broken_upstream_stores_nothing(
    wrap: Callable[..., CachedOpenAI], db: asyncpg.Connection, namespace: str
) -> None:
    client = wrap()
    stream = await client.chat.completions.create(**ask("[break] a b c d"), stream=True)
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the transport raises
        await collect(stream)
    assert await rows(db, namespace) == 0


async def test_single_flight(wrap: Callable[..., CachedOpenAI], openai_api: OpenAIServer) -> None:
    client = wrap()
    openai_api.state.latency = 0.2
    replies = await asyncio.gather(
        *(client.chat.completions.create(**ask("the same question")) for _ in range(50))
    )
    assert openai_api.state.calls["chat"] == 1
    assert {r.choices[0].message.content for r in replies} == {"answer: the same question"}
    infos = [cache_info(r) for r in replies]
    assert sum(1 for i in infos if i and i.shared) == 49


async def test_single_flight_shares_the_error(
    wrap: Callable[..., CachedOpenAI], openai_api: OpenAIServer
) -> None:
    client = wrap()
    openai_api.state.latency = 0.2
    openai_api.state.fail_status = 500
    results = await asyncio.gather(
        *(client.chat.completions.create(**ask("doomed")) for _ in range(50)),
        return_exceptions=True,
    )
    assert openai_api.state.calls["chat"] == 1
    assert all(isinstance(r, openai.InternalServerError) for r in results)


async def test_single_flight_with_a_streaming_leader(
    wrap: Callable[..., CachedOpenAI], cache: Cache, openai_api: OpenAIServer
) -> None:
    client = wrap()
    openai_api.state.hold = asyncio.Event()
    leader = await client.chat.completions.create(**ask("shared stream"), stream=True)
    followers = [
        asyncio.create_task(client.chat.completions.create(**ask("shared stream"), stream=s))
        for s in (False, True, False)
    ]
    for _ in range(1000):  # a follower joins the flight right after its miss
        if cache.counters.misses == 4:
            break
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.05)
    assert not any(f.done() for f in followers)  # waiting for the leader
    openai_api.state.hold.set()
    live = await collect(leader)
    shared = await asyncio.gather(*followers)
    assert openai_api.state.calls["chat"] == 1
    assert (
        shared[0].choices[0].message.content == assembled(live)["choices"][0]["message"]["content"]
    )
    assert assembled(await collect(shared[1]))["choices"] == assembled(live)["choices"]


async def test_lookup_deadline_when_postgres_is_slow(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
) -> None:
    async with connect_cache(dsn, namespace=namespace, lookup_timeout=0.05) as cache:
        client = cached_openai(openai_client, cache)
        await client.chat.completions.create(**ask("slow"))
        async with db.transaction():
            await db.execute("LOCK TABLE llm_cache IN ACCESS EXCLUSIVE MODE")
            reply = await asyncio.wait_for(client.chat.completions.create(**ask("slow")), 2)
        assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
        assert cache.counters.backend_errors >= 1
    assert openai_api.state.calls["chat"] == 2


async def test_savings_are_counted(
    wrap: Callable[..., CachedOpenAI], cache: Cache, openai_api: OpenAIServer
) -> None:
    client = wrap()
    openai_api.state.latency = 0.1
    first = await client.chat.completions.create(**ask("How much does this save?"))
    for _ in range(3):
        hit = await client.chat.completions.create(**ask("How much does this save?"))
    assert first.usage is not None
    savings = cache.counters.by_model["gpt-4o-mini"]
    assert savings.hits == 3
    assert savings.prompt_tokens == 3 * first.usage.prompt_tokens
    assert savings.completion_tokens == 3 * first.usage.completion_tokens
    price_in, price_out = DEFAULT_PRICES["gpt-4o-mini"]
    expected = (savings.prompt_tokens * price_in + savings.completion_tokens * price_out) / 1e6
    assert savings.cost_saved == pytest.approx(expected)
    assert cache.counters.cost_saved == pytest.approx(expected)
    info = cache_info(hit)
    assert info is not None
    assert info.latency_saved_ms is not None
    assert info.latency_saved_ms > 50  # the upstream took >= 100 ms, the hit a few
    assert savings.latency_saved_ms > 150


async def test_stale_while_revalidate(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
) -> None:
    async with connect_cache(dsn, namespace=namespace, stale_grace=60) as cache:
        client = cached_openai(openai_client, cache, ttl=3600)
        await client.chat.completions.create(**ask("stale soon"))
        # Move the entry 10 s past its expiry (inside the 60 s grace) instead of sleeping.
        await db.execute(
            "UPDATE llm_cache SET expires_at = now() - interval '10 seconds' WHERE namespace = $1",
            namespace,
        )
        openai_api.state.latency = 0.1
        replies = await asyncio.gather(
            *(client.chat.completions.create(**ask("stale soon")) for _ in range(5))
        )
        infos = [cache_info(r) for r in replies]
        assert all(i is not None and i.tier == "postgres-exact" and i.stale for i in infos)
        for _ in range(100):  # one refresh runs in the background
            if await db.fetchval(
                "SELECT expires_at > now() FROM llm_cache WHERE namespace = $1", namespace
            ):
                break
            await asyncio.sleep(0.02)
        fresh = await client.chat.completions.create(**ask("stale soon"))
        assert cache_info(fresh).stale is False  # type: ignore[union-attr]
    assert openai_api.state.calls["chat"] == 2  # the first answer, and one refresh
    async with connect_cache(dsn, namespace=namespace) as no_grace:
        await db.execute(
            "UPDATE llm_cache SET expires_at = now() - interval '10 seconds' WHERE namespace = $1",
            namespace,
        )
        assert await no_grace.get(ask("stale soon")) is None
