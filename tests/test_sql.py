"""Every named query prepares against the migrated schema: a renamed column fails here."""

from __future__ import annotations

import asyncpg
import pytest

from llm_pgcache.postgres import sql


@pytest.mark.parametrize("name", sorted(sql.NAMED_QUERIES))
async def test_named_query_prepares(db: asyncpg.Connection, name: str) -> None:
    statement = await db.prepare(sql.NAMED_QUERIES[name])
    assert statement.get_parameters() is not None


def test_every_statement_constant_is_named() -> None:
    constants = {  # every upper-case string that is a statement (not a name)
        value
        for key, value in vars(sql).items()
        if key.isupper() and not key.startswith("_") and isinstance(value, str) and " " in value
    }
    assert constants == {*sql.NAMED_QUERIES.values(), *sql.MAINTENANCE_STATEMENTS.values()}


async def test_exact_lookup_uses_the_unique_index(db: asyncpg.Connection) -> None:
    async with db.transaction():
        await db.execute("SET LOCAL enable_seqscan = off")  # a tiny table would be scanned
        rows = await db.fetch("EXPLAIN " + sql.GET_EXACT, "ns", bytes(32), 0.0)
    plan = "\n".join(row[0] for row in rows)
    assert "Index Scan using llm_cache_namespace_cache_key_key" in plan


async def test_exact_lookup_rounds_probe_the_index_per_key_in_a_generic_plan(
    db: asyncpg.Connection,
) -> None:
    # A prepared statement may run a generic plan, blind to the arrays' length: the
    # lateral probe keeps it an index lookup per key, never a scan of the table.
    async with db.transaction():
        await db.execute("SET LOCAL plan_cache_mode = force_generic_plan")
        await db.execute("PREPARE exact_lookup AS " + sql.GET_EXACT_ROUND)
        rows = await db.fetch("EXPLAIN EXECUTE exact_lookup('{ns}', ARRAY['\\x00'::bytea], '{0}')")
        await db.execute("DEALLOCATE exact_lookup")
    plan = "\n".join(row[0] for row in rows)
    assert "Seq Scan on llm_cache" not in plan
    assert "Index Scan using llm_cache_namespace_cache_key_key" in plan
