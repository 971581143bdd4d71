"""Every index choice answers the same: ivfflat or HNSW (`reindex --method`), over a
`vector` or `halfvec` column (chosen at migration time), swapped for one another while
lookups go on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import asyncpg
import numpy as np
import pytest
from pgvector import Vector

from llm_pgcache import Cache, InvalidInputError, SearchOptions, request_keys
from llm_pgcache.cli import cli
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import migrate
from llm_pgcache.postgres.driver import init_connection

from .conftest import FreshDatabase, connect_cache
from .plans import nearest_plan

pytestmark = pytest.mark.filterwarnings("ignore:ivfflat index created with little data")

DIM = 32
ROWS = 2000
NAMESPACE = "methods"


class TableEmbedder:
    """Texts name rows of a table of vectors: "row 12" is row 12, "near 12" a paraphrase."""

    name = "table:methods"
    dim = DIM

    def __init__(self, vectors: np.ndarray, paraphrases: np.ndarray) -> None:
        self.vectors = vectors
        self.paraphrases = paraphrases

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        table = {"row": self.vectors, "near": self.paraphrases}
        return np.stack([table[kind][int(n)] for kind, n in (t.split() for t in texts)])


def unit(x: np.ndarray) -> np.ndarray:
    normed: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return normed


def request(text: str) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": text}]}


def content(n: int) -> dict[str, object]:
    return {"choices": [{"message": {"content": str(n)}}]}


async def catalog(dsn: str) -> tuple[str, list[str], float]:
    """The column's type, the ANN index definitions, and the mean stored vector size."""
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        column = await connection.fetchval(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'llm_cache'::regclass AND attname = 'embedding'"
        )
        indexes = [
            row[0]
            for row in await connection.fetch(
                "SELECT indexdef FROM pg_indexes WHERE tablename = 'llm_cache' "
                "AND indexname LIKE 'llm_cache_embedding_%' ORDER BY indexname"
            )
        ]
        size: float = await connection.fetchval(
            "SELECT coalesce(avg(pg_column_size(embedding)), 0)::float8 FROM llm_cache"
        )
    finally:
        await connection.close()
    return column, indexes, size


async def plan(dsn: str, embedder: TableEmbedder) -> str:
    """The plan of the cache's semantic query for a paraphrase, in its own settings."""
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    await init_connection(connection)
    try:
        return await nearest_plan(
            connection,
            NAMESPACE,
            request_keys(request("near 0")).scope_key,
            embedder.name,
            [Vector(embedder.paraphrases[0])],
            [0.5],
            40,
            3,
            1000,
            40,
            True,
            0,
        )
    finally:
        await connection.close()


async def recall(
    cache: Cache, embedder: TableEmbedder, trials: int, *, given: bool = False
) -> float:
    """The share of paraphrases served their nearest stored row (by exact scan): looked
    up all at once, or (`given`) one at a time given their vectors (one statement each:
    the exact row, else the nearest)."""
    if given:
        hits = [
            await cache.get(request(f"near {n}"), threshold=0.5, embedding=vector)
            for n, vector in enumerate(embedder.paraphrases[:trials])
        ]
    else:
        hits = await asyncio.gather(
            *(cache.get(request(f"near {n}"), threshold=0.5) for n in range(trials))
        )
    nearest = np.argmax(embedder.paraphrases[:trials] @ embedder.vectors.T, axis=1)
    served = [
        None if hit is None else int(hit.response["choices"][0]["message"]["content"])
        for hit in hits
    ]
    return sum(s == int(t) for s, t in zip(served, nearest, strict=True)) / trials


