"""The plans of statements run inside functions (llm_cache_nearest, llm_cache_exact_round),
from auto_explain:
EXPLAIN of the call shows only a function scan."""

from __future__ import annotations

from typing import Any

import asyncpg


async def nested_plans(
    connection: asyncpg.Connection, query: str, *args: Any, analyze: bool = False
) -> list[str]:
    """Run `query` with auto_explain logging every nested statement's plan to this
    client (with `analyze`, as EXPLAIN ANALYZE shows it: what ran, what was pruned);
    the plans, one text each."""
    messages: list[str] = []

    def listen(_: object, message: asyncpg.PostgresLogMessage) -> None:
        messages.append(str(message.message))

    connection.add_log_listener(listen)
    try:
        async with connection.transaction():
            await connection.execute("LOAD 'auto_explain'")
            await connection.execute("SET LOCAL auto_explain.log_min_duration = 0")
            await connection.execute("SET LOCAL auto_explain.log_nested_statements = on")
            await connection.execute("SET LOCAL client_min_messages = log")
            if analyze:
                await connection.execute("SET LOCAL auto_explain.log_analyze = on")
                await connection.execute("SET LOCAL auto_explain.log_timing = off")
            await connection.fetch(query, *args)
    finally:
        connection.remove_log_listener(listen)
    return [m for m in messages if "Query Text:" in m]


async def nearest_plan(connection: asyncpg.Connection, *args: Any) -> str:
    """The plan of the ANN query inside llm_cache_nearest (for one vector or for many),
    for the round's `args`."""
    from llm_pgcache.postgres import nearest_sql  # noqa: PLC0415

    plans = await nested_plans(connection, nearest_sql.SEMANTIC_NEAREST_ROUND, *args)
    inner = [p for p in plans if "FROM llm_cache l" in p]
    assert inner, plans
    return inner[0]
