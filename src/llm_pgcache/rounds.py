"""Rounds: work that overlaps shares one call (a query, an embedder call).

A caller that joins waits for the next round; a round takes every waiting caller (up to
`max_batch`) into one call of `run`, in a task of its own; at most `rounds` rounds are in
flight, and as one returns the next takes what waited meanwhile. Nothing ever waits for
company: a caller that finds no round in flight and none waiting runs its call itself, in
its own task (a round of one, no task or turn of the loop to wait for); otherwise a round
starts in the same turn of the event loop as its first caller when a round may start.
Each caller gets its own outcome: one bad value fails only the caller that brought it.

Used by exact lookups' shared queries (`postgres.lookups`), semantic lookups' rounds
(`semantic.search`: one query for many vectors) and embedder calls (`semantic.batches`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from llm_pgcache.errors import BackendError

# A round runs for the longest budget of its lookups and this much more. Its callers
# are held to their own budgets (the cache's deadlines, which do not count time the event
# loop was frozen); the round's own bound only hands its connection back when the server
# stops answering. Without the grace, a garbage collection that froze the loop past the
# budget would fail a whole round whose answer had already come.
ROUND_GRACE = 1.0  # seconds

Q = TypeVar("Q")
R = TypeVar("R")

# One round: the queries of the waiting callers and the longest of their budgets
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
        round: it runs for the longest budget of its lookups (and `ROUND_GRACE`). A caller
        that stops waiting (its own deadline) leaves the round; the others go on."""
        if not self._in_flight and not self._waiting:  # alone: no company to wait for
            return await self._alone(query, budget)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        self._waiting.append(_Waiting(query, budget, future))
        if not self._flush_scheduled and self._in_flight < self._rounds:
            # Let the lookups of this turn of the event loop join the round.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    async def _alone(self, query: Q, budget: float | None) -> R:
        """A round of one, run in the caller's task (no task, no turn of the loop to
        wait); those who join meanwhile wait for the next round, as behind any other."""
        self._in_flight += 1
        try:
            (outcome,) = await self._run([query], _bound([budget]))
        finally:
            self._round_done()
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

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
        try:
            outcomes = await self._run([w.query for w in batch], _bound([w.budget for w in batch]))
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


def _bound(budgets: list[float | None]) -> float | None:
    """A round's own bound: the longest budget of its callers and `ROUND_GRACE`; None
    (no bound) when one of them has none."""
    if None in budgets:
        return None
    return max(b for b in budgets if b is not None) + ROUND_GRACE
