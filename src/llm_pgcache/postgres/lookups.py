"""Lookups in rounds: lookups that overlap share one query.

`Rounds` is the one mechanism. A lookup that joins it waits for the next round; a round
takes every waiting lookup (up to `max_batch`) into one query, in a task of its own; at
most `rounds` rounds are in flight, and as one returns the next takes what waited
meanwhile. Under load, many lookups thus share one round trip, one pooled connection and
one statement's overhead instead of queueing for connections one by one; nothing ever
waits for company (a round starts in the same turn of the event loop as its first
lookup when a round may start).

Exact lookups (`ExactLookups`) also run alone: a lookup that finds no other waiting, and
fewer than `alone` lookups running their own query, runs its own point query at once, in
its caller's task (a shared query over arrays is planned afresh each time, ~60 µs, which
a lone point lookup of ~100 µs would feel). Semantic lookups (`semantic.search`) always
go in rounds: an ANN query costs milliseconds, the round's few microseconds vanish in it.

The exact defaults (4 alone, 2 rounds) come from a tuning run of benchmarks/exact.py
(docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Generic, LiteralString, NamedTuple, TypeVar

import asyncpg

from llm_pgcache.errors import BackendError, InvalidInputError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.pool import Connections

Q = TypeVar("Q")
R = TypeVar("R")

# One round: the queries of the waiting lookups and the longest of their budgets
# (seconds, None: no limit) -> an outcome per query, in order: its result, or the
# exception that fails that lookup alone. An exception raised fails the whole round.
RoundRunner = Callable[[list[Q], float | None], Awaitable[Sequence[R | Exception]]]


class _Waiting(NamedTuple, Generic[Q, R]):
    query: Q
    budget: float | None  # seconds
    future: asyncio.Future[R]


class Rounds(Generic[Q, R]):
    """Lookups that overlap, run together by `run`, at most `rounds` rounds at a time."""

    def __init__(self, run: RoundRunner[Q, R], *, rounds: int, max_batch: int) -> None:
        self._run = run
        self._rounds = rounds
        self._max_batch = max_batch
        self._in_flight = 0
        self._waiting: list[_Waiting[Q, R]] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def waiting(self) -> bool:
        """Whether lookups are waiting for a round."""
        return bool(self._waiting)

    async def join(self, query: Q, budget: float | None) -> R:
        """The outcome of `query`, run in the next round. `budget` (seconds) bounds that
        round: it runs for the longest budget of its lookups. A caller that stops waiting
        (its own deadline) leaves the round; the others go on."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Waiting(query, budget, future))
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

    async def _round(self, batch: list[_Waiting[Q, R]]) -> None:
        budgets = [w.budget for w in batch]
        budget = None if None in budgets else max(b for b in budgets if b is not None)
        try:
            outcomes = await self._run([w.query for w in batch], budget)
        except BaseException as exc:  # each lookup of the round raises it; closing cancels
            failure = exc if isinstance(exc, Exception) else BackendError("the cache was closed")
            for lookup in batch:
                if not lookup.future.done():
                    lookup.future.set_exception(failure)
            if failure is not exc:
                raise
        else:
            for lookup, outcome in zip(batch, outcomes, strict=True):
                if lookup.future.done():
                    continue
                if isinstance(outcome, Exception):
                    lookup.future.set_exception(outcome)
                else:
                    lookup.future.set_result(outcome)
        finally:
            self._round_done()


class _ExactQuery(NamedTuple):
    namespace: str
    cache_key: bytes
    stale_grace: float  # seconds


class ExactLookups:
    """Live rows by (namespace, cache_key), over a pool, alone or in shared rounds."""

    def __init__(
        self, db: Connections, *, alone: int = 4, rounds: int = 2, max_batch: int = 256
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
                rows = await self._fetch(sql.GET_EXACT, query, None)
            finally:
                self._alone -= 1
            return rows[0] if rows else None
        return await self._rounds.join(query, budget)

    async def close(self) -> None:
        """Fail the waiting lookups and stop the rounds in flight."""
        await self._rounds.close()

    async def _round(
        self, batch: list[_ExactQuery], budget: float | None
    ) -> list[asyncpg.Record | Exception | None]:
        columns = (
            [q.namespace for q in batch],
            [q.cache_key for q in batch],
            [q.stale_grace for q in batch],
        )
        try:
            rows = await self._fetch(sql.GET_EXACT_ROUND, columns, budget)
        except InvalidInputError:
            if len(batch) == 1:
                raise
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
        slots = asyncio.Semaphore(self._alone_limit)

        async def alone(query: _ExactQuery) -> asyncpg.Record | Exception | None:
            async with slots:
                try:
                    rows = await self._fetch(sql.GET_EXACT, query, budget)
                except Exception as exc:  # its own failure
                    return exc
            return rows[0] if rows else None

        return list(await asyncio.gather(*(alone(query) for query in batch)))

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
