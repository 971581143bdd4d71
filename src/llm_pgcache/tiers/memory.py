"""L1: an in-process LRU of hits, bounded by entries and bytes, with a TTL.

Entries are found by the exact key of the request that was looked up; a semantic hit is
kept under the key of the request it answered. An entry never outlives the row it came
from (its deadline is the sooner of the row's remaining lifetime and the tier's TTL), and
invalidations reach it by the key, tag or model of that row. Responses are kept as JSON
text and decoded per hit, so callers never share (or mutate) one dict.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from dataclasses import dataclass

from llm_pgcache.entries import CacheHit, TierCopy, load_response
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.invalidation import Change


@dataclass(slots=True)
class _Slot:
    hit: CacheHit
    response_json: str
    deadline: float  # time.monotonic()
    size: int


class MemoryTier:
    """Process-memory cache of hits.

    Args:
        max_entries: entries kept at most (least recently used go first).
        max_bytes: bytes of response JSON kept at most.
        ttl: seconds an entry lives at most, whatever the row's own expiry.
        heartbeat: seconds between proofs that invalidation notices still arrive. A
            notice that does not come back within another `heartbeat` makes the tier
            cleared and bypassed until its listener is back: on a network that silently
            drops packets, an invalidated entry is served for at most twice this long.
    """

    def __init__(
        self,
        *,
        max_entries: int = 10_000,
        max_bytes: int = 64 * 1024 * 1024,
        ttl: float = 300.0,
        heartbeat: float = 1.0,
    ) -> None:
        if heartbeat <= 0:
            raise InvalidInputError("heartbeat must be a positive number of seconds")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.ttl = ttl
        self.heartbeat = heartbeat
        self._slots: OrderedDict[tuple[str, bytes], _Slot] = OrderedDict()
        self._bytes = 0

    def get(self, namespace: str, key: bytes) -> CacheHit | None:
        slot = self._slots.get((namespace, key))
        if slot is None:
            return None
        if time.monotonic() >= slot.deadline:
            self._drop((namespace, key))
            return None
        self._slots.move_to_end((namespace, key))
        return slot.hit.with_response(load_response(slot.response_json), "memory")

    def put(self, copy: TierCopy) -> None:
        """Keep `copy.hit` for lookups of `copy.key`, for at most `copy.ttl_left` seconds."""
        size = len(copy.response_json)
        ttl_left = copy.ttl_left
        if size > self.max_bytes or (ttl_left is not None and ttl_left <= 0):
            return
        lifetime = self.ttl if ttl_left is None else min(self.ttl, ttl_left)
        slot_key = (copy.namespace, copy.key)
        self._drop(slot_key)
        self._slots[slot_key] = _Slot(
            copy.hit, copy.response_json, time.monotonic() + lifetime, size
        )
        self._bytes += size
        while len(self._slots) > self.max_entries or self._bytes > self.max_bytes:
            self._drop(next(iter(self._slots)))

    def invalidate(self, change: Change) -> int:
        """Drop the entries from the rows `change` names; returns how many."""
        namespace, key, tag, model = change.namespace, change.key, change.tag, change.model
        doomed = [
            slot_key
            for slot_key, slot in self._slots.items()
            if slot_key[0] == namespace
            and (key is None or slot.hit.key == key)
            and (tag is None or tag in slot.hit.tags)
            and (model is None or slot.hit.model == model)
        ]
        for slot_key in doomed:
            self._drop(slot_key)
        return len(doomed)

    def clear(self) -> None:
        self._slots.clear()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def size_bytes(self) -> int:
        """Bytes of response JSON held."""
        return self._bytes

    def _drop(self, slot_key: tuple[str, bytes]) -> None:
        slot = self._slots.pop(slot_key, None)
        if slot is not None:
            self._bytes -= slot.size
