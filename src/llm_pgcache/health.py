"""How a cache treats its backend's failures: deadlines, fail-open, the circuit breaker."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from llm_pgcache.breaker import CircuitBreaker
from llm_pgcache.errors import BackendError
from llm_pgcache.metrics import Metrics

logger = logging.getLogger("llm_pgcache")


class BackendHealth:
    """Tracks backend failures: logs once per outage, feeds the breaker, and re-raises
    only in strict mode (otherwise the caller serves a miss)."""

    def __init__(self, *, strict: bool, breaker: CircuitBreaker, metrics: Metrics) -> None:
        self.strict = strict
        self.breaker = breaker
        self._metrics = metrics
        self._down = False

    @asynccontextmanager
    async def deadline(self, seconds: float | None, what: str) -> AsyncIterator[None]:
        """Bound a backend call; running out of time is a backend failure."""
        try:
            async with asyncio.timeout(seconds):
                yield
        except TimeoutError as exc:
            limit_ms = (seconds or 0.0) * 1000
            raise BackendError(f"PostgreSQL {what} took longer than {limit_ms:.0f} ms") from exc

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
