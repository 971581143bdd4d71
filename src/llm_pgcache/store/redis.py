"""L2: Redis, shared by the processes of an app, between process memory and PostgreSQL.

Entries are found by the exact key that was looked up, live at most `ttl` seconds and
never past their row's expiry, and are indexed by row, tag, model and namespace in Redis
sets so that an invalidation can find them. Keys carry a hash of the namespace, never the
namespace itself, so no namespace can spell another's keys. Redis failures are logged
(once per outage) and treated as misses: PostgreSQL still answers.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llm_pgcache.entries import CacheHit, load_response
from llm_pgcache.errors import MissingExtraError

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger("llm_pgcache")


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class RedisTier:
    """Redis as the middle tier.

    Args:
        client: a `redis.asyncio.Redis` (its socket timeouts bound every call), or a URL
            such as "redis://127.0.0.1:6379/0" (then opened with 50 ms timeouts).
        ttl: seconds an entry lives at most in Redis.
        prefix: the first part of every key this tier writes.
    """

    def __init__(
        self, client: Redis | str, *, ttl: float = 3600.0, prefix: str = "llm_pgcache"
    ) -> None:
        if isinstance(client, str):
            try:
                from redis.asyncio import Redis  # noqa: PLC0415 - optional extra
            except ImportError as exc:
                raise MissingExtraError(package="redis", extra="redis") from exc
            client = Redis.from_url(client, socket_timeout=0.05, socket_connect_timeout=0.05)
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis = client
        self.ttl = ttl
        self.prefix = prefix
        self._down = False

    async def get(self, namespace: str, key: bytes) -> tuple[CacheHit, str, float | None] | None:
        """(the hit, its response JSON, seconds it has left), or None."""
        try:
            raw = await self._redis.get(self._data_key(namespace, key))
        except Exception as exc:  # any redis or network error: a miss
            self._failed(exc)
            return None
        self._ok()
        if raw is None:
            return None
        item: dict[str, Any] = json.loads(raw)
        hit = CacheHit(
            response=load_response(item["r"]),
            tier="redis",
            namespace=namespace,
            key=bytes.fromhex(item["k"]),
            model=item["m"],
            created_at=datetime.fromisoformat(item["c"]),
            expires_at=datetime.fromisoformat(item["e"]) if item["e"] else None,
            prompt_tokens=item["pt"],
            completion_tokens=item["ct"],
            upstream_ms=item["u"],
            tags=tuple(item["t"]),
            similarity=item["s"],
            matched_prompt=item["p"],
        )
        left = None
        if hit.expires_at is not None:
            left = (hit.expires_at - datetime.now(hit.expires_at.tzinfo)).total_seconds()
        return hit, item["r"], left

    async def put(
        self, namespace: str, key: bytes, hit: CacheHit, response_json: str, ttl_left: float | None
    ) -> None:
        lifetime = self.ttl if ttl_left is None else min(self.ttl, ttl_left)
        if lifetime <= 0:
            return
        item = {
            "r": response_json,
            "k": hit.key.hex(),
            "m": hit.model,
            "c": hit.created_at.isoformat(),
            "e": hit.expires_at.isoformat() if hit.expires_at else None,
            "pt": hit.prompt_tokens,
            "ct": hit.completion_tokens,
            "u": hit.upstream_ms,
            "t": list(hit.tags),
            "s": hit.similarity,
            "p": hit.matched_prompt,
        }
        data_key = self._data_key(namespace, key)
        indexes = [
            self._index_key(namespace, "all", ""),
            self._index_key(namespace, "row", hit.key.hex()),
            self._index_key(namespace, "model", hit.model),
            *(self._index_key(namespace, "tag", tag) for tag in hit.tags),
        ]
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.set(data_key, json.dumps(item), px=max(1, int(lifetime * 1000)))
                for index in indexes:
                    pipe.sadd(index, data_key)
                    pipe.expire(index, int(self.ttl) + 60)
                await pipe.execute()
        except Exception as exc:  # any redis or network error: not cached here
            self._failed(exc)
            return
        self._ok()

    async def invalidate(
        self,
        namespace: str,
        *,
        key: bytes | None = None,
        tag: str | None = None,
        model: str | None = None,
    ) -> None:
        """Drop the entries of `namespace` from row `key`, with `tag`, of `model`, or all."""
        if key is not None:
            index = self._index_key(namespace, "row", key.hex())
        elif tag is not None:
            index = self._index_key(namespace, "tag", tag)
        elif model is not None:
            index = self._index_key(namespace, "model", model)
        else:
            index = self._index_key(namespace, "all", "")
        try:
            members = await self._redis.smembers(index)
            await self._redis.delete(index, *members)
            if key is not None:  # the row's own entry, also when it was stored unindexed
                await self._redis.delete(self._data_key(namespace, key))
        except Exception as exc:  # any redis or network error
            self._failed(exc)

    async def close(self) -> None:
        if self._owns_client:
            await self._redis.aclose()

    def _data_key(self, namespace: str, key: bytes) -> str:
        return f"{self.prefix}:d:{_digest(namespace)}:{key.hex()}"

    def _index_key(self, namespace: str, kind: str, value: str) -> str:
        return f"{self.prefix}:i:{_digest(namespace)}:{kind}:{_digest(value)}"

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            logger.warning("llm-pgcache Redis tier failed, skipping it: %s", exc)
            self._down = True

    def _ok(self) -> None:
        if self._down:
            logger.warning("llm-pgcache Redis tier is back")
            self._down = False
