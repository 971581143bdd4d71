"""Semantic lookups: embed the last user turn, find the nearest row of the same scope.

Candidates are only live rows of the same namespace, the same scope (model, system
prompt, earlier turns, output-affecting parameters) and the same embedder. Until the
ANN index has been rebuilt on real data (`llm-pgcache reindex`, ivfflat or HNSW), the
scope's rows are compared exactly: an index clustered on an empty table would miss
neighbours. After, so are the rows of a scope small enough to read whole
(`scan_rows_for`); a larger scope goes through the index.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, replace
from typing import Generic, TypeVar

import asyncpg
import numpy as np

from llm_pgcache.entries import StoredEntry
from llm_pgcache.errors import EmbedderError, InvalidInputError, LLMPgCacheError
from llm_pgcache.keys import RequestKeys
from llm_pgcache.postgres.ann import IndexBuild, NearestQuery, SearchSettings
from llm_pgcache.postgres.reindex import probes_for
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.rounds import Rounds
from llm_pgcache.semantic.batches import EmbeddingBatches, Vector
from llm_pgcache.semantic.embedders import Embedder
from llm_pgcache.semantic.vectors import Vectors, check_values, shaped_vectors
from llm_pgcache.validation import check_count, check_timeout

# Without tuning data for the embedder in use, a conservative cut-off: cosine similarity
# of 0.9 separates paraphrases from related-but-different questions for OpenAI's
# text-embedding-3 models in published evaluations; tune it with `llm-pgcache
# tune-threshold` on your own pairs.
DEFAULT_SIMILARITY_THRESHOLD = 0.9
DEFAULT_EF_SEARCH = 40  # pgvector's
ANY_DISTANCE = 2.0  # cosine distance is at most 2: the nearest row, however far
# A scope of at most this many rows is always scanned exactly: a few hundred microseconds
# of distances, cheaper than any index search with its filters.
MIN_SCAN_ROWS = 1000


@dataclass(frozen=True, slots=True, kw_only=True)
class SearchOptions:
    """How semantic lookups search.

    Attributes:
        candidates: nearest rows taken from the index (in relaxed order) before the
            exact re-ranking and the threshold apply. An iterative scan goes on to
            further lists (or graph neighbours) until this many rows of the scope came,
            and the nearest of them is served: with more, a search that finds few rows
            of its scope in its first lists looks further (through the index at probes
            1, a scope of 100 rows among 120k found its nearest row for 98.5 % of
            queries with 10, 100 % with 40; a scope that small is scanned exactly,
            `scan_rows_for`, and a larger one has, at the default probes, a hundred
            rows or more in the first ivfflat lists it reads). Each costs a heap visit:
            40 cost 0.08-0.13 ms more server CPU per lookup than 10 at 10k rows (on a
            1.7 ms search; docs/benchmarks.md). It also sets how large a scope is still
            scanned exactly (`scan_rows_for`: sqrt(candidates x rows) at least).
        probes: ivfflat lists searched first; None (the default): about the square root
            of the lists the last `reindex` built, at most 10 (`reindex.probes_for`: 10
            lists -> 3, 100 and more -> 10), never all of them. The cost grows with it
            (at 1M rows of 1536 dimensions: 39 ms at 10, 7 ms at 1) and so does recall
            on data without clear clusters; see docs/benchmarks.md to choose. An
            approximate search can only
            miss a neighbour, never serve one below the threshold.
        max_probes: lists searched at most while the filters reject candidates
            (pgvector 0.8 iterative index scans).
        ef_search: with an HNSW index (`reindex --method hnsw`), the candidate list of
            its search (`hnsw.ef_search`); None: 40 (pgvector's default) or `candidates`
            if larger. Iterative scans go on past it while the filters reject
            candidates. Higher: better recall, slower.
        index_state_seconds: how long the "index was rebuilt" fact is reused, and the
            fact that a scope is too large to scan exactly (`scan_rows_for`).
        timeout: seconds the semantic query may take before it counts as a miss (the
            embedding is not included, it has `embed_timeout`); larger than the exact
            lookup's, since an ANN query over millions of rows takes tens of
            milliseconds. Waiting for one of the `max_in_flight` slots counts. A lookup
            whose answer would come after it (by the time recent rounds took for their
            sizes: surely, at once; or as rounds return while it waits) is a miss then,
            not when its budget runs out: counted in `Counters.semantic_late`, no
            failure (no breaker, no error in strict mode).
        max_in_flight: rounds of semantic queries running at once in this process,
            each on one pooled connection, each one query for the vectors of every
            lookup that waited for it (at most `max_batch`); the others wait (within
            `timeout`). Exact lookups never wait behind them: they hold at most six of
            the pool's connections, semantic rounds at most these.
        max_batch: semantic lookups in one round at most; fewer when recent rounds
            say that this many would take more than a third of `timeout` (a slow
            server, a large table). A lookup waits for a round in flight, then for its
            own: small rounds, more of them, keep that within `timeout` on a busy
            server (docs/benchmarks.md).
    """

    candidates: int = 10
    probes: int | None = None
    ef_search: int | None = None
    max_probes: int = 1000
    index_state_seconds: float = 60.0
    timeout: float | None = 0.25
    max_in_flight: int = 3
    max_batch: int = 8

    def __post_init__(self) -> None:
        for name in ("candidates", "max_probes", "max_in_flight", "max_batch"):
            check_count(name, getattr(self, name))
        for name in ("probes", "ef_search"):
            if getattr(self, name) is not None:
                check_count(name, getattr(self, name))
        check_timeout("SearchOptions.timeout", self.timeout)
        seconds = self.index_state_seconds
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not seconds >= 0:
            raise InvalidInputError(f"index_state_seconds must be >= 0, got {seconds!r}")


K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Recent(Generic[K, V]):
    """A bounded map whose values are forgotten `max_age` seconds after they were put
    (the oldest first when more than `max_entries` are kept)."""

    def __init__(self, max_age: float, max_entries: int = 4096) -> None:
        self._entries: OrderedDict[K, tuple[float, V]] = OrderedDict()
        self._max_age = max_age
        self._max_entries = max_entries

    def put(self, key: K, value: V) -> None:
        self._entries[key] = (time.monotonic(), value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    def get(self, key: K) -> V | None:
        return self._fresh(self._entries.get(key))

    def pop(self, key: K) -> V | None:
        return self._fresh(self._entries.pop(key, None))

    def _fresh(self, item: tuple[float, V] | None) -> V | None:
        return None if item is None or time.monotonic() - item[0] > self._max_age else item[1]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)


class _InFlight:
    """An embedding under way (`SemanticSearch.embedding_for`): its task, the callers
    waiting for it, and whether it is to be kept for a `set`."""

    __slots__ = ("keep", "task", "waiters")

    def __init__(self, task: asyncio.Task[None], keep: bool) -> None:
        self.task = task  # referenced while it runs
        self.keep = keep
        self.waiters: list[asyncio.Future[Vector]] = []


def scan_rows_for(build: IndexBuild, probes: int, candidates: int) -> int:
    """The most rows of a scope that lookups scan exactly rather than through the index
    `build` made: as long as reading the scope costs no more than the index search would.
    An ivfflat search reads about `probes / lists` of the table; any filtered search
    reads about `candidates * rows / scope rows` rows to find its candidates, which
    passes the scope's own size below `sqrt(candidates * rows)`. At least
    `MIN_SCAN_ROWS`."""
    rows = build.rows
    most = max(MIN_SCAN_ROWS, math.isqrt(candidates * rows))
    if build.spec.lists:
        most = max(most, probes * rows // build.spec.lists)
    return most


class SemanticSearch:
    """The semantic half of a `Cache`: one embedder, one table."""

    def __init__(self, store: PostgresStore, embedder: Embedder, options: SearchOptions) -> None:
        self._store = store
        self.embedder = embedder
        self.options = options
        # Embeddings made by lookups, kept for the `set` that follows a miss (at most
        # 4,096: 6 MB of 384-dimension vectors, 25 MB of 1,536).
        self.pending: Recent[tuple[str, bytes], Vector] = Recent(max_age=600.0)
        self.batches = EmbeddingBatches(self._embed_shaped)
        self._rounds: Rounds[NearestQuery, asyncpg.Record | None] = Rounds(
            store.nearest_round,
            rounds=options.max_in_flight,
            max_batch=options.max_batch,
            budgeted=True,
        )
        self._embedding: dict[tuple[str, bytes], _InFlight] = {}
        # Scopes found larger than their exact scan's limit (`scan_rows_for`): their
        # lookups go to the index without counting the scope's rows first (a scope may
        # shrink: known for `index_state_seconds`).
        self._big_scopes: Recent[tuple[str, bytes, str], bool] = Recent(
            max_age=options.index_state_seconds
        )
        self._build_read: asyncio.Task[None] | None = None
        self._build: IndexBuild | None = None
        self._build_read_at = -float("inf")

    async def embedding_for(
        self, namespace: str, key: bytes, text: str, *, keep: bool = False
    ) -> Vector:
        """The embedding of the request `key`'s `text`: the one a lookup kept for it, or
        the one in flight for it, or a new one, made in a task of its own: a caller that
        stops waiting (its deadline) leaves it running. With `keep` (a lookup, which a
        `set` follows when it misses), a new embedding is kept for that `set`, also one
        that comes after the lookup gave up on it (`forget` drops it on a hit).

        Raises:
            EmbedderError: the embedder failed.
            InvalidEmbeddingError, EmbeddingDimensionError: it returned unusable vectors.
        """
        slot = (namespace, key)
        kept = self.pending.pop(slot)
        if kept is not None:
            return kept
        loop = asyncio.get_running_loop()
        in_flight = self._embedding.get(slot)
        if in_flight is None:
            in_flight = _InFlight(loop.create_task(self._embed_for(slot, text)), keep)
            self._embedding[slot] = in_flight
        elif not keep:  # the `set` that follows joins the lookup's: nothing to keep
            in_flight.keep = False
        waiter: asyncio.Future[Vector] = loop.create_future()
        in_flight.waiters.append(waiter)
        return await waiter

    async def _embed_for(self, slot: tuple[str, bytes], text: str) -> None:
        """Embed `text` for the callers waiting for `slot`'s embedding (each on a future
        of its own: one that stops waiting cancels only its own), then forget it; kept for
        the request's `set` if a lookup asked for it (also when no one waits any more)
        and no `set` took it meanwhile."""
        failure: BaseException | None = None
        try:
            vector = await self.embed(text)
        except BaseException as exc:
            failure = exc
        in_flight = self._embedding.pop(slot)
        if failure is None and in_flight.keep:
            self.pending.put(slot, vector)
        for waiter in in_flight.waiters:
            if waiter.done():
                continue
            if failure is None:
                waiter.set_result(vector)
            elif isinstance(failure, asyncio.CancelledError):
                waiter.cancel()
            else:
                waiter.set_exception(failure)
        if failure is not None and not isinstance(failure, Exception):
            raise failure  # cancelled (the cache closing): the task ends cancelled

    def keep(self, namespace: str, key: bytes, vector: Vector) -> None:
        """Keep the embedding a missed lookup was given for the `set` that follows."""
        self.pending.put((namespace, key), vector)

    def idle(self) -> bool:
        """Whether a lookup calling `nearest` now runs at once, alone: no semantic round
        in flight or waiting, and the index state known (when it is due to be read again,
        this starts reading it, and says no)."""
        if self._index_state_stale():
            self._reading_index_state()
            return False
        return self._rounds.idle

    def forget(self, namespace: str, key: bytes) -> None:
        """No `set` takes the embedding kept for `key` (a lookup of it was a hit, or the
        `set` brought its own): it goes."""
        self.pending.pop((namespace, key))

    async def embed(self, text: str) -> Vector:
        """The embedding of `text`, checked (dimension, finite, non-zero), from a batch
        shared with the texts asked for meanwhile (`batches`)."""
        return await self.batches.embed(text)

    async def embed_many(self, texts: list[str]) -> Vectors:
        """The embeddings of `texts`, in one call of the embedder, checked."""
        vectors = await self._embed_shaped(texts)
        check_values(vectors)
        return vectors

    async def _embed_shaped(self, texts: list[str]) -> Vectors:
        """The embedder's vectors of `texts`, of the right count and dimension."""
        if not texts:
            return np.empty((0, self._store.embedding_dim), dtype=np.float32)
        try:
            vectors = await self.embedder.embed(texts)
        except LLMPgCacheError:
            raise
        except Exception as exc:  # a third-party embedder's own failure
            raise EmbedderError(f"embedder {self.embedder.name} failed: {exc}") from exc
        return shaped_vectors(vectors, count=len(texts), dim=self._store.embedding_dim)

    async def with_embeddings(
        self, built: list[tuple[RequestKeys, StoredEntry]]
    ) -> list[StoredEntry]:
        """The entries, each with the embedding of its last user turn (if it has one)."""
        texts = [keys.text for keys, _ in built if keys.text.strip()]
        vectors = iter(await self.embed_many(texts))
        return [
            replace(entry, embedding=next(vectors), embedder=self.embedder.name)
            if keys.text.strip()
            else entry
            for keys, entry in built
        ]

    async def nearest(
        self,
        namespace: str,
        keys: RequestKeys,
        vector: Vector,
        *,
        exact_grace: float | None = None,
    ) -> asyncpg.Record | None:
        """The nearest live row of the request's scope (None: the scope has none); its
        `distance` column is the cosine distance: the cache decides on it (threshold,
        guard) with the counts of its refusals. Lookups that overlap
        share a round (one query for all their vectors, `postgres.lookups.Rounds`), at
        most `max_in_flight` rounds at a time.

        With `exact_grace` (the stale grace of exact lookups), the request's exact row
        if there is one (`exact` true), else the nearest, in one statement: for a lookup
        that has its vector before its exact lookup, called when `idle` (it then runs
        at once, not behind semantic work).

        Raises:
            BackendError: the query failed, or ran out of `timeout`.
            Late: the answer would come after `timeout` (a miss now, not one after
                the whole budget).
        """
        build = await self._index_build()
        lists = build.spec.lists if build is not None else None
        probes = self.options.probes or (probes_for(lists) if lists else 1)
        scope = (namespace, keys.scope_key, self.embedder.name)
        scan_rows = 0  # known larger than its exact scan's limit, or no index: no count
        if build is not None and self._big_scopes.get(scope) is None:
            scan_rows = scan_rows_for(build, probes, self.options.candidates)
        settings = SearchSettings(
            approximate=build is not None,
            probes=probes,
            max_probes=self.options.max_probes,
            ef_search=self.options.ef_search or max(DEFAULT_EF_SEARCH, self.options.candidates),
            candidates=self.options.candidates,
            scan_rows=scan_rows,
        )
        exact_key = None if exact_grace is None else keys.exact_key
        query = NearestQuery(*scope, vector, ANY_DISTANCE, settings, exact_key, exact_grace or 0.0)
        record = await self._rounds.join(query, self.options.timeout)
        if record is not None and record["indexed"]:
            self._big_scopes.put(scope, True)
        return record

    async def close(self) -> None:
        """Fail the lookups waiting for a round or an embedding, and stop those under way."""
        await self._rounds.close()
        await self.batches.close()

    async def _index_build(self) -> IndexBuild | None:
        """The last rebuild of the ANN index (None: never, scan exactly), read again
        every `index_state_seconds`, by one query however many lookups ask meanwhile."""
        if self._index_state_stale():
            await asyncio.shield(self._reading_index_state())
        return self._build

    def _reading_index_state(self) -> asyncio.Task[None]:
        """The read of the index state under way, or a new one (its failure is raised to
        the lookups awaiting it, if any)."""
        if self._build_read is None or self._build_read.done():
            self._build_read = asyncio.get_running_loop().create_task(self._read_index_state())
            self._build_read.add_done_callback(_retrieved)
        return self._build_read

    async def _read_index_state(self) -> None:
        self._build = await self._store.last_index_build()
        self._build_read_at = time.monotonic()

    def _index_state_stale(self) -> bool:
        return time.monotonic() - self._build_read_at > self.options.index_state_seconds

    def forget_index_state(self) -> None:
        """Read the index state again on the next lookup (after a reindex), and count
        the scopes' rows again."""
        self._build_read_at = -float("inf")
        self._big_scopes.clear()


def _retrieved(task: asyncio.Task[None]) -> None:
    """Mark a task's failure as seen: one that no caller awaited is not reported."""
    if not task.cancelled():
        task.exception()
