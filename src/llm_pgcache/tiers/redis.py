"""L2: Redis, shared by the processes of an app, between process memory and PostgreSQL.

Entries are found by the exact key that was looked up, live at most `ttl` seconds and
never past their row's expiry, and are indexed by row, tag and model in Redis sets so that
an invalidation can find them. Keys carry a hash of the namespace, never the namespace
itself, so no namespace can spell another's keys. Redis failures are logged (once per
outage) and treated as misses: PostgreSQL still answers. A circuit breaker of its own
stops asking a Redis that does not answer (PostgreSQL lookups are not held back by it).

Three keys per namespace, and one for all, keep copies honest:
- the epoch fences promotions. Every invalidation first sets a new random epoch, then
  deletes; a lookup reads the epoch with its Redis miss (before it asks PostgreSQL), and
  its promotion is one script that writes only while the epoch (and the global
  generation) are unchanged. Either the promotion comes first and the delete removes it,
  or it sees the new epoch and writes nothing.
- the generation dates copies: each copy is stored with the namespace's and the global
  generation of the moment it was written, and a read serves it only while both are
  unchanged. A namespace cleared whole is one new generation (no keys to delete).
- an invalidation that could not reach Redis (Redis down, slow, or cut off midway) is
  owed: this process stops reading and writing Redis, and as soon as Redis answers again
  it renews the generation (and epoch) of every namespace it owes (past `MAX_OWED`
  namespaces, the global generation) before it reads Redis again. Every process that saw
  Redis fail also waits `settle` seconds after Redis answers again before it reads it,
  which gives the process that owes time to pay; a process that saw no failure at all
  reads at once (the one window left: see docs/operations or the README).
Tag and model invalidations delete their copies in chunks of `CHUNK` keys, each call
bounded by the client's socket timeout, however many copies there are.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import time
import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Any

from llm_pgcache.breaker import CircuitBreaker, OutageLog
from llm_pgcache.entries import CacheHit, TierCopy, load_response
from llm_pgcache.errors import MissingExtraError
from llm_pgcache.invalidation import Change
from llm_pgcache.rounds import Rounds

if TYPE_CHECKING:
    from redis.asyncio import Redis

logger = logging.getLogger(__name__)

# KEYS: epoch, global generation, data, namespace generation, index...; ARGV: expected
# "epoch/global generation", item, ms to live, seconds the indexes live. Writes nothing
# (returns 0) when the epoch or the global generation moved since the lookup read them.
_PROMOTE = """
local seen = (redis.call('GET', KEYS[1]) or '') .. '/' .. (redis.call('GET', KEYS[2]) or '')
if seen ~= ARGV[1] then return 0 end
local dated = (redis.call('GET', KEYS[4]) or '') .. '|' .. (redis.call('GET', KEYS[2]) or '')
redis.call('SET', KEYS[3], dated .. '|' .. ARGV[2], 'PX', ARGV[3])
for i = 5, #KEYS do
    redis.call('SADD', KEYS[i], KEYS[3])
    redis.call('EXPIRE', KEYS[i], ARGV[4])
