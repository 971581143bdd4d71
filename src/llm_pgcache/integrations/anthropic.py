"""Drop-in caching for the Anthropic client: `cached_anthropic(client, cache, **policy)`.

    client = cached_anthropic(AsyncAnthropic(), cache)
    message = await client.messages.create(model="claude-...", max_tokens=512, messages=[...])
    message.llm_pgcache  # {"tier": "postgres-exact", ...}

`messages.create` takes exactly the wrapped client's arguments and returns real anthropic
types, hit or miss: a `Message`, or (with `stream=True`) a stream of the SDK's raw stream
events, a hit replayed as the API streams (message_start, each content block's start,
deltas and stop, tool_use input as JSON pieces, message_delta with the stop reason and
usage, message_stop). A sync `Anthropic()` with a `SyncCache` gives a sync wrapper that
behaves the same. Everything else on the client, `messages.stream(...)` included, passes
through untouched.

A call is keyed by the anthropic key schema (`key_schema.ANTHROPIC_MESSAGES`: the system
prompt, tools, max_tokens, ... and the conversation; never metadata or service_tier),
under an endpoint of its own, so that it never shares an entry with another SDK's call.
Only complete answers are stored: not refusals, paused turns, errors or cut streams, and
(by `CachePolicy`) neither tool use nor answers cut off by max_tokens when told so. A
last message that is not text (an image, a document) passes through uncached, logged at
debug level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

import anthropic
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from pydantic import BaseModel

from llm_pgcache.cache.facade import Cache
from llm_pgcache.integrations.anthropic_events import EventAccumulator, replay_events
from llm_pgcache.integrations.calls import CachedClient, CachedCreate
from llm_pgcache.integrations.policy import CachePolicy
from llm_pgcache.integrations.sync_cache import SyncCache
from llm_pgcache.integrations.sync_clients import AsyncView, SyncView, check_pairing
from llm_pgcache.key_schema import ANTHROPIC_MESSAGES, transport
from llm_pgcache.keys import is_omitted

if TYPE_CHECKING:
    from anthropic import Anthropic, AsyncAnthropic

ENDPOINT = "anthropic messages.create"  # in every key: never an answer of another SDK
TRANSPORT = transport(ANTHROPIC_MESSAGES)
EVENTS: dict[str, type[BaseModel]] = {
    "message_start": RawMessageStartEvent,
    "content_block_start": RawContentBlockStartEvent,
    "content_block_delta": RawContentBlockDeltaEvent,
    "content_block_stop": RawContentBlockStopEvent,
    "message_delta": RawMessageDeltaEvent,
    "message_stop": RawMessageStopEvent,
}
STORED_STOPS = frozenset({"end_turn", "stop_sequence"})
TRUNCATED_STOPS = frozenset({"max_tokens", "model_context_window_exceeded"})


@overload
def cached_anthropic(client: AsyncAnthropic, cache: Cache, **policy: Any) -> CachedAnthropic: ...


@overload
def cached_anthropic(client: Anthropic, cache: SyncCache, **policy: Any) -> Any: ...


def cached_anthropic(
    client: AsyncAnthropic | Anthropic, cache: Cache | SyncCache, **policy: Any
) -> Any:
    """Wrap `client` so that its `messages.create` goes through `cache`.

    Args:
        client: an `anthropic.AsyncAnthropic` with a `Cache`, or an `anthropic.Anthropic`
            with a `SyncCache` (any base_url).
        cache: an opened `Cache` (or `SyncCache`).
        **policy: the fields of `CachePolicy` (models, cache_tool_calls, cache_truncated,
            ttl, tags, namespace, ...).

    Raises:
        ConfigurationError: a sync client with a `Cache`, or an async one with a
            `SyncCache`.
    """
    check_pairing(
        client, cache, async_client=anthropic.AsyncAnthropic, sync_client=anthropic.Anthropic
    )
    if isinstance(cache, SyncCache):
        return SyncView(CachedAnthropic.around(AsyncView(client), cache.cache, **policy), cache)
    return CachedAnthropic.around(client, cache, **policy)


class CachedAnthropic(CachedClient):
    """An `AsyncAnthropic` whose `messages.create` is cached."""

    def __init__(self, client: Any, cache: Cache, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, cache, *args, **kwargs)
        self.messages = CachedCreate(client.messages, self, MESSAGES)


class Messages:
    """The `Dialect` of `messages.create`."""

    def unsupported(self, call: Mapping[str, Any]) -> str | None:
        messages = call.get("messages")
        if isinstance(messages, list | tuple) and messages and not _is_text(messages[-1]):
            return "a last message that is not text"
        return None

    def cache_request(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        params = {
            name: int(value) if type(value) is float and value.is_integer() else value
            for name, value in call.items()
            if name not in TRANSPORT and name not in ("model", "messages") and not is_omitted(value)
        }
        messages = call.get("messages")
        return {
            "endpoint": ENDPOINT,
            "model": call.get("model"),
            "messages": list(messages) if isinstance(messages, list | tuple) else messages,
            "params": params,
        }

    def storable(self, body: Mapping[str, Any], policy: CachePolicy) -> bool:
        reason = body.get("stop_reason")
        if not body.get("content"):
            return False
        if reason == "tool_use":
            return policy.cache_tool_calls
        if reason in TRUNCATED_STOPS:
            return policy.cache_truncated
        return reason in STORED_STOPS

    def answer_of(self, body: Mapping[str, Any]) -> Message:
        return Message.model_validate(body)

    def stream_call(self, call: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        return dict(call), False  # the stream has all there is to store

    def added(self, event: Any) -> bool:
        return False

    def accumulator(self) -> EventAccumulator:
        return EventAccumulator()

    def replay(self, body: Mapping[str, Any], call: Mapping[str, Any]) -> Iterator[BaseModel]:
        for event in replay_events(body):
            yield EVENTS[event["type"]].model_validate(event)


MESSAGES = Messages()
TEXT_BLOCKS = frozenset({"text", "tool_result"})


def _is_text(message: object) -> bool:
    """A message whose content is text: a string, or text blocks (tool results of text
    included), as dicts or as the SDK's objects."""
    content = block_content(message)
    if isinstance(content, str):
        return True
    if not isinstance(content, list | tuple):
        return False
    for block in content:
        kind = block.get("type") if isinstance(block, Mapping) else getattr(block, "type", None)
        if kind not in TEXT_BLOCKS:
            return False
        if kind == "tool_result" and block_content(block) is not None and not _is_text(block):
            return False
    return True


def block_content(item: object) -> object:
    """The `content` of a message or block, a dict or an SDK object."""
    if isinstance(item, Mapping):
        return item.get("content")
    return getattr(item, "content", None)


__all__ = ["CachedAnthropic", "cached_anthropic"]