@pytest.mark.parametrize("embedding_type", ["vector", "halfvec"])
async def test_each_method_on_each_column_type(
    create_database: FreshDatabase, embedding_type: str
) -> None:
    dsn = await create_database()
    await migrate.upgrade(dsn, embedding_dim=DIM, embedding_type=embedding_type)
    rng = np.random.default_rng(5)
    centres = unit(rng.standard_normal((40, DIM)))
    vectors = unit(centres[rng.integers(0, 40, ROWS)] + 0.3 * rng.standard_normal((ROWS, DIM)))
    paraphrases = unit(vectors + 0.05 * rng.standard_normal((ROWS, DIM)))
    embedder = TableEmbedder(vectors, paraphrases)

    # 200 lookups at once take 0.2-0.3 s on a busy 2-core machine: a budget above that,
    # so that recall measures the index, not the machine's load (Late lookups are misses).
    search = SearchOptions(timeout=5.0)
    async with connect_cache(dsn, namespace=NAMESPACE, embedder=embedder, search=search) as cache:
        for start in range(0, ROWS, 200):
            await asyncio.gather(
                *(cache.set(request(f"row {n}"), content(n)) for n in range(start, start + 200))
            )
        column, indexes, size = await catalog(dsn)
        assert column == f"{embedding_type}({DIM})"
        # Bytes a stored vector: 4 or 2 a dimension, an 8-byte header (a short one, of 1
        # byte, stored for a small halfvec).
        assert (
            4 * DIM + 1 <= size <= 4 * DIM + 8
            if embedding_type == "vector"
            else size <= 2 * DIM + 8
        )
        assert indexes == [
            "CREATE INDEX llm_cache_embedding_ivfflat ON public.llm_cache USING ivfflat "
            f"(embedding {embedding_type}_cosine_ops) WITH (lists='100')"
        ]
        assert await recall(cache, embedder, 50) == 1.0  # before any rebuild: exact scans

        report = await cache.reindex(method="hnsw", m=8, ef_construction=32)
        assert (report.action, report.spec.method) == ("rebuilt", "hnsw")  # type: ignore[union-attr]
        _, indexes, _ = await catalog(dsn)
        assert indexes == [  # the ivfflat index is gone: one ANN index at a time
            "CREATE INDEX llm_cache_embedding_hnsw ON public.llm_cache USING hnsw "
            f"(embedding {embedding_type}_cosine_ops) WITH (m='8', ef_construction='32')"
        ]
        assert "Index Scan using llm_cache_embedding_hnsw" in await plan(dsn, embedder)
        assert await recall(cache, embedder, 200) >= 0.95
        assert await recall(cache, embedder, 50, given=True) >= 0.95
        skipped = await cache.reindex(if_needed=True)  # keeps the method; a graph grows
        assert (skipped.action, skipped.previous.spec.method) == ("skipped", "hnsw")  # type: ignore[union-attr]

        # lists 4: the lookup probes 2 (at 2 lists it probes 1 of them, and recall on this
        # small table of 40 clusters depends on where k-means put its two centres).
        report = await cache.reindex(method="ivfflat", lists=4)
        assert (report.action, report.lists) == ("rebuilt", 4)
        _, indexes, _ = await catalog(dsn)
        assert indexes == [
            "CREATE INDEX llm_cache_embedding_ivfflat ON public.llm_cache USING ivfflat "
            f"(embedding {embedding_type}_cosine_ops) WITH (lists='4')"
        ]
        assert "Index Scan using llm_cache_embedding_ivfflat" in await plan(dsn, embedder)
        assert await recall(cache, embedder, 200) >= 0.95
        assert await recall(cache, embedder, 50, given=True) >= 0.95

    # The CLI, the operator's way in.
    assert await cli(["reindex", "--dsn", dsn, "--method", "hnsw", "--m", "12"]) == 0
    _, indexes, _ = await catalog(dsn)
    assert "WITH (m='12', ef_construction='64')" in indexes[0]


async def test_bad_index_options_are_refused(dsn: str) -> None:
    async with connect_cache(dsn) as cache:
        for options in (
            {"method": "annoy"},
            {"method": "hnsw", "lists": 10},
            {"method": "ivfflat", "m": 16},
            {"method": "hnsw", "m": 1},
            {"method": "hnsw", "m": 16, "ef_construction": 20},  # under 2 m
            {"method": "ivfflat", "lists": 0},
        ):
            with pytest.raises(InvalidInputError):
                await cache.reindex(**options)


async def test_a_bad_embedding_type_is_refused(create_database: FreshDatabase) -> None:
    dsn = await create_database()
    with pytest.raises(Exception, match="embedding type must be one of vector, halfvec"):
        await migrate.upgrade(dsn, embedding_type="float8")
    assert await cli(["migrate", "--dsn", dsn, "--embedding-type", "halfvec"]) == 0
    column, _, _ = await catalog(dsn)
    assert column == "halfvec(1536)"
