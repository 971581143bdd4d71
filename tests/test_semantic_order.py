"""Strict order after a relaxed iterative scan: a real case where the ivfflat index hands
the candidates over with a farther row first, and the nearest is still the one served."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence

import asyncpg
import numpy as np
import pytest
from pgvector import Vector

from llm_pgcache import Cache, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import migrate, nearest_sql
from llm_pgcache.postgres.driver import init_connection

from .conftest import FreshDatabase, connect_cache

pytestmark = pytest.mark.filterwarnings("ignore:ivfflat index created with little data")

NAMESPACE = "order"


class AngleEmbedder:
    """Texts are angles in degrees: unit vectors in a plane of a 3-d space."""

    dim = 3

    def __init__(self, name: str) -> None:
        self.name = name

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([at(float(text.split()[-1])) for text in texts])


def at(degrees: float) -> np.ndarray:
    r = math.radians(degrees)
    return np.array([math.cos(r), math.sin(r), 0.0], dtype=np.float32)


def request(degrees: float) -> dict[str, object]:
    return {"model": "m", "messages": [{"role": "user", "content": f"angle {degrees}"}]}


async def fill(cache: Cache, angles: list[float]) -> None:
    for start in range(0, len(angles), 100):
        await asyncio.gather(
            *(
                cache.set(request(a), {"choices": [{"message": {"content": str(a)}}]})
                for a in angles[start : start + 100]
            )
        )


async def test_the_nearest_candidate_is_served_after_a_relaxed_scan(
    create_database: FreshDatabase,
) -> None:
    dsn = await create_database()
    await migrate.upgrade(dsn, embedding_dim=3)
    # Two lists: one around 0 degrees, of another embedder's rows, and A at 15 degrees;
    # one around 90, of ours, and B at 55. A query at 38 is nearer the first list's
    # centre: a one-probe scan reads it first, where the filter leaves only A, and then
    # (iteratively) the second, where B, nearer to the query than A, comes first.
    ours = AngleEmbedder("angles:test")
    async with connect_cache(
        dsn, namespace=NAMESPACE, embedder=AngleEmbedder("other:test")
    ) as other:
        await fill(other, [i * 0.005 for i in range(1000)])
    # guard=None: the texts are angles, which the look-alike guard tells apart as numbers.
    async with connect_cache(dsn, namespace=NAMESPACE, embedder=ours, guard=None) as cache:
        await fill(cache, [85.0 + i * 0.0025 for i in range(2000)] + [15.0, 55.0])
        report = await cache.reindex(lists=2)
        assert (report.action, report.lists) == ("rebuilt", 2)

        # The precondition: the candidates as the index hands them over, in the cache's
        # settings (probes 1 of 2 lists, relaxed order).
        connection = await asyncpg.connect(asyncpg_dsn(dsn))
        await init_connection(connection)
        try:
            async with connection.transaction():
                await connection.execute("SET LOCAL ivfflat.probes = 1")
                await connection.execute("SET LOCAL ivfflat.max_probes = 1000")
                await connection.execute("SET LOCAL ivfflat.iterative_scan = relaxed_order")
                rows = await connection.fetch(
                    "SELECT prompt, embedding <=> $4 AS distance FROM llm_cache "
                    "WHERE namespace = $1 AND scope_key = $2 AND embedder = $3 "
                    "ORDER BY embedding <=> $4 LIMIT 40",
                    NAMESPACE,
                    request_keys(request(38.0)).scope_key,
                    ours.name,
                    Vector(at(38.0)),
                )
            order = [row["prompt"] for row in rows]
            assert order[:2] == ["angle 15.0", "angle 55.0"], order  # a farther row first
            assert rows[1]["distance"] < rows[0]["distance"]

            hit = await cache.get(request(38.0), threshold=0.5)
            assert hit is not None
            assert hit.tier == "postgres-semantic"
            assert hit.response["choices"][0]["message"]["content"] == "55.0"
            assert hit.similarity == pytest.approx(math.cos(math.radians(17.0)), abs=1e-4)

            # The statement itself, for one vector (a lone lookup's round) and for several
            # (overlapping lookups'), takes the nearest in both of its branches.
            for angles in ([38.0], [38.0, 38.5, 38.0]):
                rows = await connection.fetch(
                    nearest_sql.SEMANTIC_NEAREST_ROUND,
                    NAMESPACE,
                    request_keys(request(38.0)).scope_key,
                    ours.name,
                    [Vector(at(a)) for a in angles],
                    [2.0] * len(angles),
                    40,  # candidates
                    1,  # probes
                    1000,  # max probes
                    40,  # ef_search
                    True,  # the index
                    0,  # for this scope of a few rows too
                )
                found = {row["slot"]: row["prompt"] for row in rows}
                assert found == dict.fromkeys(range(1, len(angles) + 1), "angle 55.0"), angles
        finally:
            await connection.close()
