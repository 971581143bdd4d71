"""How a cache treats its backend's failures: deadlines, fail-open, the circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from llm_pgcache.breaker import CircuitBreaker
from llm_pgcache.errors import BackendError
from llm_pgcache.metrics import Metrics

logger = logging.getLogger("llm_pgcache")


class Deadline:
    """`asyncio.timeout` that raises BackendError; a class, not a generator, because it
    wraps every lookup."""

    __slots__ = ("_seconds", "_timeout", "_what")

    def __init__(self, seconds: float | None, what: str) -> None:
        self._seconds = seconds
        self._what = what
        self._timeout = asyncio.timeout(seconds) if seconds is not None else None

    async def __aenter__(self) -> None:
        if self._timeout is not None:
            await self._timeout.__aenter__()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._timeout is None:
            return
        try:
            await self._timeout.__aexit__(exc_type, exc, tb)
        except TimeoutError as timeout:
            limit_ms = (self._seconds or 0.0) * 1000
            raise BackendError(
                f"PostgreSQL {self._what} took longer than {limit_ms:.0f} ms"
            ) from timeout


class BackendHealth:
    """Tracks backend failures: logs once per outage, feeds the breaker, and re-raises
    only in strict mode (otherwise the caller serves a miss)."""

    def __init__(self, *, strict: bool, breaker: CircuitBreaker, metrics: Metrics) -> None:
        self.strict = strict
        self.breaker = breaker
        self._metrics = metrics
        self._down = False

    def deadline(self, seconds: float | None, what: str) -> Deadline:
        """Bound a backend call (`async with`); running out of time is a BackendError."""
        return Deadline(seconds, what)

    def failed(self, exc: BackendError) -> None:
        """Count a failure; raises it again in strict mode."""
        self._metrics.backend_error()
        self.breaker.failed()
        if self.strict:
            raise exc
        if not self._down:  # once per outage, not once per request
            logger.warning("llm-pgcache backend failed, serving misses: %s", exc)
            self._down = True

    def ok(self) -> None:
        self.breaker.succeeded()
        if self._down:
            logger.warning("llm-pgcache backend is back")
            self._down = False
