"""The tiers above PostgreSQL: process memory (L1) and Redis (L2), both optional.

A live hit from PostgreSQL is promoted to both; every change drops their copies: in this
process directly, in the other processes' memory through the NOTIFY notices
(`invalidation`), and in Redis, which the processes share, directly. Process memory
answers only while those notices reach it.

A lookup that misses above reads a `Ticket` first, and its promotion of what PostgreSQL
answers goes only where nothing it may have read was invalidated since: a row read just
before another call deleted it is never put back above it. Redis keeps an epoch per
namespace for that (`store.redis`); memory counts this process's drops and the notices it
applied, in slots shared by hash: one per row, one per namespace for its rows, one per
namespace for broader drops (tags, models, all of it), and one count of clears. An exact
hit checks its row's slot, so a drop of one row holds back only the promotions in flight
of rows in its slot (one in 4,096); a semantic hit, whose row is not the looked-up one,
checks its namespace's row drops.
"""

from __future__ import annotations

import contextlib
import logging
from typing import NamedTuple

from llm_pgcache.entries import CacheHit, TierCopy
from llm_pgcache.errors import BackendError, ConfigurationError
from llm_pgcache.invalidation import Change, read_notice
from llm_pgcache.postgres.sessions import Listener
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.tiers.memory import MemoryTier
from llm_pgcache.tiers.redis import Epoch, RedisTier

logger = logging.getLogger(__name__)

_SLOTS = 4096


class Generations(NamedTuple):
    """The memory tier's drop counts that one lookup depends on (see the module doc)."""

    clears: int
    broad: int  # the namespace's drops of more than one row (tags, models, all)
    rows: int  # the namespace's row drops
    row: int  # the looked-up row's slot


class Ticket(NamedTuple):
    """What a lookup saw of the tiers before it asked PostgreSQL."""

    generations: Generations
    epoch: Epoch  # the namespace's Redis epoch


NO_TIERS = Ticket(Generations(0, 0, 0, 0), None)


class UpperTiers:
    """Memory and Redis, as one: look up, promote, drop."""

    def __init__(
        self,
        memory: MemoryTier | None,
        redis: RedisTier | None,
        *,
        store: PostgresStore,
        origin: str,
    ) -> None:
        self._memory = memory
        self._redis = redis
        self._store = store  # for LISTEN and the notices sent again after Redis
        self._origin = origin  # tells this process's notices from others
        self._listener: Listener | None = None
        self._cleared = 0  # times memory was cleared
        self._drops = [0] * _SLOTS  # drops per slot, by hash (see `_generations`)
        self.active = memory is not None or redis is not None

    async def listen(self) -> None:
        """Keep the memory tier fresh through other processes' notices."""
        memory = self._memory
        if memory is None:
            return
        if self._store.pooler == "transaction" and self._store.listen_dsn is None:
            # LISTEN lasts for a session; a transaction-mode pooler hands the session to
            # others after each transaction, and the notices would never come.
            raise ConfigurationError(
                "the memory tier needs LISTEN on a direct connection behind a "
                "transaction-mode pooler: pass listen_dsn= (the server itself, not the "
                "pooler), or leave the memory tier out"
            )

        def on_notice(payload: str) -> None:
            try:
                change = read_notice(payload, self._origin)
            except ValueError:
                logger.warning("llm-pgcache got a malformed invalidation notice; clearing memory")
                self._clear_memory()
                return
            if change is not None:
                self._drop_from_memory(change)

        self._listener = await self._store.listen(
            on_notice, self._clear_memory, heartbeat=memory.heartbeat
        )

    async def get(self, namespace: str, key: bytes) -> tuple[CacheHit | None, Ticket]:
        """A hit from process memory, else from Redis (then promoted to memory); and, for
        a miss, the ticket to `promote` what PostgreSQL answers."""
        memory = self._usable_memory()
        if memory is not None and (hit := memory.get(namespace, key)) is not None:
            return hit, NO_TIERS
        generations = self._generations(namespace, key)  # before Redis and PostgreSQL
        epoch: Epoch = None
        if self._redis is not None:
            copy, epoch = await self._redis.get(namespace, key)
            if copy is not None:
                if memory is not None and self._unchanged(generations, copy):
                    memory.put(copy)
                return copy.hit, NO_TIERS
        return None, Ticket(generations, epoch)

    async def promote(self, copy: TierCopy, *, ticket: Ticket) -> None:
        """Copy a live hit from PostgreSQL into the tiers above, where nothing was
        invalidated since `ticket` was read. With a read replica, only in a process that
        listens: it hears of every invalidation, and reads the primary until the replica
        has it (`postgres.replica`); another might copy what a lagging replica still
        holds after an invalidation, and keep it."""
        if self._store.replica is not None and not self.listening:
            return
        if self._redis is not None:
            await self._redis.put(copy, epoch=ticket.epoch)
        memory = self._usable_memory()
        if memory is not None and self._unchanged(ticket.generations, copy):
            memory.put(copy)

    async def drop(self, change: Change) -> None:
        """Drop the copies of the rows `change` names (PostgreSQL already holds the
        change); the next lookup promotes what PostgreSQL then holds.

        Redis first, then memory: a lookup in between can only take into memory what
        Redis holds after its drop. Other processes heard of the change at its commit,
        possibly before Redis was cleared, and may have taken the old Redis copy into
        their memory meanwhile: with Redis, the notice goes out once more after it.
        """
        if self._redis is not None:
            await self._redis.invalidate(change)
        self._drop_from_memory(change)
        if self._redis is not None:
            with contextlib.suppress(BackendError):  # the commit's notice went out
                await self._store.notify(change.notice(self._origin))

    async def close(self) -> None:
        if self._listener is not None:
            await self._listener.close()
        if self._redis is not None:
            await self._redis.close()

    def _drop_from_memory(self, change: Change) -> None:
        if self._memory is None:
            return
        namespace = change.namespace
        if change.key is not None:
            self._drops[hash((namespace, change.key)) % _SLOTS] += 1
            self._drops[hash(("rows", namespace)) % _SLOTS] += 1
        else:
            self._drops[hash(namespace) % _SLOTS] += 1
        self._memory.invalidate(change)

    def _clear_memory(self) -> None:
        if self._memory is not None:
            self._cleared += 1
            self._memory.clear()

    def _generations(self, namespace: str, key: bytes) -> Generations:
        drops = self._drops
        return Generations(
            clears=self._cleared,
            broad=drops[hash(namespace) % _SLOTS],
            rows=drops[hash(("rows", namespace)) % _SLOTS],
            row=drops[hash((namespace, key)) % _SLOTS],
        )

    def _unchanged(self, seen: Generations, copy: TierCopy) -> bool:
        """Whether nothing that `copy` depends on was dropped since `seen`."""
        now = self._generations(copy.namespace, copy.key)
        if (now.clears, now.broad) != (seen.clears, seen.broad):
            return False
        if copy.hit.key == copy.key:  # exact: its own row
            return now.row == seen.row
        return now.rows == seen.rows  # semantic: any row of the namespace

    @property
    def listening(self) -> bool:
        """Whether invalidation notices reach this process now."""
        return self._listener is not None and self._listener.connected

    def _usable_memory(self) -> MemoryTier | None:
        """The memory tier, while invalidation notices reach it."""
        return self._memory if self.listening else None
