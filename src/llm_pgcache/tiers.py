"""The tiers above PostgreSQL: process memory (L1) and Redis (L2), both optional.

A live hit from PostgreSQL is promoted to both; every change drops their copies: in this
process directly, in the other processes' memory through the NOTIFY notices
(`invalidation`), and in Redis, which the processes share, directly. Process memory
answers only while those notices reach it.
"""

from __future__ import annotations

from llm_pgcache.entries import CacheHit
from llm_pgcache.invalidation import apply_notice
from llm_pgcache.store.memory import MemoryTier
from llm_pgcache.store.postgres import PostgresStore
from llm_pgcache.store.redis import RedisTier
from llm_pgcache.store.sessions import Listener


class UpperTiers:
    """Memory and Redis, as one: look up, promote, drop."""

    def __init__(self, memory: MemoryTier | None, redis: RedisTier | None) -> None:
        self._memory = memory
        self._redis = redis
        self._listener: Listener | None = None
        self.active = memory is not None or redis is not None

    async def listen(self, store: PostgresStore, origin: str) -> None:
        """Keep the memory tier fresh through other processes' notices (not `origin`'s)."""
        memory = self._memory
        if memory is not None:
            self._listener = await store.listen(
                lambda payload: apply_notice(memory, payload, origin), memory.clear
            )

    async def get(self, namespace: str, key: bytes) -> CacheHit | None:
        """A hit from process memory, else from Redis (then promoted to memory)."""
        memory = self._usable_memory()
        if memory is not None and (hit := memory.get(namespace, key)) is not None:
            return hit
        if self._redis is not None and (found := await self._redis.get(namespace, key)) is not None:
            hit, response_json, ttl_left = found
            if memory is not None:
                memory.put(namespace, key, hit, response_json, ttl_left)
            return hit
        return None

    async def promote(
        self, namespace: str, key: bytes, hit: CacheHit, response_json: str, ttl_left: float | None
    ) -> None:
        """Copy a live hit from PostgreSQL into the tiers above."""
        if self._redis is not None:
            await self._redis.put(namespace, key, hit, response_json, ttl_left)
        if (memory := self._usable_memory()) is not None:
            memory.put(namespace, key, hit, response_json, ttl_left)

    async def drop(
        self,
        namespace: str,
        *,
        key: bytes | None = None,
        tag: str | None = None,
        model: str | None = None,
    ) -> None:
        """Drop the copies of row `key`, with `tag`, or of `model`; with none, of the whole
        `namespace`. The next lookup promotes what PostgreSQL then holds."""
        if self._memory is not None:
            self._memory.invalidate(namespace, key=key, tag=tag, model=model)
        if self._redis is not None:
            await self._redis.invalidate(namespace, key=key, tag=tag, model=model)

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        if self._redis is not None:
            await self._redis.close()

    def _usable_memory(self) -> MemoryTier | None:
        """The memory tier, while invalidation notices reach it."""
        if self._memory is None or self._listener is None or not self._listener.connected:
            return None
        return self._memory
