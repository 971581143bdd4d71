"""Drop-in caching for the openai client: `cached_openai(client, cache, **policy)`.

    client = cached_openai(AsyncOpenAI(), cache)
    reply = await client.chat.completions.create(model="gpt-4o-mini", messages=[...])
    reply.llm_pgcache  # {"tier": "postgres-exact", "similarity": 1.0, ...}

`chat.completions.create` takes exactly the wrapped client's arguments and returns real
openai types: a `ChatCompletion`, or (with `stream=True`) a stream of
`ChatCompletionChunk`. `embeddings.create` is cached item by item
(`integrations.openai_embeddings`). Everything else on the client passes through
untouched. Per-request cache controls go through `client.with_cache(ttl=...,
no_store=True, ...)`, which returns a wrapper for that call: nothing is added to the
request itself. A sync `OpenAI()` client with a `SyncCache` gives a sync wrapper that
behaves the same (`integrations.sync_clients`).

Calls the cache does not take (a streamed `n > 1`, audio output, a last message that is
not text) pass through uncached, logged at debug level.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, overload

import openai
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm_pgcache.cache.facade import Cache
from llm_pgcache.integrations.calls import (
    CACHE_SIDE_ERRORS,
    CachedClient,
    CachedCreate,
    Resource,
)
from llm_pgcache.integrations.openai_chunks import ChunkAccumulator, replay_chunks
from llm_pgcache.integrations.openai_embeddings import CachedEmbeddings
from llm_pgcache.integrations.policy import (
    CacheControls,
    CacheInfo,
    CachePolicy,
    cache_info,
    storable_response,
)
from llm_pgcache.integrations.sync_cache import SyncCache
from llm_pgcache.integrations.sync_clients import AsyncView, SyncView, check_pairing
from llm_pgcache.keys import is_omitted

if TYPE_CHECKING:
    from openai import AsyncOpenAI, OpenAI


@overload
def cached_openai(client: AsyncOpenAI, cache: Cache, **policy: Any) -> CachedOpenAI: ...


@overload
def cached_openai(client: OpenAI, cache: SyncCache, **policy: Any) -> Any: ...


def cached_openai(client: AsyncOpenAI | OpenAI, cache: Cache | SyncCache, **policy: Any) -> Any:
    """Wrap `client` so that its chat completions and embeddings go through `cache`.

    Args:
        client: an `openai.AsyncOpenAI` with a `Cache`, or an `openai.OpenAI` with a
            `SyncCache` (any base_url).
        cache: an opened `Cache` (or `SyncCache`).
        **policy: the fields of `CachePolicy` (models, max_temperature, cache_tool_calls,
            cache_truncated, ttl, tags, namespace).

    Returns:
        A `CachedOpenAI` (a sync view of one, for a sync client).

    Raises:
        ConfigurationError: a sync client with a `Cache`, or an async one with a
            `SyncCache`.
    """
    check_pairing(client, cache, async_client=openai.AsyncOpenAI, sync_client=openai.OpenAI)
    if isinstance(cache, SyncCache):
        return SyncView(CachedOpenAI.around(AsyncView(client), cache.cache, **policy), cache)
    return CachedOpenAI.around(client, cache, **policy)


class CachedOpenAI(CachedClient):
    """An `AsyncOpenAI` whose `chat.completions.create` and `embeddings.create` are
    cached."""

    def __init__(self, client: Any, cache: Cache, *args: Any, **kwargs: Any) -> None:
        super().__init__(client, cache, *args, **kwargs)
        self.chat = Resource(
            client.chat, completions=CachedCreate(client.chat.completions, self, CHAT)
        )
        self.embeddings = CachedEmbeddings(client.embeddings, self)


class ChatCompletions:
    """The `Dialect` of `chat.completions.create`."""

    def unsupported(self, call: Mapping[str, Any]) -> str | None:
        n = call.get("n")
        if call.get("stream") is True and isinstance(n, int) and n > 1:
            return "a streamed call with n > 1"
        modalities = call.get("modalities")
        audio = call.get("audio")
        if (audio is not None and not is_omitted(audio)) or (
            isinstance(modalities, list | tuple) and "audio" in modalities
        ):
            return "audio output"
        messages = call.get("messages")
        if isinstance(messages, list | tuple) and messages and not _is_text(messages[-1]):
            return "a last message that is not text"
        return None

    def cache_request(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        return call  # the key schema's own shape

    def storable(self, body: Mapping[str, Any], policy: CachePolicy) -> bool:
        return storable_response(body, policy)

    def answer_of(self, body: Mapping[str, Any]) -> Any:
        return ChatCompletion.model_validate(body)

    def stream_call(self, call: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        # Ask for usage (to count what hits save); hide it from a caller that did not.
        options = call.get("stream_options") or {}
        if options.get("include_usage"):
            return dict(call), False
        return {**call, "stream_options": {**options, "include_usage": True}}, True

    def added(self, event: Any) -> bool:
        return not event.choices and event.usage is not None

    def accumulator(self) -> ChunkAccumulator:
        return ChunkAccumulator()

    def replay(self, body: Mapping[str, Any], call: Mapping[str, Any]) -> Iterator[Any]:
        options = call.get("stream_options") or {}
        for chunk in replay_chunks(body, include_usage=bool(options.get("include_usage"))):
            yield ChatCompletionChunk.model_validate(chunk)


CHAT = ChatCompletions()


def _is_text(message: object) -> bool:
    """A message whose content is text (a string, or text parts only)."""
    if not isinstance(message, Mapping):
        return True  # an SDK object: keyed as it is
    content = message.get("content")
    if isinstance(content, str):
        return True
    return isinstance(content, list | tuple) and all(
        isinstance(part, Mapping) and part.get("type") == "text" for part in content
    )


__all__ = [
    "CACHE_SIDE_ERRORS",
    "CacheControls",
    "CacheInfo",
    "CachePolicy",
    "CachedOpenAI",
    "cache_info",
    "cached_openai",
]
