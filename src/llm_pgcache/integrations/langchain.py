"""A LangChain cache: `PgCache` implements langchain_core's `BaseCache` over llm-pgcache
(the `langchain` extra).

    set_llm_cache(PgCache.connect(dsn))            # sync and async methods both work
    set_llm_cache(PgCache(await Cache.connect(dsn)))   # async code: the async methods

An entry's key holds the prompt and the `llm_string` (LangChain's serialization of the
model and its parameters), so `llm_string` is part of the exact key and of the semantic
scope: a semantic lookup (`semantic=True`, with the cache's embedder) only considers
entries of the same `llm_string`, filtered in the query. Generations are stored as JSON
through `langchain_core.load.dumps` and `loads`, never pickle, and only generation and
message classes are revived from them. Entries are rows like any
other, tagged "langchain", of the model `langchain:<model name>` (read from the
`llm_string`), so `clear()` removes LangChain's entries of its namespace only, and
`clear(model="gpt-4o-mini")` those of one model.
"""

from __future__ import annotations

import asyncio
import functools
import re
import warnings
from collections.abc import Coroutine, Sequence
from typing import Any, Self, TypeVar

from llm_pgcache.cache.facade import Cache
from llm_pgcache.errors import ConfigurationError, MissingExtraError
from llm_pgcache.integrations.sync_cache import SyncCache
from llm_pgcache.validation import TTL

try:
    from langchain_core._api.beta_decorator import LangChainBetaWarning
    from langchain_core.caches import RETURN_VAL_TYPE, BaseCache
    from langchain_core.load import dumps, loads
    from langchain_core.messages import (
        AIMessage,
        AIMessageChunk,
        ChatMessage,
        FunctionMessage,
        HumanMessage,
        SystemMessage,
        ToolMessage,
    )
    from langchain_core.outputs import ChatGeneration, ChatGenerationChunk, Generation
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise MissingExtraError(package="langchain-core", extra="langchain") from exc

T = TypeVar("T")
TAG = "langchain"
# What a stored entry may turn back into: generations and messages, nothing else (a
# serialized model or prompt would be configuration, not an answer).
GENERATION_CLASSES = (
    Generation,
    ChatGeneration,
    ChatGenerationChunk,
    AIMessage,
    AIMessageChunk,
    ChatMessage,
    FunctionMessage,
    HumanMessage,
    SystemMessage,
    ToolMessage,
)
MODEL_IN_LLM_STRING = re.compile(r'"model(?:_name)?"\s*:\s*"([^"]+)"')


def model_of(llm_string: str) -> str:
    """The model column of an entry: `langchain:<model name>`, or `langchain:unknown`."""
    found = MODEL_IN_LLM_STRING.search(llm_string)
    return f"{TAG}:{found.group(1) if found else 'unknown'}"


class PgCache(BaseCache):
    """LangChain's `BaseCache` over an llm-pgcache `Cache`.

    Args:
        cache: an open async `Cache` (the async methods run on it; the sync ones need
            `PgCache.connect`), or a `SyncCache` (both work).
        semantic: also answer prompts similar enough to a stored one of the same
            `llm_string` (the cache needs an embedder).
        namespace: where the entries go; default: the cache's.
        ttl: seconds (or timedelta) an entry lives; default: the cache's.
    """

    def __init__(
        self,
        cache: Cache | SyncCache,
        *,
        semantic: bool = False,
        namespace: str | None = None,
        ttl: TTL | None = None,
    ) -> None:
        self._sync = cache if isinstance(cache, SyncCache) else None
        self._cache = cache.cache if isinstance(cache, SyncCache) else cache
        self.semantic = semantic
        self.namespace = namespace
        self.ttl = ttl

    @classmethod
    def connect(
        cls,
        dsn: str | None = None,
        *,
        semantic: bool = False,
        namespace: str | None = None,
        ttl: TTL | None = None,
        **cache_options: Any,
    ) -> Self:
        """A `PgCache` on a `SyncCache.connect(dsn, **cache_options)`: for code with or
        without an event loop. Close it with `close()`."""
        return cls(
            SyncCache.connect(dsn, **cache_options),
            semantic=semantic,
            namespace=namespace,
            ttl=ttl,
        )

    def close(self) -> None:
        """Close the `SyncCache` that `connect` opened (an async `Cache` is yours)."""
        if self._sync is not None:
            self._sync.close()

    # async: on the cache's own loop (a SyncCache's thread), else the caller's
    async def alookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return await self._async(self._lookup(prompt, llm_string))

    async def aupdate(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await self._async(self._update(prompt, llm_string, return_val))

    async def aclear(self, **kwargs: Any) -> None:
        await self._async(self._clear(**kwargs))

    def lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        return self._blocking(self._lookup(prompt, llm_string))

    def update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        self._blocking(self._update(prompt, llm_string, return_val))

    def clear(self, **kwargs: Any) -> None:
        """Remove LangChain's entries of the namespace (`namespace=` another one), or
        only those of `model=` (the model name of the `llm_string`)."""
        self._blocking(self._clear(**kwargs))

    async def _lookup(self, prompt: str, llm_string: str) -> RETURN_VAL_TYPE | None:
        hit = await self._cache.get(
            _request(prompt, llm_string), namespace=self.namespace, semantic=self.semantic
        )
        if hit is None:
            return None
        # Copies: LangChain changes what a hit returns (it zeroes the cost on the message).
        return [
            generation.model_copy(deep=True) for generation in revived(hit.response["generations"])
        ]

    async def _update(self, prompt: str, llm_string: str, return_val: RETURN_VAL_TYPE) -> None:
        await self._cache.set(
            _request(prompt, llm_string),
            {"generations": dumps(list(return_val))},
            ttl=self.ttl,
            tags=[TAG],
            namespace=self.namespace,
            semantic=self.semantic,
        )

    async def _clear(self, *, namespace: str | None = None, model: str | None = None) -> None:
        ns = namespace or self.namespace
        if model is not None:
            await self._cache.invalidate(model=f"{TAG}:{model}", namespace=ns)
        else:
            await self._cache.invalidate(tag=TAG, namespace=ns)

    async def _async(self, call: Coroutine[Any, Any, T]) -> T:
        if self._sync is None:
            return await call
        return await asyncio.wrap_future(self._sync.submit(call))

    def _blocking(self, call: Coroutine[Any, Any, T]) -> T:
        if self._sync is None:
            call.close()
            raise ConfigurationError(
                "PgCache over an async Cache has async methods only (alookup, aupdate, "
                "aclear): use PgCache.connect(...) for the sync ones"
            )
        return self._sync.result_of(call)


@functools.lru_cache(maxsize=256)
def revived(text: str) -> tuple[Any, ...]:
    """The generations a stored text spells, revived once per text (`loads` spends most
    of a hit building its allow-list; a deep copy costs a seventh of that)."""
    with warnings.catch_warnings():  # `loads` is marked beta; its format is LangChain's
        warnings.simplefilter("ignore", LangChainBetaWarning)
        generations: Sequence[Any] = loads(text, allowed_objects=GENERATION_CLASSES)
    return tuple(generations)


def _request(prompt: str, llm_string: str) -> dict[str, Any]:
    """The request an entry is keyed by: the prompt is the turn, `llm_string` the scope."""
    return {
        "model": model_of(llm_string),
        "messages": [{"role": "user", "content": prompt}],
        "llm_string": llm_string,
    }
