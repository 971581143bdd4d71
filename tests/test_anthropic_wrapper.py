"""The Anthropic wrapper: the real anthropic SDK (async and sync), over HTTP, against the
tests' Anthropic-compatible server."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import anthropic
import asyncpg
import pytest
from anthropic import Anthropic, AsyncAnthropic
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message

from llm_pgcache import Cache, HashingEmbedder, SyncCache, cache_info
from llm_pgcache.integrations.anthropic import CachedAnthropic, cached_anthropic

from .anthropic_server import AnthropicServer
from .conftest import connect_cache
from .faults import BlackHoleProxy

MODEL = "claude-haiku-4-5"


def ask(question: str, **params: Any) -> dict[str, Any]:
    return {
        "model": MODEL,
        "max_tokens": 256,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": question}],
        **params,
    }


@pytest.fixture
async def client(anthropic_api: AnthropicServer) -> AsyncIterator[AsyncAnthropic]:
    upstream = AsyncAnthropic(base_url=anthropic_api.url, api_key="test-key", max_retries=0)
    yield upstream
    await upstream.close()


@pytest.fixture
def wrap(cache: Cache, client: AsyncAnthropic) -> Callable[..., CachedAnthropic]:
    def make(**policy: Any) -> CachedAnthropic:
        return cached_anthropic(client, cache, **policy)

    return make


async def rows(db: asyncpg.Connection, namespace: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace)
    return count


async def collect(stream: Any) -> list[Any]:
    return [event async for event in stream]


def sdk_message(events: list[Any]) -> Message:
    """The message the SDK's own stream accumulator builds from `events`."""
    snapshot = None
    buffers: dict[int, bytes] = {}
    for event in events:
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=buffers)
    assert snapshot is not None
    return Message.model_validate(snapshot.model_dump())


async def test_miss_then_hit_returns_messages(
    wrap: Callable[..., CachedAnthropic], anthropic_api: AnthropicServer
) -> None:
    messages = wrap().messages
    first = await messages.create(**ask("What is 2 + 2?"))
    second = await messages.create(**ask("What is 2 + 2?"))
    assert isinstance(first, Message)
    assert isinstance(second, Message)
    assert anthropic_api.state.calls["messages"] == 1
    assert second.content == first.content
    assert second.id == first.id
    assert second.usage == first.usage
    assert cache_info(first).tier == "miss"  # type: ignore[union-attr]
    assert cache_info(second).tier == "postgres-exact"  # type: ignore[union-attr]
    assert anthropic_api.state.bodies == [ask("What is 2 + 2?")]  # the caller's arguments


async def test_what_is_in_the_key(
    wrap: Callable[..., CachedAnthropic], anthropic_api: AnthropicServer, cache: Cache
) -> None:
    messages = wrap().messages
    await messages.create(**ask("keyed"))
    await messages.create(**ask("keyed", metadata={"user_id": "u-2"}, service_tier="auto"))
    assert anthropic_api.state.calls["messages"] == 1  # transport parameters are not keyed
    await messages.create(**ask("keyed", system="You are verbose."))
    await messages.create(**ask("keyed", max_tokens=100))
    await messages.create(**ask("keyed", stop_sequences=["END"]))
    assert anthropic_api.state.calls["messages"] == 4
    # An openai-shaped request of the same model and turns is another call's entry.
    openai_shaped = {"model": MODEL, "messages": [{"role": "user", "content": "keyed"}]}
    assert await cache.get(openai_shaped, semantic=False) is None