end
return 1
"""

# What a lookup learnt of its namespace's epoch and the global generation ("epoch/
# generation"), or None when Redis was not read (then nothing is promoted).
Epoch = str | None

CHUNK = 500  # keys per delete call
MAX_OWED = 1000  # namespaces owed one by one; past that, the global generation


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else value


class RedisTier:
    """Redis as the middle tier.

    Args:
        client: a `redis.asyncio.Redis` (its socket timeouts bound every call), or a URL
            such as "redis://127.0.0.1:6379/0" (then opened with a 50 ms timeout per call,
            250 ms to connect).
        ttl: seconds an entry lives at most in Redis.
        prefix: the first part of every key this tier writes.
        breaker: when to stop asking Redis; default: after 3 failures in a row, for
            half a second, then one probe.
        settle: seconds to wait, after Redis answers again following failures this
            process saw, before copies are read again (module doc).
    """

    def __init__(
        self,
        client: Redis | str,
        *,
        ttl: float = 3600.0,
        prefix: str = "llm_pgcache",
        breaker: CircuitBreaker | None = None,
        settle: float = 1.0,
    ) -> None:
        if isinstance(client, str):
            try:
                from redis.asyncio import Redis  # noqa: PLC0415 - optional extra
            except ImportError as exc:
                raise MissingExtraError(package="redis", extra="redis") from exc
            client = Redis.from_url(client, socket_timeout=0.05, socket_connect_timeout=0.25)
            self._owns_client = True
        else:
            self._owns_client = False
        self._redis = client
        self.ttl = ttl
        self.prefix = prefix
        self.settle = settle
        self._breaker = breaker or CircuitBreaker(threshold=3, cooldown=0.5, min_outage=0.0)
        self._outages = OutageLog(logger, "Redis tier", settle=settle)
        self._owed: set[str] = set()  # namespaces whose invalidation did not reach Redis
        self._owe_all = False
        self._failed_at: float | None = None  # last failure, until Redis has settled
        self._answered_at: float | None = None  # first answer after that failure
        self._healing: asyncio.Task[None] | None = None
        self._promote = client.register_script(_PROMOTE)
        self._reads: Rounds[tuple[str, bytes], tuple[TierCopy | None, Epoch]] = Rounds(
            self._read_round, rounds=2, max_batch=64
        )

    @property
    def usable(self) -> bool:
        """Whether copies may be read and written now (module doc)."""
        if self._failed_at is None:
            return self._breaker.allow()
        if self._owed or self._owe_all or self._answered_at is None:
            return False
        if time.monotonic() - self._answered_at < self.settle:
            return False
        self._failed_at = self._answered_at = None  # settled
        return True

    async def get(self, namespace: str, key: bytes) -> tuple[TierCopy | None, Epoch]:
        """(The copy kept for `key`, or None; the namespace's epoch, for a `put` of what
        PostgreSQL answers next). Lookups that overlap share one MGET (`rounds`)."""
        if not self.usable:
            return None, None
        return await self._reads.join((namespace, key), None)

    async def _read_round(
        self, batch: list[tuple[str, bytes]], budget: float | None
    ) -> list[tuple[TierCopy | None, Epoch]]:
        """One MGET for the lookups of a round: their copies, then each namespace's epoch
        and generation, then the generation of all."""
        namespaces = sorted({namespace for namespace, _ in batch})
        keys = [self._data_key(namespace, key) for namespace, key in batch]
        for namespace in namespaces:
            keys += [self._epoch_key(namespace), self._generation_key(namespace)]
        keys.append(self._generation_all_key)
        try:
            values = await self._redis.mget(*keys)
        except Exception as exc:  # any redis or network error: a miss
            self._failed(exc)
            return [(None, None)] * len(batch)
        self._ok()
        generation_all = _text(values[-1])
        dated = {
            namespace: (values[len(batch) + 2 * i], values[len(batch) + 2 * i + 1])
            for i, namespace in enumerate(namespaces)
        }
        return [
            self._copy(namespace, key, raw, dated[namespace], generation_all)
            for (namespace, key), raw in zip(batch, values, strict=False)
        ]

    def _copy(
        self,
        namespace: str,
        key: bytes,
        raw: bytes | str | None,
        dated: tuple[bytes | str | None, bytes | str | None],  # the namespace's epoch, generation
        generation_all: str,
    ) -> tuple[TierCopy | None, Epoch]:
        epoch, generation = dated
        seen = f"{_text(epoch)}/{generation_all}"
        if raw is None:
            return None, seen
        dated_ns, dated_all, payload = _text(raw).split("|", 2)
        if (dated_ns, dated_all) != (_text(generation), generation_all):
            return None, seen  # written before its namespace (or all) was renewed
        item: dict[str, Any] = json.loads(payload)
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
            accepted_by=item.get("a", "exact"),
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
        if lifetime <= 0 or epoch is None or not self.usable:
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
            "a": hit.accepted_by,
        }
        data_key = self._data_key(namespace, key)
        indexes = [
            self._index_key(namespace, "row", hit.key.hex()),
            self._index_key(namespace, "model", hit.model),
            *(self._index_key(namespace, "tag", tag) for tag in hit.tags),
        ]
        try:
            written = await self._promote(
                keys=[
                    self._epoch_key(namespace),
                    self._generation_all_key,
                    data_key,
                    self._generation_key(namespace),
                    *indexes,
                ],
                args=[epoch, json.dumps(item), max(1, int(lifetime * 1000)), self._meta_life],
            )
        except Exception as exc:  # any redis or network error: not cached here
            self._failed(exc)
            return False
        self._ok()
        return bool(written)

    async def invalidate(self, change: Change) -> None:
        """Drop the copies from the rows `change` names. One that cannot be done now is
        owed, and paid before this process reads Redis again (module doc)."""
        namespace = change.namespace
        if not self._breaker.allow() or self._failed_at is not None:
            self._owe(namespace)
            return
        try:
            # A new epoch first: a promotion in flight can no longer write (module doc).
            await self._redis.set(self._epoch_key(namespace), uuid.uuid4().hex, ex=self._meta_life)
            if change.key is None and change.tag is None and change.model is None:
                await self._renew(namespace)
            else:
                await self._delete_indexed(change)
        except Exception as exc:  # any redis or network error
            self._failed(exc)
            self._owe(namespace)
            return
        self._ok()

    async def _delete_indexed(self, change: Change) -> None:
        """Delete the copies in the index of `change`'s row, tag or model, in chunks."""
        namespace = change.namespace
        if change.key is not None:
            index = self._index_key(namespace, "row", change.key.hex())
        elif change.tag is not None:
            index = self._index_key(namespace, "tag", change.tag)
        else:
            index = self._index_key(namespace, "model", change.model or "")
        cursor = 0
        while True:
            cursor, members = await self._redis.sscan(index, cursor, count=CHUNK)
            for start in range(0, len(members), CHUNK):  # SSCAN's count is a hint
                await self._redis.unlink(*members[start : start + CHUNK])
            if cursor == 0:
                break
        await self._redis.unlink(index)
        if change.key is not None:  # the row's own entry, also when it was stored unindexed
            await self._redis.unlink(self._data_key(namespace, change.key))

    async def _renew(self, namespace: str | None) -> None:
        """New epoch and generation for `namespace` (None: the global generation): every
        copy written before is no longer served, and no promotion in flight writes."""
        fresh = uuid.uuid4().hex
        if namespace is None:
            await self._redis.set(self._generation_all_key, fresh)
            return
        await self._redis.set(self._epoch_key(namespace), fresh, ex=self._meta_life)
        await self._redis.set(self._generation_key(namespace), fresh, ex=self._meta_life)

    def _owe(self, namespace: str) -> None:
        if len(self._owed) >= MAX_OWED:
            self._owe_all = True
            self._owed.clear()
        elif not self._owe_all:
            self._owed.add(namespace)
        self._start_healing()

    def _start_healing(self) -> None:
        if self._failed_at is None:
            self._failed_at = time.monotonic()
        if self._healing is None or self._healing.done():
            self._healing = asyncio.get_running_loop().create_task(self._heal())

    async def _heal(self) -> None:
        """Until Redis answers again: probe it; then pay what is owed."""
        while self._failed_at is not None and (
            self._owed or self._owe_all or self._answered_at is None
        ):
            await asyncio.sleep(0.1)
            try:
                if self._owe_all:
                    await self._renew(None)
                    self._owe_all = False
                for namespace in list(self._owed):
                    await self._renew(namespace)
                    self._owed.discard(namespace)
                await self._redis.ping()
            except Exception as exc:  # still down
                self._failed(exc)
                continue
            self._ok()

    async def close(self) -> None:
        await self._reads.close()
        if self._healing is not None:
            self._healing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._healing
        if self._owns_client:
            await self._redis.aclose()

    def _data_key(self, namespace: str, key: bytes) -> str:
        return f"{self.prefix}:d:{_digest(namespace)}:{key.hex()}"

    def _index_key(self, namespace: str, kind: str, value: str) -> str:
        return f"{self.prefix}:i:{_digest(namespace)}:{kind}:{_digest(value)}"

    def _epoch_key(self, namespace: str) -> str:
        return f"{self.prefix}:v:{_digest(namespace)}"

    def _generation_key(self, namespace: str) -> str:
        return f"{self.prefix}:g:{_digest(namespace)}"

    @property
    def _generation_all_key(self) -> str:
        return f"{self.prefix}:g"

    @property
    def _meta_life(self) -> int:
        """Seconds indexes outlive their entries, and epochs any lookup in flight."""
        return int(self.ttl) + 60

    def _failed(self, exc: Exception) -> None:
        self._breaker.failed()
        self._outages.failed(exc, "skipping it")
        self._failed_at = time.monotonic()
        self._answered_at = None
        self._start_healing()

    def _ok(self) -> None:
        self._breaker.succeeded()
        self._outages.ok()
        if self._failed_at is not None and self._answered_at is None:
            self._answered_at = time.monotonic()
