"""The ivfflat index: used where it pays, exact where it cannot be trusted, and correct
under selective filters (pgvector 0.8 iterative scans). 120k rows of 32 dimensions:
1,000 scopes of 100 rows and one scope of 20,000."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Sequence

import asyncpg
import numpy as np
import pytest
from pgvector import Vector

from llm_pgcache import Cache, SearchOptions, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import migrate, nearest_sql
from llm_pgcache.postgres.ann import IndexBuild, IndexSpec
from llm_pgcache.postgres.driver import init_connection
from llm_pgcache.postgres.reindex import lists_for, probes_for, rebuild_reason
from llm_pgcache.semantic.search import MIN_SCAN_ROWS, scan_rows_for

from .conftest import FreshDatabase
from .plans import nearest_plan

DIM = 32
SMALL_SCOPES = 1000
SMALL_SCOPE_ROWS = 100
BIG_SCOPE = SMALL_SCOPES  # scope number of the big one
BIG_SCOPE_ROWS = 20_000
NAMESPACE = "ann"
EMBEDDER = "table:test"
TRIALS = 200
CANDIDATES = SearchOptions().candidates

pytestmark = pytest.mark.filterwarnings("ignore:ivfflat index created with little data")


def scope_request(scope: int, question: str) -> dict[str, object]:
    return {
        "model": "m",
        "messages": [
            {"role": "system", "content": f"scope {scope}"},
            {"role": "user", "content": question},
        ],
    }


class TableEmbedder:
    """An embedder (the public protocol) that looks texts up in a table the test fills."""

    name = EMBEDDER
    dim = DIM

    def __init__(self) -> None:
        self.vectors: dict[str, np.ndarray] = {}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[text] for text in texts])


class Corpus:
    def __init__(
        self, dsn: str, vectors: np.ndarray, scopes: np.ndarray, connection: asyncpg.Connection
    ) -> None:
        self.dsn = dsn
        self.vectors = vectors
        self.scopes = scopes
        self.connection = connection  # for reference queries


@pytest.fixture(scope="module")
async def corpus(create_database: FreshDatabase) -> AsyncIterator[Corpus]:
    dsn = await create_database()
    await migrate.upgrade(dsn, embedding_dim=DIM)
    rng = np.random.default_rng(7)
    scopes = np.concatenate(
        [np.repeat(np.arange(SMALL_SCOPES), SMALL_SCOPE_ROWS), np.full(BIG_SCOPE_ROWS, BIG_SCOPE)]
    )
    vectors = rng.standard_normal((len(scopes), DIM)).astype(np.float32)
    keys = [os.urandom(32) for _ in range(len(scopes))]
    scope_keys = {s: request_keys(scope_request(s, "x")).scope_key for s in range(BIG_SCOPE + 1)}
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    await init_connection(connection)
    await connection.copy_records_to_table(
        "llm_cache",
        columns=[
            "namespace",
            "cache_key",
            "scope_key",
            "model",
            "response",
            "embedding",
            "embedder",
        ],
        records=[
            (NAMESPACE, keys[i], scope_keys[int(scopes[i])], "m", "{}", vectors[i], EMBEDDER)
            for i in range(len(scopes))
        ],
    )
    await connection.execute("ANALYZE llm_cache")
    yield Corpus(dsn, vectors, scopes, connection)
    await connection.close()


async def exact_nearest(corpus: Corpus, scope: int, query: np.ndarray) -> bytes:
    """The truly nearest row of the scope: no index scans, every row compared."""
    async with corpus.connection.transaction():
        await corpus.connection.execute("SET LOCAL enable_indexscan = off")
        key: bytes = await corpus.connection.fetchval(
            "SELECT cache_key FROM llm_cache WHERE namespace = $1 AND scope_key = $2 "
            "ORDER BY embedding <=> $3 LIMIT 1",
            NAMESPACE,
            request_keys(scope_request(scope, "x")).scope_key,
            query,
        )
    return key


async def recall(
    corpus: Corpus, cache: Cache, embedder: TableEmbedder, scopes: list[int], *, noise: float
) -> tuple[float, float]:
    """Share of queries whose hit is the exact nearest row, and share answered at all.

    Each query is a stored row's vector plus noise: the kind of near neighbour a cache
    exists to find (noise 0.3 keeps cosine similarity near 0.95).
    """
    rng = np.random.default_rng(11)
    same = answered = 0
    for trial, scope in enumerate(scopes):
        rows = np.flatnonzero(corpus.scopes == scope)
        query = corpus.vectors[rng.choice(rows)] + noise * rng.standard_normal(DIM).astype(
            np.float32
        )
        text = f"query {trial}"
        embedder.vectors[text] = query
        hit = await cache.get(scope_request(scope, text), threshold=0.01)
        answered += hit is not None
        same += hit is not None and hit.key == await exact_nearest(corpus, scope, query)
    return same / len(scopes), answered / len(scopes)


async def open_cache(corpus: Corpus, embedder: TableEmbedder, **search: int) -> Cache:
    return await Cache.connect(
        corpus.dsn,
        namespace=NAMESPACE,
        embedder=embedder,
        strict=True,
        # Recall, not budgets, is under test here: a busy machine is slow.
        lookup_timeout=5.0,
        search=SearchOptions(timeout=5.0, **search),
    )


def scope_of(scope: int) -> tuple[str, bytes, str]:
    return (NAMESPACE, request_keys(scope_request(scope, "x")).scope_key, EMBEDDER)


def small_scopes(count: int) -> list[int]:
    return [int(s) for s in np.random.default_rng(3).integers(0, SMALL_SCOPES, count)]


async def explain(
    corpus: Corpus,
    scope: int,
    *,
    approximate: bool,
    probes: int = 10,
    max_probes: int = 1000,
    scan_rows: int = 10_000,
) -> str:
    """The plan of the cache's semantic query, under the cache's own settings (the
    `scan_rows` of 120k rows in 120 lists, 10 probes: `scan_rows_for`)."""
    return await nearest_plan(
        corpus.connection,
        NAMESPACE,
        request_keys(scope_request(scope, "x")).scope_key,
        EMBEDDER,
        [Vector(corpus.vectors[0])],
        [1.0],
        CANDIDATES,
        probes,
        max_probes,
        40,
        approximate,
        scan_rows,
    )


async def test_before_any_rebuild_lookups_scan_exactly(corpus: Corpus) -> None:
    embedder = TableEmbedder()
    cache = await open_cache(corpus, embedder)
    try:
        # Random queries, far from every row: only an exact scan finds their nearest.
        same, answered = await recall(corpus, cache, embedder, small_scopes(50), noise=100.0)
    finally:
        await cache.close()
    assert (same, answered) == (1.0, 1.0)
    assert "ivfflat" not in await explain(corpus, BIG_SCOPE, approximate=False)


async def test_reindex_sizes_lists_and_uses_the_index(corpus: Corpus) -> None:
    embedder = TableEmbedder()
    cache = await open_cache(corpus, embedder)
    try:
        first, second = await asyncio.gather(cache.reindex(), cache.reindex())
        assert sorted([first.action, second.action]) == ["locked", "rebuilt"]
        rows = SMALL_SCOPES * SMALL_SCOPE_ROWS + BIG_SCOPE_ROWS
        report = first if first.action == "rebuilt" else second
        assert (report.rows, report.lists) == (rows, lists_for(rows)) == (rows, 120)
        assert (await cache.reindex(if_needed=True)).action == "skipped"

        indexes = await corpus.connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'llm_cache'"
        )
        ivfflat = [r for r in indexes if "ivfflat" in r["indexdef"]]
        assert [r["indexname"] for r in ivfflat] == ["llm_cache_embedding_ivfflat"]
        assert "lists='120'" in ivfflat[0]["indexdef"]

        # A big scope goes through the index; a scope of 100 rows through its btree.
        assert "Index Scan using llm_cache_embedding_ivfflat" in await explain(
            corpus, BIG_SCOPE, approximate=True
        )
        assert "llm_cache_scope_idx" in await explain(corpus, 0, approximate=True)

        # The big scope is plain ANN over random (cluster-free) vectors, whose index build
        # samples at random: recall at the default probes (sqrt of 120 lists: 10) is
        # 0.98-1.0 from run to run.
        same, _ = await recall(corpus, cache, embedder, [BIG_SCOPE] * 100, noise=0.3)
        assert same >= 0.95
        same, _ = await recall(corpus, cache, embedder, small_scopes(TRIALS), noise=0.3)
        assert same >= 0.99
        # The big scope's lookups counted it once, found it larger than its exact scan's
        # limit and now go straight to the index; the small scopes are scanned each time.
        big_scopes = cache._semantic._big_scopes  # type: ignore[union-attr]
        assert big_scopes.get(scope_of(BIG_SCOPE))
        assert not any(big_scopes.get(scope_of(s)) for s in small_scopes(TRIALS))
    finally:
        await cache.close()


async def test_iterative_scans_keep_small_scopes_correct(corpus: Corpus) -> None:
    """With the ivfflat index as the only way in (no scope btree) and probes=1: a scope of
    100 rows among 120k. A plain index scan of one list mostly finds no row of the scope;
    the cache's iterative scan finds the nearest one. (The cache scans a scope this
    small exactly, `scan_rows_for`; the round statement with `scan_rows` 0 goes to the
    index for any scope, as it does for a big scope that is a small share of its table.)"""
    await corpus.connection.execute("DROP INDEX llm_cache_scope_idx")  # this module's database
    scopes = small_scopes(TRIALS)
    plan = await explain(corpus, scopes[0], approximate=True, probes=1, scan_rows=0)
    assert "Index Scan using llm_cache_embedding_ivfflat" in plan

    empty = 0
    for scope in scopes[:50]:
        async with corpus.connection.transaction():
            await corpus.connection.execute(
                "SET LOCAL ivfflat.probes = 1; SET LOCAL ivfflat.iterative_scan = off; "
                "SET LOCAL enable_seqscan = off"
            )
            found = await corpus.connection.fetchval(
                "SELECT count(*) FROM (SELECT id FROM llm_cache WHERE namespace = $1 AND "
                "scope_key = $2 ORDER BY embedding <=> $3 LIMIT 1) s",
                NAMESPACE,
                request_keys(scope_request(scope, "x")).scope_key,
                corpus.vectors[0],
            )
        empty += found == 0
    assert empty >= 10  # without iterative scans, a large share of scopes finds nothing

    rng = np.random.default_rng(11)
    same = 0
    for scope in scopes:
        rows = np.flatnonzero(corpus.scopes == scope)
        query = corpus.vectors[rng.choice(rows)] + 0.3 * rng.standard_normal(DIM).astype(np.float32)
        (found,) = await corpus.connection.fetch(
            nearest_sql.SEMANTIC_NEAREST_ROUND,
            NAMESPACE,
            request_keys(scope_request(scope, "x")).scope_key,
            EMBEDDER,
            [Vector(query)],
            [2.0],
            40,  # candidates: iterative scans look further than the cache's 10 would
            1,  # probes
            1000,  # max probes
            40,
            True,
            0,  # through the index
        )
        assert found["indexed"]
        same += found["cache_key"] == await exact_nearest(corpus, scope, query)
    assert same / len(scopes) >= 0.99


def test_lists_follow_pgvectors_guidance() -> None:
    assert [lists_for(n) for n in (0, 999, 50_000, 1_000_000, 4_000_000)] == [1, 1, 50, 1000, 2000]


def test_rebuild_reason() -> None:
    spec = IndexSpec(method="ivfflat", lists=100)
    built = IndexBuild(spec=spec, rows=100_000, built_at=None)  # type: ignore[arg-type]
    assert rebuild_reason(0, None, "ivfflat") is None
    assert rebuild_reason(10, None, "ivfflat") == "never built on data"
    assert rebuild_reason(150_000, built, "ivfflat") is None
    assert rebuild_reason(200_000, built, "ivfflat") == "rows grew from 100000 to 200000"
    assert rebuild_reason(50_000, built, "ivfflat") == "rows shrank from 100000 to 50000"
    assert rebuild_reason(150_000, built, "hnsw") == "the index is ivfflat, hnsw asked for"
    hnsw = IndexSpec(method="hnsw", m=16, ef_construction=64)
    graph = IndexBuild(spec=hnsw, rows=10, built_at=None)  # type: ignore[arg-type]
    assert rebuild_reason(1_000_000, graph, "hnsw") is None  # a graph takes new rows


def test_probes_are_about_the_square_root_of_the_lists() -> None:
    assert [probes_for(n) for n in (1, 3, 4, 10, 120, 1000, 4000)] == [1, 1, 2, 3, 10, 10, 10]
    assert all(probes_for(n) < n for n in range(4, 5000))


@pytest.mark.parametrize(
    ("rows", "dim", "lists", "probes"), [(10_000, 384, 10, 3), (100_000, 64, 100, 10)]
)
async def test_after_reindex_lookups_stay_index_scans(
    create_database: FreshDatabase, rows: int, dim: int, lists: int, probes: int
) -> None:
    """10k rows of 384 dimensions with 1 KB responses (vectors stored out of line), in one
    scope: `reindex` builds 10 lists. Probing all 10 (the old default) made the planner
    read the table (54 ms a lookup); the cache's probes (3) keep it an index scan. At
    100k rows (64 dimensions, to keep the test fast), 100 lists and 10 probes."""
    dsn = await create_database()
    await migrate.upgrade(dsn, embedding_dim=dim)
    vectors = np.random.default_rng(5).standard_normal((rows, dim)).astype(np.float32)
    scope_key = request_keys(scope_request(0, "x")).scope_key
    response = '{"answer": "' + "x" * 1000 + '"}'
    columns = ["namespace", "cache_key", "scope_key", "model", "response", "embedding"]
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    await init_connection(connection)
    try:
        await connection.copy_records_to_table(
            "llm_cache",
            columns=[*columns, "embedder"],
            records=[
                (NAMESPACE, os.urandom(32), scope_key, "m", response, vectors[i], EMBEDDER)
                for i in range(rows)
            ],
        )
        embedder = TableEmbedder()
        embedder.dim = dim
        async with Cache.connect(dsn, namespace=NAMESPACE, embedder=embedder) as cache:
            report = await cache.reindex()
        assert (report.lists, probes_for(lists)) == (lists, probes)
        corpus = Corpus(dsn, vectors, np.zeros(rows, dtype=int), connection)
        build = IndexBuild(spec=IndexSpec(method="ivfflat", lists=lists), rows=rows, built_at=None)  # type: ignore[arg-type]
        plans = {
            n: await explain(
                corpus, 0, approximate=True, probes=n, scan_rows=scan_rows_for(build, n, CANDIDATES)
            )
            for n in (probes, lists)
        }
    finally:
        await connection.close()
    assert "Index Scan using llm_cache_embedding_ivfflat" in plans[probes], plans[probes]
    if rows == 10_000:
        assert "Index Scan using llm_cache_embedding_ivfflat" not in plans[lists]  # old default


def test_scopes_are_scanned_exactly_while_that_costs_no_more_than_the_index() -> None:
    def build(rows: int, lists: int | None) -> IndexBuild:
        method = "ivfflat" if lists else "hnsw"
        spec = IndexSpec(method=method, lists=lists, m=None if lists else 16)
        return IndexBuild(spec=spec, rows=rows, built_at=None)  # type: ignore[arg-type]

    assert scan_rows_for(build(10, 1), 1, 40) == MIN_SCAN_ROWS
    assert scan_rows_for(build(10_000, 10), 3, 40) == 3_000  # 3 of 10 lists
    assert scan_rows_for(build(120_000, 120), 10, 40) == 10_000
    assert scan_rows_for(build(1_000_000, 1000), 10, 40) == 10_000
    assert scan_rows_for(build(1_000_000, None), 1, 40) == 6_324  # sqrt(40 * 1M)
    assert scan_rows_for(build(1_000_000, None), 1, CANDIDATES) == 3_162  # the default 10
