"""Budgeted rounds (semantic lookups): under more load than the rounds can serve within
the budget, a lookup is told `Late` at once, and those that join are served in time."""

from __future__ import annotations

import asyncio
import time

from llm_pgcache.rounds import Late, Rounds

BUDGET = 0.2  # seconds
PER_QUERY = 0.02  # seconds a round takes per query in it (a busy server)


async def slow_run(queries: list[int], budget: float | None) -> list[int]:
    """A round's call: PER_QUERY seconds for each of its queries."""
    await asyncio.sleep(PER_QUERY * len(queries))
    return [q * 10 for q in queries]


async def timed(rounds: Rounds[int, int], query: int) -> tuple[float, int | Exception]:
    started = time.perf_counter()
    try:
        outcome: int | Exception = await rounds.join(query, BUDGET)
    except Late as late:
        outcome = late
    return time.perf_counter() - started, outcome


async def overload(rounds: Rounds[int, int]) -> list[tuple[float, int | Exception]]:
    """One lookup alone (the rounds learn their time per query), then 64 at once:
    1.3 s of work for two rounds at a time, against a 0.2 s budget."""
    assert await rounds.join(1, BUDGET) == 10
    return await asyncio.gather(*(timed(rounds, n) for n in range(64)))


async def test_lookups_that_would_be_late_are_told_before_their_budget_the_rest_in_time() -> None:
    results = await overload(Rounds(slow_run, rounds=2, max_batch=8, budgeted=True))
    served = [(elapsed, outcome) for elapsed, outcome in results if not isinstance(outcome, Late)]
    late = [elapsed for elapsed, outcome in results if isinstance(outcome, Late)]
    assert served
    assert late
    assert all(
        isinstance(outcome, Late) or outcome == n * 10 for n, (_, outcome) in enumerate(results)
    )
    assert max(elapsed for elapsed, _ in served) < BUDGET * 1.5  # a busy CI machine's margin
    assert max(late) < BUDGET  # before the budget ran out
    assert min(late) < 0.05  # those far behind at once (1.3 s of work queued)


async def test_unbudgeted_rounds_keep_everyone_waiting() -> None:
    """The same load on rounds that do not keep to budgets (exact lookups, embedder
    calls): no one is turned away, and the last wait far past the budget."""
    results = await overload(Rounds(slow_run, rounds=2, max_batch=8))
    assert not any(isinstance(outcome, Late) for _, outcome in results)
    assert [outcome for _, outcome in results] == [n * 10 for n in range(64)]
    assert max(elapsed for elapsed, _ in results) > BUDGET * 2


async def test_budgeted_rounds_are_sized_to_the_budget() -> None:
    """A round takes no more queries than it runs in a third of the budget."""
    sizes: list[int] = []

    async def run(queries: list[int], budget: float | None) -> list[int]:
        sizes.append(len(queries))
        return await slow_run(queries, budget)

    rounds: Rounds[int, int] = Rounds(run, rounds=2, max_batch=8, budgeted=True)
    await overload(rounds)
    assert max(sizes[1:]) <= int(BUDGET / 3 / PER_QUERY) + 1  # the smoothed time may lag
    assert max(sizes[1:]) < 8


async def test_lookups_that_joined_before_the_rounds_slowed_are_told_before_their_budget() -> None:
    """Rounds slow down twentyfold after the lookups joined: those whose round would end
    after their deadline are told `Late` as it starts, before their budget runs out, and
    those served still are within it."""
    per_query = 0.005

    async def run(queries: list[int], budget: float | None) -> list[int]:
        await asyncio.sleep(per_query * len(queries))
        return [q * 10 for q in queries]

    rounds: Rounds[int, int] = Rounds(run, rounds=1, max_batch=4, budgeted=True)
    for n in range(5):  # the rounds learn 5 ms a query
        assert await rounds.join(n, BUDGET) == n * 10
    per_query = 0.1
    results = await asyncio.gather(*(timed(rounds, n) for n in range(12)))
    assert all(isinstance(o, Late) or o == n * 10 for n, (_, o) in enumerate(results))
    served = [elapsed for elapsed, o in results if not isinstance(o, Late)]
    late = [elapsed for elapsed, o in results if isinstance(o, Late)]
    assert served
    assert late
    assert max(served) < BUDGET * 1.5
    assert max(late) < BUDGET


async def test_the_next_round_starts_before_the_last_rounds_callers_resume() -> None:
    """As a round returns, the round of the lookups that waited meanwhile is sent before
    the returned round's callers go on with their outcomes: the server works on it while
    they do (at 32 semantic lookups in flight, 2-5 % more hits a second, measured)."""
    events: list[str] = []
    second_round = asyncio.Event()

    async def run(queries: list[int], budget: float | None) -> list[int]:
        events.append(f"round {queries}")
        if queries == [2, 3]:
            second_round.set()
        await asyncio.sleep(0.05)
        return queries

    rounds: Rounds[int, int] = Rounds(run, rounds=1, max_batch=8)

    async def lookup(query: int) -> None:
        await rounds.join(query, None)
        events.append(f"resumed {query}")

    first = asyncio.ensure_future(lookup(1))  # alone: runs at once, in its own task
    await asyncio.sleep(0)
    second = [asyncio.ensure_future(lookup(q)) for q in (2, 3)]  # wait for a round
    await second_round.wait()  # round [2, 3] under way
    later = [asyncio.ensure_future(lookup(q)) for q in (4, 5)]  # wait for the next one
    await asyncio.gather(first, *second, *later)
    assert events.index("round [4, 5]") < events.index("resumed 2")
    assert events.index("round [4, 5]") < events.index("resumed 3")
