"""Every named query prepares against the migrated schema: a renamed column fails here."""

from __future__ import annotations

import asyncpg
import numpy as np
import pytest
from pgvector import Vector

from llm_pgcache.postgres import index_sql, judgment_sql, nearest_sql, sql, stats
from llm_pgcache.postgres.driver import init_connection

from .conftest import connect_cache
from .plans import nearest_plan, nested_plans

NAMED_QUERIES = {
    **sql.NAMED_QUERIES,
    **nearest_sql.NEAREST_QUERIES,
    **index_sql.INDEX_QUERIES,
    **judgment_sql.JUDGMENT_QUERIES,
    **stats.STATS_QUERIES,
}


@pytest.mark.parametrize("name", sorted(NAMED_QUERIES))
async def test_named_query_prepares(db: asyncpg.Connection, name: str) -> None:
    statement = await db.prepare(NAMED_QUERIES[name])
    assert statement.get_parameters() is not None


def test_every_statement_constant_is_named() -> None:
    constants = {  # every upper-case string that is a statement (not a name)
        value
        for module in (sql, nearest_sql, index_sql)
        for key, value in vars(module).items()
        if key.isupper() and not key.startswith("_") and isinstance(value, str) and " " in value
    }
    registered = {
        *NAMED_QUERIES.values(),
        *sql.MAINTENANCE_STATEMENTS.values(),
        *index_sql.INDEX_DDL.values(),
    }
    assert constants <= registered  # the DDL of each method lives in dicts, all registered
    assert {*index_sql.DROP_NEW_INDEXES, *index_sql.DROP_INDEXES.values()} <= registered
    assert set(index_sql.RENAME_NEW_INDEXES.values()) <= registered


def uses_unique_index(plan: str) -> bool:
    """Whether `plan` reads llm_cache through its (namespace, cache_key) index, as an
    index scan or a bitmap scan (which the planner picks once the shared test database
    has seen bulk loads and deletes)."""
    index = "llm_cache_namespace_cache_key_key"
    return f"Index Scan using {index}" in plan or f"Bitmap Index Scan on {index}" in plan


async def test_exact_lookup_uses_the_unique_index(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned
        rows = await db.fetch("EXPLAIN " + sql.GET_EXACT, "ns", bytes(32), 0.0)
    plan = "\n".join(row[0] for row in rows)
    assert uses_unique_index(plan), plan


async def test_exact_lookup_rounds_probe_the_index_per_key_in_a_generic_plan(
    db: asyncpg.Connection,
) -> None:
    # The round's function plans its query once (a generic plan, blind to the arrays'
    # length): the lateral probe keeps it an index lookup per key, never a scan of the
    # table. The statement itself is the function's scan alone.
    rows = await db.fetch("EXPLAIN " + sql.GET_EXACT_ROUND, ["ns"], [b"\x00"], [0.0])
    assert [row[0].split(" (")[0].strip() for row in rows] == [
        "Function Scan on llm_cache_exact_round"
    ], rows
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned
        plans = await nested_plans(db, sql.GET_EXACT_ROUND, ["ns"] * 3, [b"\x00"] * 3, [0.0] * 3)
    (plan,) = [p for p in plans if "unnest(p_namespaces" in p]
    assert "Seq Scan on llm_cache" not in plan
    assert uses_unique_index(plan), plan


async def test_the_served_row_is_read_by_primary_key(db: asyncpg.Connection) -> None:
    """The round reads each row found by its id (and namespace): never a join that
    scans the table."""
    await init_connection(db)
    rows = await db.fetch(
        "EXPLAIN " + nearest_sql.SEMANTIC_NEAREST_ROUND,
        "ns",
        b"\x00",
        "e",
        [],
        [],
        40,
        3,
        1000,
        40,
        True,
        0,
    )
    plan = "\n".join(row[0] for row in rows)
    assert "Seq Scan" not in plan, plan
    # by its id (the primary key, or (id, namespace): the one a partitioned table has)
    assert "Index Cond: ((id = n.out_id)" in plan, plan


@pytest.mark.parametrize("index_scans", [True, False])
async def test_semantic_candidates_are_re_ranked_strictly(
    db: asyncpg.Connection, index_scans: bool
) -> None:
    """The candidates come in relaxed order from an iterative index scan; the nearest is
    chosen by a sort of its own, which PostgreSQL 17+ would drop for `ORDER BY distance`
    (the subquery is already ordered by that expression)."""
    dim = await db.fetchval(
        "SELECT atttypmod FROM pg_attribute "
        "WHERE attrelid = 'llm_cache'::regclass AND attname = 'embedding'"
    )
    await init_connection(db)  # the vector codec
    plan = await nearest_plan(
        db,
        "ns",
        b"\x00",
        "e",
        [Vector(np.ones(dim, dtype=np.float32))],
        [0.1],
        40,
        3,
        1000,
        40,
        index_scans,
        0,  # no scope scanned exactly: the index when there is one
    )
    lines = [line.strip().removeprefix("->  ") for line in plan.splitlines()]
    subquery = "Subquery Scan on " + ("candidates" if index_scans else "scanned")
    scan = next(i for i, line in enumerate(lines) if line.startswith(subquery))
    assert lines[scan - 1].startswith("Sort"), plan


async def test_the_reindex_lease_name_is_the_one_every_version_takes(
    db: asyncpg.Connection, dsn: str
) -> None:
    """Processes of two versions run at once during a deploy: a reindex must find the lease
    another process holds (its name, 'reindex', never changes), and take it once expired."""
    await db.execute(
        "INSERT INTO llm_pgcache_leases "
        "VALUES ('reindex', 'another process', now() + interval '1 min')"
    )
    try:
        async with connect_cache(dsn) as cache:
            assert (await cache.reindex()).action == "locked"
            await db.execute("UPDATE llm_pgcache_leases SET expires_at = now() - interval '1 s'")
            assert (await cache.reindex()).action != "locked"
        assert await db.fetchval("SELECT count(*) FROM llm_pgcache_leases") == 0  # given back
    finally:
        await db.execute("DELETE FROM llm_pgcache_leases WHERE name = 'reindex'")
