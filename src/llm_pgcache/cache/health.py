"""How a cache treats its backend's failures: deadlines, fail-open, the circuit breaker."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from types import TracebackType
from typing import Any

from llm_pgcache.breaker import CircuitBreaker, OutageLog
from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.errors import BackendError

logger = logging.getLogger(__name__)


class Watchdog:
    """Deadlines for many concurrent calls, kept by one patrolling task.

    `asyncio.timeout` arms a timer per call, and every lookup has a deadline: at
    thousands of lookups a second the timers cost more than the lookups' own Python.
    Here a call only notes its deadline in a dict; one task checks them every quarter of
    the shortest budget and cancels the calls that overran, which then raise
    BackendError. A deadline is thus honoured within a quarter of its length, not
    counting time the event loop was frozen (its patrol woke that much late).
    """

    def __init__(self) -> None:
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._tick = 1.0
        self._patrol: asyncio.Task[None] | None = None

    def deadline(
        self, seconds: float | None, what: str, error: type[BackendError] = BackendError
    ) -> Deadline:
        """Bound a call (`with`, around its awaits) of `what` ("PostgreSQL lookup");
        overrunning raises `error`."""
        return Deadline(self, seconds, what, error)

    def _watch(self, task: asyncio.Task[Any], seconds: float) -> None:
        self._deadlines[task] = time.monotonic() + seconds
        if seconds / 4 < self._tick:  # a shorter budget: patrol at its pace from now on
            self._tick = seconds / 4
            if self._patrol is not None:
                self._patrol.cancel()
                self._patrol = None
        if self._patrol is None or self._patrol.done():
            self._patrol = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        while self._deadlines:
            due = time.monotonic() + self._tick
            await asyncio.sleep(self._tick)
            now = time.monotonic()
            if (frozen := now - due) > self._tick:
                # The event loop ran nothing for that long (a garbage collection, a call
                # that blocked it): answers that came meanwhile wait in the sockets, and
                # their callers resume after this task. Frozen time is no backend's
                # slowness: every deadline moves by it, so those answers are served.
                for task in self._deadlines:
                    self._deadlines[task] += frozen
                continue
            for task, deadline in list(self._deadlines.items()):
                if deadline <= now and task not in self._expired:
                    self._expired.add(task)
                    task.cancel()

    async def close(self) -> None:
        if self._patrol is not None and not self._patrol.done():
            self._patrol.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._patrol


class Deadline:
    """One call's deadline, kept by a `Watchdog`; a class, as it wraps every lookup."""

    __slots__ = ("_cancelling", "_error", "_seconds", "_task", "_watchdog", "_what")

    def __init__(
        self, watchdog: Watchdog, seconds: float | None, what: str, error: type[BackendError]
    ) -> None:
        self._watchdog = watchdog
        self._seconds = seconds
        self._what = what
        self._error = error
        self._task: asyncio.Task[Any] | None = None
        self._cancelling = 0

    def __enter__(self) -> None:
        if self._seconds is None:
            return
        task = asyncio.current_task()
        if task is None:
            return
        self._task = task
        self._cancelling = task.cancelling()
        self._watchdog._watch(task, self._seconds)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None:
            return
        watchdog = self._watchdog
        watchdog._deadlines.pop(task, None)
        if task not in watchdog._expired:
            return
        watchdog._expired.discard(task)
        # Ours was the cancellation (and no one else's is pending): it is a timeout.
        if task.uncancel() <= self._cancelling and exc_type is asyncio.CancelledError:
            limit_ms = (self._seconds or 0.0) * 1000
            raise self._error(f"{self._what} took longer than {limit_ms:.0f} ms") from exc


class BackendHealth:
    """Tracks backend failures: logs once per outage, feeds the breaker, and re-raises
    only in strict mode (otherwise the caller serves a miss)."""

    def __init__(
        self,
        *,
        strict: bool,
        breaker: CircuitBreaker,
        metrics: Metrics,
        what: str = "backend",
        watchdog: Watchdog | None = None,
    ) -> None:
        self.strict = strict
        self.breaker = breaker
        self._metrics = metrics
        self._outages = OutageLog(logger, what)
        self._watchdog = watchdog or Watchdog()

    @property
    def watchdog(self) -> Watchdog:
        return self._watchdog

    def deadline(
        self, seconds: float | None, what: str, error: type[BackendError] = BackendError
    ) -> Deadline:
        """Bound a backend call (`with`) of `what`; running out of time raises `error`."""
        return self._watchdog.deadline(seconds, what, error)

    async def close(self) -> None:
        await self._watchdog.close()

    def failed(self, exc: BackendError) -> None:
        """Count a failure; raises it again in strict mode."""
        self._metrics.backend_error()
        self.breaker.failed()
        if self.strict:
            raise exc
        self._outages.failed(exc, "serving misses")

    def ok(self) -> None:
        self.breaker.succeeded()
        self._outages.ok()
