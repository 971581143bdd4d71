"""Single-flight: one upstream call per key at a time, in this process.

The first caller of a key (the leader) does the work; callers arriving while it runs
(followers) wait and receive its result, or its exception. A leader that gives up
without a result (cancelled, or a stream abandoned midway) releases the key, and its
followers try again themselves.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class AbandonedError(Exception):
    """The leader stopped before it had a result; followers should try themselves."""


@dataclass(frozen=True, slots=True)
class Shared(Generic[T]):
    """A follower's answer: the result of the leader it waited for."""

    result: T


class Flight(Generic[T]):
    """One key's work in progress, held by its leader."""

    def __init__(self, group: SingleFlight[T], key: Hashable) -> None:
        self._group = group
        self._key = key
        self.future: asyncio.Future[T] = asyncio.get_running_loop().create_future()

    def finish(self, result: T) -> None:
        if not self.future.done():
            self.future.set_result(result)
        self._group._release(self._key, self)

    def fail(self, exc: BaseException) -> None:
        if not self.future.done():
            self.future.set_exception(exc)
            self.future.exception()  # retrieved: no "never retrieved" log without followers
        self._group._release(self._key, self)


class SingleFlight(Generic[T]):
    """Coalesces concurrent work on equal keys."""

    def __init__(self) -> None:
        self._flights: dict[Hashable, Flight[T]] = {}

    def join(self, key: Hashable) -> Flight[T] | asyncio.Future[T]:
        """A `Flight` to lead for a new key; otherwise the running leader's future."""
        flight = self._flights.get(key)
        if flight is not None:
            return flight.future
        flight = Flight(self, key)
        self._flights[key] = flight
        return flight

    async def lead_or_follow(self, key: Hashable) -> Flight[T] | Shared[T]:
        """A `Flight` when this caller is to do the work of `key` (finish or fail it);
        otherwise what the running leader produced (its exception is raised here). When a
        leader gives up, its followers try again: one leads, the others follow it."""
        while True:
            flight = self.join(key)
            if isinstance(flight, Flight):
                return flight
            try:
                return Shared(await asyncio.shield(flight))
            except AbandonedError:
                continue

    def _release(self, key: Hashable, flight: Flight[Any]) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def __len__(self) -> int:
        return len(self._flights)