async def test_streaming_passes_events_through_then_replays_them(
    wrap: Callable[..., CachedAnthropic],
    anthropic_api: AnthropicServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    messages = wrap().messages
    live = await collect(await messages.create(**ask("[think] [tool] weather?"), stream=True))
    assert await rows(db, namespace) == 1
    replay = await messages.create(**ask("[think] [tool] weather?"), stream=True)
    assert getattr(replay, "llm_pgcache")["tier"] == "postgres-exact"  # noqa: B009
    replayed = await collect(replay)
    assert anthropic_api.state.calls["messages"] == 1
    kinds = [event.type for event in replayed]
    assert kinds[0] == "message_start"
    assert kinds[-2:] == ["message_delta", "message_stop"]
    assert {"content_block_start", "content_block_delta", "content_block_stop"} <= set(kinds)
    assert [type(e) for e in replayed if e.type != "content_block_delta"] == [
        type(e) for e in live if e.type != "content_block_delta"
    ]
    original, again = sdk_message(live), sdk_message(replayed)
    assert again == original
    assert [block.type for block in again.content] == ["thinking", "text", "tool_use"]
    assert again.content[2].input == {"city": "Paris", "unit": "C"}  # type: ignore[union-attr]
    assert again.stop_reason == "tool_use"
    assert again.usage.output_tokens == original.usage.output_tokens > 0
    # What a non-streaming call gets from the stored stream.
    whole = await messages.create(**ask("[think] [tool] weather?"))
    assert whole.content == original.content
    assert anthropic_api.state.calls["messages"] == 1


async def test_what_is_never_stored(
    wrap: Callable[..., CachedAnthropic],
    anthropic_api: AnthropicServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    messages = wrap().messages
    anthropic_api.state.fail_status = 529
    with pytest.raises(anthropic.APIStatusError):
        await messages.create(**ask("overloaded"))
    anthropic_api.state.fail_status = None
    for question in ("[refuse] how?", "[pause] search", "[length] long"):
        await messages.create(**ask(question))
    with pytest.raises(anthropic.APIStatusError):  # an error event midway
        await collect(await messages.create(**ask("[error] a b c"), stream=True))
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the transport raises
        await collect(await messages.create(**ask("[break] a b c"), stream=True))
    halfway = await messages.create(**ask("read me halfway please"), stream=True)
    await anext(halfway)
    await anext(halfway)
    await halfway.close()
    assert await rows(db, namespace) == 0
    # By policy: tool use not stored, truncated answers stored.
    strict = wrap(cache_tool_calls=False, cache_truncated=True).messages
    await strict.create(**ask("[tool] weather"))
    await strict.create(**ask("[length] long"))
    assert await rows(db, namespace) == 1


async def test_a_last_message_that_is_not_text_passes_through(
    wrap: Callable[..., CachedAnthropic],
    anthropic_api: AnthropicServer,
    db: asyncpg.Connection,
    namespace: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    messages = wrap().messages
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AA"}}
    call = ask("x") | {
        "messages": [{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}]
    }
    with caplog.at_level(logging.DEBUG, logger="llm_pgcache.integrations"):
        for _ in range(2):
            reply = await messages.create(**call)
            assert cache_info(reply).tier == "bypass"  # type: ignore[union-attr]
    assert "not text" in caplog.text
    assert anthropic_api.state.calls["messages"] == 2
    assert await rows(db, namespace) == 0
    # Tool results of text are text: cached.
    result = {"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}
    turns = [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "w", "input": {}}],
        },
        {"role": "user", "content": [result, {"type": "text", "text": "so?"}]},
    ]
    for _ in range(2):
        await messages.create(**ask("x", messages=turns))
    assert anthropic_api.state.calls["messages"] == 3


async def test_semantic_hit(dsn: str, namespace: str, client: AsyncAnthropic) -> None:
    async with connect_cache(
        dsn, namespace=namespace, embedder=HashingEmbedder(1536), similarity_threshold=0.8
    ) as cache:
        messages = cached_anthropic(client, cache).messages
        await messages.create(**ask("What is the capital of France?"))
        reply = await messages.create(**ask("what is the capital of france"))
        other_system = await messages.create(
            **ask("what is the capital of france", system="Answer in French.")
        )
    assert cache_info(reply).tier == "postgres-semantic"  # type: ignore[union-attr]
    assert cache_info(other_system).tier == "miss"  # type: ignore[union-attr]


async def test_fails_open_when_postgres_stops_answering(
    dsn: str, namespace: str, client: AsyncAnthropic, anthropic_api: AnthropicServer
) -> None:
    proxy = BlackHoleProxy(dsn)
    await proxy.start()
    try:
        async with connect_cache(
            proxy.dsn, namespace=namespace, lookup_timeout=0.2, write_timeout=0.2
        ) as cache:
            messages = cached_anthropic(client, cache).messages
            await messages.create(**ask("before"))
            proxy.black_hole()
            started = time.perf_counter()
            reply = await messages.create(**ask("during"))
            streamed = await collect(await messages.create(**ask("during too"), stream=True))
            assert time.perf_counter() - started < 2.0
            assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
            assert sdk_message(streamed).content[0].text == "answer: during too"  # type: ignore[union-attr]
            proxy.restore()
    finally:
        await proxy.close()
    assert anthropic_api.state.calls["messages"] == 3


async def test_the_sync_client(
    dsn: str, namespace: str, anthropic_api: AnthropicServer, db: asyncpg.Connection
) -> None:
    def run() -> tuple[Any, ...]:
        upstream = Anthropic(base_url=anthropic_api.url, api_key="test-key", max_retries=0)
        with SyncCache.connect(dsn, namespace=namespace) as sync:
            messages = cached_anthropic(upstream, sync).messages
            first = messages.create(**ask("sync question"))
            second = messages.create(**ask("sync question"))
            with messages.create(**ask("sync stream [tool]"), stream=True) as stream:
                live = list(stream)
            replay = messages.create(**ask("sync stream [tool]"), stream=True)
            info = getattr(replay, "llm_pgcache")  # noqa: B009
            replayed = list(replay)
        upstream.close()
        return first, second, live, info, replayed

    first, second, live, info, replayed = await asyncio.to_thread(run)
    assert isinstance(second, Message)
    assert second.content == first.content
    assert cache_info(second).tier == "postgres-exact"  # type: ignore[union-attr]
    assert info["tier"] == "postgres-exact"
    assert sdk_message(replayed) == sdk_message(live)
    assert anthropic_api.state.calls["messages"] == 2
    assert await rows(db, namespace) == 2


async def test_a_conversation_with_the_sdks_own_blocks(
    wrap: Callable[..., CachedAnthropic], anthropic_api: AnthropicServer
) -> None:
    """What a tool loop sends back: the previous message's content as SDK objects, a
    system prompt as blocks, tools."""
    messages = wrap().messages
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}, "description": "w"}]
    system = [{"type": "text", "text": "You are terse."}]
    first = await messages.create(**ask("[tool] weather in Paris?", system=system, tools=tools))
    turns = [
        {"role": "user", "content": "[tool] weather in Paris?"},
        {"role": "assistant", "content": first.content},  # TextBlock, ToolUseBlock objects
        {
            "role": "user",
            "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "18 C"}],
        },
    ]
    again = [
        await messages.create(**ask("x", system=system, tools=tools, messages=turns))
        for _ in range(2)
    ]
    assert cache_info(again[1]).tier == "postgres-exact"  # type: ignore[union-attr]
    assert again[1].content == again[0].content
    assert anthropic_api.state.calls["messages"] == 2
    sent = anthropic_api.state.bodies[-1]["messages"][1]["content"]
    assert [block["type"] for block in sent] == ["text", "tool_use"]
