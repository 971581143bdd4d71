"""Exact lookups in rounds: lookups that overlap share one query.

A lookup that finds no other waiting, and fewer than `alone` lookups running their own
query, runs its own point query at once, in its caller's task. Lookups that come while
`alone` are running wait, and a round takes every waiting lookup (up to `max_batch`) into
one query, in a task of its own; at most `rounds` rounds are in flight, and as one
returns the next takes what waited meanwhile. Under load, many lookups thus share one
round trip, one pooled connection and one statement's overhead instead of queueing for
connections one by one; nothing ever waits for company.

The defaults (4 alone, 2 rounds) come from a tuning run of benchmarks/exact.py
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from typing import Any, LiteralString, NamedTuple

import asyncpg

from llm_pgcache.errors import BackendError, InvalidInputError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.pool import Connections


class _Waiting(NamedTuple):
    """A lookup waiting for a round."""

    namespace: str
    cache_key: bytes
    stale_grace: float  # seconds
    budget: float | None  # seconds
    future: asyncio.Future[asyncpg.Record | None]


class ExactLookups:
    """Live rows by (namespace, cache_key), over a pool, in rounds of shared queries."""

    def __init__(
        self, db: Connections, *, alone: int = 4, rounds: int = 2, max_batch: int = 256
    ) -> None:
        self._db = db
        self._alone_limit = alone
        self._rounds = rounds
        self._max_batch = max_batch
        self._alone = 0  # lookups running their own query
        self._in_flight = 0  # rounds
        self._waiting: list[_Waiting] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def get(
        self, namespace: str, cache_key: bytes, stale_grace: float, budget: float | None
    ) -> asyncpg.Record | None:
        """The live row of `cache_key` in `namespace` (or one expired less than
        `stale_grace` seconds ago, with `stale` true), or None.

        `budget` (seconds) bounds a shared round this lookup is part of: a round runs
        for the longest budget of its lookups. A lookup run in its caller's task is
        bounded by the caller (the cache's deadline).

        Raises:
            BackendError: the query failed, or the round ran out of time.
        """
        if self._alone < self._alone_limit and not self._waiting:
            self._alone += 1
            try:
                rows = await self._fetch(sql.GET_EXACT, (namespace, cache_key, stale_grace), None)
            finally:
                self._alone -= 1
            return rows[0] if rows else None
        loop = asyncio.get_running_loop()
        future: asyncio.Future[asyncpg.Record | None] = loop.create_future()
        self._waiting.append(_Waiting(namespace, cache_key, stale_grace, budget, future))
        if not self._flush_scheduled and self._in_flight < self._rounds:
            # Let the lookups of this turn of the event loop join the round.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def close(self) -> None:
        """Fail the waiting lookups and stop the rounds in flight."""
        waiting, self._waiting = self._waiting, []
        for lookup in waiting:
            if not lookup.future.done():
                lookup.future.set_exception(BackendError("the cache was closed"))
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _round_done(self) -> None:
        self._in_flight -= 1
        if self._waiting and not self._flush_scheduled:
            self._flush()  # what waited meanwhile goes at once

    def _flush(self) -> None:
        """Start rounds for the waiting lookups, as many as may be in flight."""
        self._flush_scheduled = False
        while self._in_flight < self._rounds and self._waiting:
            batch = [w for w in self._waiting[: self._max_batch] if not w.future.done()]
            del self._waiting[: self._max_batch]
            if batch:
                self._in_flight += 1
                task = asyncio.get_running_loop().create_task(self._round(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    async def _round(self, batch: list[_Waiting]) -> None:
        budgets = [w.budget for w in batch]
        budget = None if None in budgets else max(b for b in budgets if b is not None)
        try:
            columns = (
                [w.namespace for w in batch],
                [w.cache_key for w in batch],
                [w.stale_grace for w in batch],
            )
            try:
                rows = await self._fetch(sql.GET_EXACT_ROUND, columns, budget)
            except InvalidInputError:
                if len(batch) == 1:
                    raise
                await self._one_by_one(batch, budget)  # the refused value fails alone
                return
        except BaseException as exc:  # each lookup of the round raises it; closing cancels
            failure = exc if isinstance(exc, Exception) else BackendError("the cache was closed")
            for lookup in batch:
                if not lookup.future.done():
                    lookup.future.set_exception(failure)
            if failure is not exc:
                raise
        else:
            found: list[asyncpg.Record | None] = [None] * len(batch)
            for row in rows:
                found[row["slot"] - 1] = row
            for lookup, row in zip(batch, found, strict=True):
                if not lookup.future.done():
                    lookup.future.set_result(row)
        finally:
            self._round_done()

    async def _one_by_one(self, batch: list[_Waiting], budget: float | None) -> None:
        """Each lookup of a round the server refused, on its own (four at a time): the
        value it refused fails only the lookup that carried it."""
        slots = asyncio.Semaphore(self._alone_limit)

        async def alone(lookup: _Waiting) -> None:
            async with slots:
                try:
                    args = (lookup.namespace, lookup.cache_key, lookup.stale_grace)
                    rows = await self._fetch(sql.GET_EXACT, args, budget)
                except Exception as exc:  # its own failure
                    if not lookup.future.done():
                        lookup.future.set_exception(exc)
                    return
            if not lookup.future.done():
                lookup.future.set_result(rows[0] if rows else None)

        await asyncio.gather(*(alone(lookup) for lookup in batch))

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
