"""A circuit breaker: after repeated backend failures, stop asking for a while."""

from __future__ import annotations

import time


class CircuitBreaker:
    """Closed while the backend answers; open for `cooldown` seconds after `threshold`
    consecutive failures, during which callers skip the backend; then one call is let
    through (half-open): its success closes the circuit, its failure opens it again."""

    def __init__(self, *, threshold: int = 5, cooldown: float = 5.0) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self._failures = 0
        self._open_until = 0.0

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
        self._failures += 1
        if self._failures >= self.threshold:
            self._open_until = time.monotonic() + self.cooldown

    def succeeded(self) -> None:
        self._failures = 0
        self._open_until = 0.0
