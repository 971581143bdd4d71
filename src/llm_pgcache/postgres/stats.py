"""What `llm-pgcache stats` reads of the table (`PostgresStore.table_stats`), and its SQL,
with `$n` parameters; a test prepares each against a migrated database, as those of
`sql`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, LiteralString

from llm_pgcache.postgres.pool import Connections
from llm_pgcache.postgres.sql import COUNTERS_BY_TIER

# $1 NULL: every namespace.
COUNT_ENTRIES: Final[LiteralString] = """
SELECT
    count(*) AS entries,
    count(*) FILTER (WHERE expires_at <= now()) AS expired,
    coalesce(sum(hit_count), 0)::bigint AS hits,
    count(*) FILTER (WHERE embedding IS NOT NULL) AS embedded,
    coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::bigint
        AS stored_tokens
FROM llm_cache
WHERE $1::text IS NULL OR namespace = $1
"""

TOP_MODELS: Final[LiteralString] = """
SELECT model, count(*) AS entries
FROM llm_cache
WHERE $1::text IS NULL OR namespace = $1
GROUP BY model
ORDER BY entries DESC, model
LIMIT $2
"""

# What the recorded hits of the rows present saved, per model (hit counts are written
# behind; rows purged take their savings with them).
SAVED_BY_MODEL: Final[LiteralString] = """
SELECT model,
       sum(hit_count)::bigint AS hits,
       sum(hit_count * coalesce(prompt_tokens, 0))::bigint AS prompt_tokens,
       sum(hit_count * coalesce(completion_tokens, 0))::bigint AS completion_tokens
FROM llm_cache
WHERE ($1::text IS NULL OR namespace = $1) AND hit_count > 0
GROUP BY model
ORDER BY model
"""

TABLE_SIZES: Final[LiteralString] = """
SELECT
    coalesce(sum(pg_table_size(relid)), pg_table_size('llm_cache'))::bigint AS table_bytes,
    coalesce(sum(pg_indexes_size(relid)), pg_indexes_size('llm_cache'))::bigint AS index_bytes
FROM pg_partition_tree('llm_cache')  -- its partitions; no rows for a plain table
"""


STATS_QUERIES: Final[dict[str, LiteralString]] = {
    "count_entries": COUNT_ENTRIES,
    "top_models": TOP_MODELS,
    "saved_by_model": SAVED_BY_MODEL,
    "table_sizes": TABLE_SIZES,
}


@dataclass(frozen=True, slots=True, kw_only=True)
class TableStats:
    """What `llm-pgcache stats` reports about the table."""

    entries: int
    expired: int
    hits: int  # recorded hits of the rows present (written behind, every few seconds)
    embedded: int  # rows with an embedding
    stored_tokens: int
    table_bytes: int
    index_bytes: int
    top_models: tuple[tuple[str, int], ...]
    # (model, recorded hits, prompt tokens saved, completion tokens saved)
    saved_by_model: tuple[tuple[str, int, int, int], ...] = ()
    # (tier or "miss", lookups, total milliseconds), as counted by every cache process
    lookups_by_tier: tuple[tuple[str, int, float], ...] = ()


async def table_stats(db: Connections, namespace: str | None, *, top: int) -> TableStats:
    """Row counts, sizes and the most cached models (of one namespace, or all)."""
    async with db.connection() as connection:
        counts = await connection.fetchrow(COUNT_ENTRIES, namespace)
        sizes = await connection.fetchrow(TABLE_SIZES)
        models = await connection.fetch(TOP_MODELS, namespace, top)
        saved = await connection.fetch(SAVED_BY_MODEL, namespace)
        tiers = await connection.fetch(COUNTERS_BY_TIER, namespace)
    return TableStats(
        entries=counts["entries"],
        expired=counts["expired"],
        hits=counts["hits"],
        embedded=counts["embedded"],
        stored_tokens=counts["stored_tokens"],
        table_bytes=sizes["table_bytes"],
        index_bytes=sizes["index_bytes"],
        top_models=tuple((row["model"], row["entries"]) for row in models),
        saved_by_model=tuple(
            (r["model"], r["hits"], r["prompt_tokens"], r["completion_tokens"]) for r in saved
        ),
        lookups_by_tier=tuple((r["tier"], r["lookups"], r["lookup_ms"]) for r in tiers),
    )
