"""L2: Redis, shared by the processes of an app, between process memory and PostgreSQL.

Entries are found by the exact key that was looked up, live at most `ttl` seconds and
never past their row's expiry, and are indexed by row, tag, model and namespace in Redis
sets so that an invalidation can find them. Keys carry a hash of the namespace, never the
namespace itself, so no namespace can spell another's keys. Redis failures are logged
(once per outage) and treated as misses: PostgreSQL still answers.

A lookup that read a row from PostgreSQL just before another process deleted it must not
put it into Redis after that process cleared Redis. So every invalidation first sets a new
random epoch for its namespace, then clears; a lookup reads the epoch with its Redis miss
(before it asks PostgreSQL), and its promotion is one script that writes only while the
epoch is unchanged. Either the promotion comes first and the clearing removes it, or it
sees the new epoch and writes nothing.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llm_pgcache.entries import CacheHit, TierCopy, load_response
from llm_pgcache.errors import MissingExtraError
from llm_pgcache.invalidation import Change

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)


# KEYS: epoch, data, index...; ARGV: expected epoch ("" for none), item, ms to live,
# seconds the indexes live. Writes nothing (returns 0) when the epoch moved.
_PROMOTE = """
if (redis.call('GET', KEYS[1]) or '') ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2], 'PX', ARGV[3])
for i = 3, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[2])
    redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 1
"""

# What a lookup learnt of a namespace's epoch: bytes (b"" for none yet), or None when
# Redis did not answer (then nothing is promoted).
Epoch = bytes | None


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
        self._promote = client.register_script(_PROMOTE)

    async def get(self, namespace: str, key: bytes) -> tuple[TierCopy | None, Epoch]:
        """(The copy kept for `key`, or None; the namespace's epoch, for a `put` of what
        PostgreSQL answers next)."""
        try:
            raw, epoch = await self._redis.mget(
                self._data_key(namespace, key), self._epoch_key(namespace)
            )
        except Exception as exc:  # any redis or network error: a miss
            self._failed(exc)
            return None, None
        self._ok()
        seen: bytes = epoch.encode() if isinstance(epoch, str) else epoch or b""
        if raw is None:
            return None, seen
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
        return TierCopy(namespace, key, hit, item["r"], left), seen

    async def put(self, copy: TierCopy, *, epoch: Epoch) -> bool:
        """Keep `copy`, unless its namespace was invalidated since `epoch` was read (or
        Redis fails). Returns whether it was written."""
        namespace, key, hit = copy.namespace, copy.key, copy.hit
        lifetime = self.ttl if copy.ttl_left is None else min(self.ttl, copy.ttl_left)
        if lifetime <= 0 or epoch is None:
            return False
        item = {
            "r": copy.response_json,
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
            written = await self._promote(
                keys=[self._epoch_key(namespace), data_key, *indexes],
                args=[epoch, json.dumps(item), max(1, int(lifetime * 1000)), self._meta_life],
            )
        except Exception as exc:  # any redis or network error: not cached here
            self._failed(exc)
            return False
        self._ok()
        return bool(written)

    async def invalidate(self, change: Change) -> None:
        """Drop the entries from the rows `change` names."""
        namespace, key = change.namespace, change.key
        if key is not None:
            index = self._index_key(namespace, "row", key.hex())
        elif change.tag is not None:
            index = self._index_key(namespace, "tag", change.tag)
        elif change.model is not None:
            index = self._index_key(namespace, "model", change.model)
        else:
            index = self._index_key(namespace, "all", "")
        try:
            # A new epoch first: a promotion in flight can no longer write (module doc).
            await self._redis.set(self._epoch_key(namespace), uuid.uuid4().hex, ex=self._meta_life)
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

    def _epoch_key(self, namespace: str) -> str:
        return f"{self.prefix}:v:{_digest(namespace)}"

    @property
    def _meta_life(self) -> int:
        """Seconds indexes outlive their entries, and epochs any lookup in flight."""
        return int(self.ttl) + 60

    def _failed(self, exc: Exception) -> None:
        if not self._down:
            logger.warning("llm-pgcache Redis tier failed, skipping it: %s", exc)
            self._down = True

    def _ok(self) -> None:
        if self._down:
            logger.warning("llm-pgcache Redis tier is back")
            self._down = False
