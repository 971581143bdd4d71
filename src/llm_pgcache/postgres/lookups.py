"""Exact lookups, alone or in rounds: lookups that overlap share one query (`rounds`).

Under load, many lookups thus share one round trip, one pooled connection and one
statement's overhead instead of queueing for connections one by one. A lookup that finds
no other waiting, and fewer than `alone` lookups running their own query, runs its own
point query at once, in its caller's task; a round that took one lookup runs the point
query too. A larger round runs in llm_cache_exact_round (migration 0010), on a plan made
once per connection: 0.085-0.095 ms of server CPU for rounds of two to eight keys,
against 0.05 for the point query and 0.18-0.20 for the same query over arrays as a
statement of its own, which the server plans afresh on every call (measured on the
semantic benchmark's server). Semantic lookups (`semantic.search`) always go in rounds:
an ANN query costs milliseconds, the round's few microseconds vanish in it.

The defaults (one alone, one round in flight) come from tuning runs of
benchmarks/exact.py and benchmarks/semantic.py (docs/benchmarks.md): with rounds that
cheap, lookups that wait for the round in flight and share the next make fewer
statements (each a round trip, a send and a wake-up of a server process) than lookups
that each run their own.
"""

from __future__ import annotations

import asyncio
from typing import Any, LiteralString, NamedTuple

import asyncpg

from llm_pgcache.errors import BackendError, InvalidInputError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.pool import Connections
from llm_pgcache.rounds import Rounds


class _ExactQuery(NamedTuple):
    namespace: str
    cache_key: bytes
    stale_grace: float  # seconds


class ExactLookups:
    """Live rows by (namespace, cache_key), over a pool, alone or in shared rounds."""

    def __init__(
        self, db: Connections, *, alone: int = 1, rounds: int = 1, max_batch: int = 256
    ) -> None:
        self._db = db
        self._alone_limit = alone
        self._alone = 0  # lookups running their own query
        self._rounds: Rounds[_ExactQuery, asyncpg.Record | None] = Rounds(
            self._round, rounds=rounds, max_batch=max_batch
        )

    async def get(
        self, namespace: str, cache_key: bytes, stale_grace: float, budget: float | None
    ) -> asyncpg.Record | None:
        """The live row of `cache_key` in `namespace` (or one expired less than
        `stale_grace` seconds ago, with `stale` true), or None.

        `budget` (seconds) bounds a shared round this lookup is part of. A lookup run in
        its caller's task is bounded by the caller (the cache's deadline).

        Raises:
            BackendError: the query failed, or the round ran out of time.
        """
        query = _ExactQuery(namespace, cache_key, stale_grace)
        if self._alone < self._alone_limit and not self._rounds.waiting:
            self._alone += 1
            try:
                return await self._point(query, None)
            finally:
                self._alone -= 1
        return await self._rounds.join(query, budget)

    async def close(self) -> None:
        """Fail the waiting lookups and stop the rounds in flight."""
        await self._rounds.close()

    async def _round(
        self, batch: list[_ExactQuery], budget: float | None
    ) -> list[asyncpg.Record | Exception | None]:
        if len(batch) == 1:  # the point query, planned once: the arrays' is planned each time
            return [await self._point(batch[0], budget)]
        columns = (
            [q.namespace for q in batch],
            [q.cache_key for q in batch],
            [q.stale_grace for q in batch],
        )
        try:
            rows = await self._fetch(sql.GET_EXACT_ROUND, columns, budget)
        except InvalidInputError:
            return await self._one_by_one(batch, budget)  # the refused value fails alone
        found: list[asyncpg.Record | Exception | None] = [None] * len(batch)
        for row in rows:
            found[row["slot"] - 1] = row
        return found

    async def _one_by_one(
        self, batch: list[_ExactQuery], budget: float | None
    ) -> list[asyncpg.Record | Exception | None]:
        """Each lookup of a round the server refused, on its own (`alone` at a time): the
        value it refused fails only the lookup that carried it."""
        slots = asyncio.Semaphore(max(1, self._alone_limit))

        async def alone(query: _ExactQuery) -> asyncpg.Record | Exception | None:
            async with slots:
                try:
                    return await self._point(query, budget)
                except Exception as exc:  # its own failure
                    return exc

        return list(await asyncio.gather(*(alone(query) for query in batch)))

    async def _point(self, query: _ExactQuery, budget: float | None) -> asyncpg.Record | None:
        """One lookup's row by the point query (`GET_EXACT`), or None."""
        rows = await self._fetch(sql.GET_EXACT, query, budget)
        return rows[0] if rows else None

    async def _fetch(
        self, query: LiteralString, args: tuple[Any, ...], budget: float | None
    ) -> list[Any]:
        try:
            return await self._db.fetch(query, *args, budget=budget)
        except BackendError as exc:
            if isinstance(exc.__cause__, TimeoutError) and budget is not None:
                raise BackendError(
                    f"PostgreSQL lookup took longer than {budget * 1000:.0f} ms"
                ) from exc
            raise
