"""What a cache does with a judge and a false-hit bound: inline verdicts, verdicts in the
background (an accepted candidate becomes an alias), sampled audits of served hits,
judgments recorded in PostgreSQL, and the serve threshold computed from them.

A judge never breaks a lookup: one that raises, returns a non-bool or outlasts
`judge_timeout` is a refusal, counted by reason and logged once per outage.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.errors import BackendError, JudgeError
from llm_pgcache.postgres.judgments import Alias, Judgment, Judgments
from llm_pgcache.semantic.bound import MAX_JUDGMENTS, ServeThreshold, serve_threshold
from llm_pgcache.semantic.judges import Judge, JudgeCase

logger = logging.getLogger(__name__)

Verify = Literal["inline", "background"]
VERIFY_MODES: tuple[Verify, ...] = ("inline", "background")
DEFAULT_JUDGE_TIMEOUT = 2.0  # seconds an inline verdict may take
MAX_PENDING = 256  # background verdicts and writes in flight; more are dropped, counted
REFUSAL_MEMORY = 600.0  # seconds a refused (lookup, candidate) is not judged again
MAX_REFUSALS_KEPT = 10_000
THRESHOLD_REFRESH = 30.0  # seconds a serve threshold is used before it is computed again


class Verdicts:
    """Puts candidates to a judge within its timeout, inline or in the background, and
    records every verdict."""

    def __init__(
        self,
        judge: Judge | None,
        *,
        timeout: float,
        judgments: Judgments,
        metrics: Metrics,
        audit_rate: float,
    ) -> None:
        self.judge = judge
        self.timeout = timeout
        self.audit_rate = audit_rate
        self._judgments = judgments
        self._metrics = metrics
        self._pending: set[asyncio.Task[None]] = set()
        self._judging: set[tuple[str, bytes]] = set()  # (namespace, key) judged in background
        # (namespace, key, candidate key) the background judge refused, until when: the
        # same lookup is not put to the judge again meanwhile
        self._refused: OrderedDict[tuple[str, bytes, bytes], float] = OrderedDict()
        self._failing = False  # a judge outage, logged once

    async def verdict(self, case: JudgeCase) -> bool | str:
        """The judge's verdict on `case`, or why there is none: "judge_timeout",
        "judge_error"."""
        try:
            async with asyncio.timeout(self.timeout):
                verdict = await self._ask(case)
        except TimeoutError:
            self._failed(f"no verdict within {self.timeout} s")
            return "judge_timeout"
        except Exception as exc:  # a judge is the caller's code: anything may come out
            self._failed(repr(exc))
            return "judge_error"
        if self._failing:
            self._failing = False
            logger.warning("llm-pgcache: the judge answers again")
        return verdict

    async def _ask(self, case: JudgeCase) -> bool:
        if self.judge is None:
            raise JudgeError("the cache has no judge")
        verdict = await self.judge.judge(case)
        if not isinstance(verdict, bool):
            raise JudgeError(f"the judge returned {verdict!r}, not a bool")
        return verdict

    def _failed(self, why: str) -> None:
        if not self._failing:
            self._failing = True
            logger.warning("llm-pgcache: the judge failed (%s); its candidates are misses", why)

    def record(self, judgment: Judgment) -> None:
        """Write `judgment`, off the request path."""
        self._spawn(self._write(judgment))

    async def _write(self, judgment: Judgment) -> None:
        try:
            await self._judgments.add([judgment])
        except BackendError as exc:
            logger.warning("llm-pgcache: a judgment was not recorded: %s", exc)

    def later(self, case: JudgeCase, embedder: str, alias: Alias) -> None:
        """Judge `case` in the background; an accepted one becomes `alias`."""
        slot = (alias.namespace, alias.cache_key)
        refused_until = self._refused.get((*slot, alias.alias_of))
        if slot in self._judging or (refused_until and refused_until > time.monotonic()):
            return
        if self._spawn(self._background(case, embedder, alias)):
            self._judging.add(slot)

    async def _background(self, case: JudgeCase, embedder: str, alias: Alias) -> None:
        try:
            verdict = await self.verdict(case)
            self._metrics.judged("background", verdict)
            if isinstance(verdict, str):
                return
            if verdict:
                await self._judgments.put_alias(alias)
            else:
                self._refused[(alias.namespace, alias.cache_key, alias.alias_of)] = (
                    time.monotonic() + REFUSAL_MEMORY
                )
                while len(self._refused) > MAX_REFUSALS_KEPT:
                    self._refused.popitem(last=False)
            await self._judgments.add(
                [Judgment(alias.namespace, embedder, case.similarity, verdict, "judge")]
            )
        except BackendError as exc:
            logger.warning("llm-pgcache: a background verdict was not stored: %s", exc)
        finally:
            self._judging.discard((alias.namespace, alias.cache_key))

    def maybe_audit(self, case: Callable[[], JudgeCase], namespace: str, embedder: str) -> None:
        """Judge a served hit (the case `case()` makes) in the background, at
        `audit_rate`."""
        if self.judge is None or random.random() >= self.audit_rate:  # noqa: S311 - a sample
            return
        self._spawn(self._audit(case(), namespace, embedder))

    async def _audit(self, case: JudgeCase, namespace: str, embedder: str) -> None:
        verdict = await self.verdict(case)
        self._metrics.judged("audit", verdict)
        if isinstance(verdict, bool):
            await self._write(Judgment(namespace, embedder, case.similarity, verdict, "audit"))

    def _spawn(self, work: Coroutine[Any, Any, None]) -> bool:
        if len(self._pending) >= MAX_PENDING:
            work.close()
            self._metrics.judged("background", "dropped")
            return False
        task = asyncio.get_running_loop().create_task(work)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return True

    async def settle(self) -> None:
        """Wait for the background verdicts and writes in flight (tests, shutdown)."""
        while self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    async def close(self) -> None:
        for task in list(self._pending):
            task.cancel()
        await asyncio.gather(*self._pending, return_exceptions=True)


class ServeThresholds:
    """The serve threshold of each (namespace, embedder) under a false-hit bound, from
    its judgments in PostgreSQL (so every process computes the same), each used for
    `refresh` seconds and then computed again in the background. Until the first is
    computed, and while PostgreSQL cannot say, nothing is served on similarity alone."""

    def __init__(self, judgments: Judgments, *, bound: float, floor: float, refresh: float) -> None:
        self.bound = bound
        self.floor = floor
        self.refresh = refresh
        self._judgments = judgments
        self._known: dict[tuple[str, str], tuple[ServeThreshold, float]] = {}
        self._computing: dict[tuple[str, str], asyncio.Task[ServeThreshold]] = {}

    def current(self, namespace: str, embedder: str) -> ServeThreshold | None:
        """The threshold in use (None: none computed yet); starts a computation when it
        is missing or older than `refresh` seconds."""
        scope = (namespace, embedder)
        known = self._known.get(scope)
        if (known is None or time.monotonic() - known[1] > self.refresh) and (
            scope not in self._computing
        ):
            task = asyncio.get_running_loop().create_task(self.compute(namespace, embedder))
            self._computing[scope] = task
            task.add_done_callback(lambda _: self._computing.pop(scope, None))
        return None if known is None else known[0]

    async def compute(self, namespace: str, embedder: str) -> ServeThreshold:
        """Compute the threshold of (namespace, embedder) now, and use it."""
        try:
            rows = await self._judgments.of(
                namespace, embedder, floor=self.floor, limit=MAX_JUDGMENTS
            )
        except BackendError as exc:
            logger.warning("llm-pgcache: serve threshold of %r not computed: %s", namespace, exc)
            rows = []
        threshold = serve_threshold(rows, bound=self.bound, floor=self.floor)
        self._known[(namespace, embedder)] = (threshold, time.monotonic())
        return threshold

    async def close(self) -> None:
        for task in list(self._computing.values()):
            task.cancel()
        await asyncio.gather(*self._computing.values(), return_exceptions=True)
