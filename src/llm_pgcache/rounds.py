"""Rounds: work that overlaps shares one call (a query, an embedder call).

A caller that joins waits for the next round; a round takes every waiting caller (up to
`max_batch`) into one call of `run`, in a task of its own; at most `rounds` rounds are in
flight, and as one returns the next takes what waited meanwhile (sent before the
returned round's callers resume: the server works on it while they go on). Nothing ever
waits for company: a caller that finds no round in flight and none waiting runs its call
itself, in its own task (a round of one, no task or turn of the loop to wait for);
otherwise a round starts in the same turn of the event loop as its first caller when a
round may start. Each caller gets its own outcome: one bad value fails only the caller
that brought it.

Rounds may keep to their callers' budgets (`budgeted`, semantic lookups). From how long
the last rounds took for their sizes (`RoundTimes`), a round takes no more queries than
it runs in a third of its first caller's budget (a third to wait for a slot, one for the
round, one to spare); a caller that would surely not have its outcome within its budget
(the rounds of those queued ahead of it, its own: twice its budget) is told `Late` at
once instead of waiting its whole budget for a round that comes too late, and so is,
as rounds return, a waiting caller whose outcome they say would now come after its
deadline (it joined before the rounds slowed, or before any had returned: until then
rounds are of one query). A caller that finds nothing in flight always goes, so the
times stay current.

Used by exact lookups' shared queries (`postgres.lookups`), semantic lookups' rounds
(`semantic.search`: one query for many vectors) and embedder calls (`semantic.batches`).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, NamedTuple, TypeVar

from llm_pgcache.errors import BackendError

# A round runs for the longest budget of its lookups and this much more. Its callers
# are held to their own budgets (the cache's deadlines, which do not count time the event
# loop was frozen); the round's own bound only hands its connection back when the server
# stops answering. Without the grace, a garbage collection that froze the loop past the
# budget would fail a whole round whose answer had already come.
ROUND_GRACE = 1.0  # seconds
_SMOOTHING = 0.2  # in `RoundTimes`, weight of the last round
_ROUND_SHARE = 1 / 3  # of its first caller's budget, a budgeted round's at most
_JOIN_MARGIN = 2.0  # a lookup expected after this many times its budget does not join
_SLOWER_WEIGHT = 0.5  # in `RoundTimes`, of a round slower than the line

Q = TypeVar("Q")
R = TypeVar("R")

# One round: the queries of the waiting callers and the longest of their budgets
# (seconds, None: no limit) -> an outcome per query, in order: its result, or the
# exception that fails that lookup alone. An exception raised fails the whole round.
RoundRunner = Callable[[list[Q], float | None], Awaitable[Sequence[R | Exception]]]


class Late(Exception):  # noqa: N818 - an outcome, not a failure
    """A budgeted lookup's outcome would come after its budget: a miss now, rather than
    one when the budget runs out."""


class _Waiting(NamedTuple, Generic[Q, R]):
    query: Q
    budget: float | None  # seconds
    future: asyncio.Future[R]
    deadline: float  # time.perf_counter() by which its outcome is due (inf: none)


class RoundTimes:
    """How long a round of n queries takes: a line fitted to the last rounds (sizes and
    durations, each older round weighing `1 - _SMOOTHING` less; a round slower than the
    line weighs `_SLOWER_WEIGHT`, so that the line follows a slowdown within a round or
    two, and a speed-up more calmly). A round's time is part fixed (a round trip, a
    statement's start), part per query; while the rounds were all of one size, it is
    taken as proportional to the size (more, for larger rounds, than the fixed part
    would give)."""

    __slots__ = ("_sums",)

    def __init__(self) -> None:
        # weighted means of 1, n, seconds, n * n and n * seconds
        self._sums = [0.0, 0.0, 0.0, 0.0, 0.0]

    @property
    def known(self) -> bool:
        return self._sums[0] > 0

    def add(self, queries: int, seconds: float) -> None:
        if not self.known:
            weight = 1.0
        elif seconds > self.seconds(queries):
            weight = _SLOWER_WEIGHT
        else:
            weight = _SMOOTHING
        sums = self._sums
        for i, value in enumerate((1.0, queries, seconds, queries * queries, queries * seconds)):
            sums[i] = sums[i] * (1.0 - weight) + value * weight

    def seconds(self, queries: int) -> float:
        """The expected seconds of a round of `queries` (0 before any round)."""
        if not self.known:
            return 0.0
        mean_n, mean_s, slope = self._line()
        return max(0.0, mean_s + slope * (queries - mean_n))

    def most_within(self, seconds: float, limit: int) -> int:
        """The most queries (1 to `limit`) a round is expected to run in `seconds`."""
        if not self.known:
            return limit
        mean_n, mean_s, slope = self._line()
        if slope <= 0:
            return limit
        return max(1, min(limit, int(mean_n + (seconds - mean_s) / slope)))

    def _line(self) -> tuple[float, float, float]:
        """(mean size, mean seconds, seconds per query more)."""
        weight, n, seconds, nn, ns = self._sums
        mean_n, mean_s = n / weight, seconds / weight
        spread = nn / weight - mean_n * mean_n
        if spread < 0.25:  # one size: proportional
            return mean_n, mean_s, mean_s / mean_n
        return mean_n, mean_s, max(0.0, (ns / weight - mean_n * mean_s) / spread)


class Rounds(Generic[Q, R]):
    """Lookups that overlap, run together by `run`, at most `rounds` rounds at a time."""

    def __init__(
        self, run: RoundRunner[Q, R], *, rounds: int, max_batch: int, budgeted: bool = False
    ) -> None:
        self._run = run
        self._rounds = rounds
        self._max_batch = max_batch
        self._budgeted = budgeted
        self._in_flight = 0
        self._waiting: list[_Waiting[Q, R]] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._times = RoundTimes()  # budgeted rounds only

    @property
    def waiting(self) -> bool:
        """Whether lookups are waiting for a round."""
        return bool(self._waiting)

    @property
    def idle(self) -> bool:
        """Whether no round is in flight and no lookup waits: one joining now runs alone."""
        return not self._in_flight and not self._waiting

    async def join(self, query: Q, budget: float | None) -> R:
        """The outcome of `query`, run in the next round. `budget` (seconds) bounds that
        round: it runs for the longest budget of its lookups (and `ROUND_GRACE`). A caller
        that stops waiting (its own deadline) leaves the round; the others go on.

        Raises:
            Late: (budgeted rounds) the outcome would come after `budget`.
        """
        if self.idle:  # alone: no company to wait for
            return await self._alone(query, budget)
        if self._budgeted and budget is not None and self._late(budget):
            raise Late
        loop = asyncio.get_running_loop()
        future: asyncio.Future[R] = loop.create_future()
        deadline = math.inf
        if self._budgeted and budget is not None:
            deadline = time.perf_counter() + budget
        self._waiting.append(_Waiting(query, budget, future, deadline))
        if not self._flush_scheduled and self._in_flight < self._rounds:
            # Let the lookups of this turn of the event loop join the round.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _late(self, budget: float) -> bool:
        """Whether a lookup of `budget` joining now would surely have its outcome too late:
        expected after `_JOIN_MARGIN` times its budget (never before a round has
        returned: nothing is known yet). Nearer cases join, and are told later if the
        rounds that return meanwhile say it will be too late (`_tell_late`)."""
        if not self._times.known:
            return False
        return self._expected_end(len(self._waiting), budget) > budget * _JOIN_MARGIN

    def _expected_end(self, position: int, budget: float | None) -> float:
        """Seconds from now to the outcome of the lookup `position` places down the
        queue: the rounds of those ahead of it start in the free slots now, then
        `rounds` at a time as rounds end (half a round for the first slot when none is
        free), then its own round."""
        size = self._batch_size(budget)
        ahead = position // size  # rounds of the lookups queued ahead of it
        free = self._rounds - self._in_flight
        if ahead < free:
            waves = 0.0
        elif free > 0:
            waves = 1.0 + (ahead - free) // self._rounds
        else:
            waves = 0.5 + ahead // self._rounds
        return self._times.seconds(size) * (waves + 1.0)

    def _batch_size(self, budget: float | None) -> int:
        """Queries a round takes at most: `max_batch`, and for budgeted rounds no more
        than it is expected to run in `_ROUND_SHARE` of `budget` (at least one; one
        until a round has returned)."""
        if not self._budgeted or budget is None:
            return self._max_batch
        if not self._times.known:
            return 1
        return self._times.most_within(budget * _ROUND_SHARE, self._max_batch)

    async def _alone(self, query: Q, budget: float | None) -> R:
        """A round of one, run in the caller's task (no task, no turn of the loop to
        wait); those who join meanwhile wait for the next round, as behind any other."""
        self._in_flight += 1
        started = time.perf_counter()
        try:
            (outcome,) = await self._run([query], _bound([budget]))
        finally:
            self._round_done(1, started)
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

    def _round_done(self, queries: int, started: float) -> None:
        self._in_flight -= 1
        if self._budgeted:
            self._times.add(queries, time.perf_counter() - started)
        if self._waiting and not self._flush_scheduled:
            self._flush()  # what waited meanwhile goes at once

    def _flush(self) -> None:
        """Start rounds for the waiting lookups, as many as may be in flight."""
        self._flush_scheduled = False
        if self._budgeted and self._times.known:
            self._tell_late()
        while self._in_flight < self._rounds and self._waiting:
            size = self._batch_size(self._waiting[0].budget)
            batch = [w for w in self._waiting[:size] if not w.future.done()]
            del self._waiting[:size]
            if batch:
                self._in_flight += 1
                task = asyncio.get_running_loop().create_task(self._round(batch))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _tell_late(self) -> None:
        """Tell `Late` the waiting lookups whose outcome, at the times of the rounds
        that returned last, would come after their deadline (they joined before the
        rounds slowed, or before any had returned): they leave the queue."""
        now = time.perf_counter()
        waiting: list[_Waiting[Q, R]] = []
        for lookup in self._waiting:
            if lookup.future.done():
                continue
            if now + self._expected_end(len(waiting), lookup.budget) > lookup.deadline:
                lookup.future.set_exception(Late())
            else:
                waiting.append(lookup)
        self._waiting = waiting

    async def _round(self, batch: list[_Waiting[Q, R]]) -> None:
        """Run `batch`, start the next round (before its callers resume: the server works
        on it while they go on), then hand each caller its outcome."""
        started = time.perf_counter()
        try:
            outcomes = await self._run([w.query for w in batch], _bound([w.budget for w in batch]))
        except BaseException as exc:  # each lookup of the round raises it; closing cancels
            self._round_done(len(batch), started)
            failure = exc if isinstance(exc, Exception) else BackendError("the cache was closed")
            for lookup in batch:
                if not lookup.future.done():
                    lookup.future.set_exception(failure)
            if failure is not exc:
                raise
            return
        self._round_done(len(batch), started)
        for lookup, outcome in zip(batch, outcomes, strict=True):
            if lookup.future.done():
                continue
            if isinstance(outcome, Exception):
                lookup.future.set_exception(outcome)
            else:
                lookup.future.set_result(outcome)


def _bound(budgets: list[float | None]) -> float | None:
    """A round's own bound: the longest budget of its callers and `ROUND_GRACE`; None
    (no bound) when one of them has none."""
    if None in budgets:
        return None
    return max(b for b in budgets if b is not None) + ROUND_GRACE
