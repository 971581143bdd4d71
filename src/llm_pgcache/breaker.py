"""Backend outages: a circuit breaker (after repeated failures, stop asking for a
while), and a log of one warning per outage."""

from __future__ import annotations

import logging
import time


class CircuitBreaker:
    """Closed while the backend answers; open for `cooldown` seconds once `threshold`
    failures came in a row and nothing succeeded for `min_outage` seconds, during which
    callers skip the backend; then one call is let through (half-open): its success
    closes the circuit, its failure opens it again.

    `min_outage` keeps a short stall, which times out every lookup in flight at once, from
    turning caching off: only a backend that stays down opens the circuit.
    """

    def __init__(
        self, *, threshold: int = 5, cooldown: float = 5.0, min_outage: float = 1.0
    ) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.min_outage = min_outage
        self._failures = 0
        self._open_until = 0.0
        self._last_success = time.monotonic()

    @property
    def healthy(self) -> bool:
        """Whether no failure came since the last success."""
        return self._failures == 0

    @property
    def is_open(self) -> bool:
        return self._failures >= self.threshold and time.monotonic() < self._open_until

    def allow(self) -> bool:
        """Whether to try the backend now."""
        if self._failures < self.threshold:
            return True
        now = time.monotonic()
        if now < self._open_until:
            return False
        self._open_until = now + self.cooldown  # half-open: this call probes, others wait
        return True

    def failed(self) -> None:
        now = time.monotonic()
        if now - self._last_success < self.min_outage:
            return  # answers came a moment ago: a stall, not an outage
        self._failures += 1
        if self._failures >= self.threshold:
            self._open_until = now + self.cooldown

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0
        self._last_success = time.monotonic()


class OutageLog:
    """Logs "failed" once when `what` goes down and "back" once it has answered for
    `settle` seconds with no failure: answers and failures that alternate during one
    outage (a server restarting, probes of a half-open breaker) make one pair of lines."""

    def __init__(self, logger: logging.Logger, what: str, *, settle: float = 1.0) -> None:
        self._logger = logger
        self._what = what
        self.settle = settle
        self.down = False
        self._last_failure = 0.0

    def failed(self, exc: BaseException, consequence: str) -> None:
        self._last_failure = time.monotonic()
        if not self.down:
            self.down = True
            self._logger.warning("llm-pgcache %s failed, %s: %s", self._what, consequence, exc)

    def ok(self) -> None:
        if self.down and time.monotonic() - self._last_failure >= self.settle:
            self.down = False
            self._logger.warning("llm-pgcache %s is back", self._what)
