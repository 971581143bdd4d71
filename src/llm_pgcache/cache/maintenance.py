"""Operations: the ivfflat index, the purge, and what the cache measured."""

from __future__ import annotations

import asyncio
import logging

from llm_pgcache.cache.metrics import Counters, Stats
from llm_pgcache.cache.state import CacheState
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.postgres.purge import (
    DEFAULT_BATCH_SIZE,
    Progress,
    PurgeLimits,
    PurgeReport,
    purge,
    purge_forever,
)
from llm_pgcache.postgres.reindex import ReindexReport, reindex
from llm_pgcache.semantic.bound import (
    DEFAULT_BOUND,
    MAX_JUDGMENTS,
    ServeThreshold,
    serve_threshold,
)

logger = logging.getLogger(__name__)


class Maintenance(CacheState):
    """`Cache.reindex`, `purge`, `start_purging`, `counters`, `stats` and
    `refresh_serve_threshold`."""

    async def reindex(
        self,
        *,
        if_needed: bool = False,
        method: str | None = None,
        lists: int | None = None,
        m: int | None = None,
        ef_construction: int | None = None,
        maintenance_work_mem: str = "1GB",
    ) -> ReindexReport:
        """Rebuild the ANN index concurrently, ivfflat or HNSW (`method`); see
        `llm_pgcache.postgres.reindex.reindex`."""
        report = await reindex(
            self._store,
            if_needed=if_needed,
            method=method,
            lists=lists,
            m=m,
            ef_construction=ef_construction,
            maintenance_work_mem=maintenance_work_mem,
        )
        if self._semantic is not None:
            self._semantic.forget_index_state()
        return report

    async def purge(
        self,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_rows: int | None = None,
        max_bytes: int | None = None,
        dry_run: bool = False,
        progress: Progress | None = None,
    ) -> PurgeReport:
        """Delete expired rows, then evict the least recently used above a size cap.

        See `llm_pgcache.purge.purge`; the same job as `llm-pgcache purge`.
        """
        limits = PurgeLimits(batch_size=batch_size, max_rows=max_rows, max_bytes=max_bytes)
        await self._write_behind.flush()  # eviction orders by the latest hits
        return await purge(self._store, limits, dry_run=dry_run, progress=progress)

    def start_purging(
        self,
        every: float = 300.0,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        max_rows: int | None = None,
        max_bytes: int | None = None,
    ) -> None:
        """Run the purge in this process every `every` seconds until `close()`.

        An alternative to `llm-pgcache purge` from cron; runs in other processes or cron
        at the same time are harmless (one waits its turn by skipping).
        """
        if self._purging is not None and not self._purging.done():
            raise InvalidInputError("this cache is already purging")
        limits = PurgeLimits(batch_size=batch_size, max_rows=max_rows, max_bytes=max_bytes)

        def report(done: PurgeReport) -> None:
            logger.info("llm-pgcache purge: %s", done.summary())

        self._purging = asyncio.get_running_loop().create_task(
            purge_forever(self._store, limits, every=every, on_report=report)
        )

    @property
    def counters(self) -> Counters:
        """Hits per tier, misses, and what the hits saved (tokens, money, time) per model,
        in this process since `connect`."""
        return self._metrics.snapshot()

    async def drain(self) -> None:
        """Wait for the background verdicts, audits and judgment writes in flight."""
        await self._verdicts.settle()

    async def refresh_serve_threshold(self, *, namespace: str | None = None) -> ServeThreshold:
        """Compute the serve threshold of `namespace` (default: the cache's) for the
        cache's embedder now, from the judgments recorded so far, and use it (it is
        otherwise recomputed every 30 s, in the background).

        Raises:
            InvalidInputError: the cache has no embedder or no `max_false_hit_rate`.
        """
        if self._semantic is None or self._thresholds is None:
            raise InvalidInputError("a serve threshold needs an embedder and max_false_hit_rate")
        ns = self.rules.namespace_of(namespace)
        return await self._thresholds.compute(ns, self._semantic.embedder.name)

    async def ready(self, budget: float = 2.0) -> None:
        """Raise unless PostgreSQL answers within `budget` seconds with a schema this code
        runs on (a readiness probe's question; never fails open).

        Raises:
            BackendError, SchemaError: it does not.
        """
        await self._store.check(budget)

    async def stats(
        self,
        *,
        namespace: str | None = None,
        all_namespaces: bool = False,
        max_false_hit_rate: float | None = None,
    ) -> Stats:
        """This process's counters, the table's counts, and the serve threshold of every
        judged (namespace, embedder) with its evidence (of the namespace, or all), under
        `max_false_hit_rate` (default: the cache's bound, else 0.01)."""
        ns = None if all_namespaces else (namespace or self.namespace)
        bound = max_false_hit_rate
        if bound is None:
            bound = DEFAULT_BOUND if self._thresholds is None else self._thresholds.bound
        judgments = self._store.judgments
        thresholds = []
        for scope_ns, embedder, _ in await judgments.scopes(ns):
            rows = await judgments.of(
                scope_ns, embedder, floor=self.similarity_threshold, limit=MAX_JUDGMENTS
            )
            threshold = serve_threshold(rows, bound=bound, floor=self.similarity_threshold)
            thresholds.append((scope_ns, embedder, threshold))
        return Stats(
            counters=self.counters,
            table=await self._store.table_stats(ns),
            serve_thresholds=tuple(thresholds),
        )
