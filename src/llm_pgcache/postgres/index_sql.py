"""The statements of the ivfflat index rebuild (`reindex`): its record, its lock, and the
DDL that builds and swaps the index.

A test prepares `INDEX_QUERIES` against a migrated database, like `sql.NAMED_QUERIES`.
"""

from __future__ import annotations

from typing import Final, LiteralString

LAST_INDEX_BUILD: Final[LiteralString] = """
SELECT lists, rows, built_at FROM llm_cache_index_builds
WHERE index_name = $1 ORDER BY id DESC LIMIT 1
"""

RECORD_INDEX_BUILD: Final[LiteralString] = """
INSERT INTO llm_cache_index_builds (index_name, lists, rows) VALUES ($1, $2, $3)
"""

COUNT_EMBEDDED: Final[LiteralString] = """
SELECT count(*) FROM llm_cache WHERE embedding IS NOT NULL
"""

# Memory for building the ivfflat index (its k-means), for the reindex session.
SET_MAINTENANCE_WORK_MEM: Final[LiteralString] = """
SELECT set_config('maintenance_work_mem', $1, false)
"""

# Reindex runs alone: a second run finds the lock taken and exits. The key is shared by
# every version that may run at once (a deploy's old and new processes): never change it.
TRY_REINDEX_LOCK: Final[LiteralString] = """
SELECT pg_try_advisory_lock(hashtext('llm_pgcache.reindex'))
"""

RELEASE_REINDEX_LOCK: Final[LiteralString] = """
SELECT pg_advisory_unlock(hashtext('llm_pgcache.reindex'))
"""

# DDL takes no bind parameters, and CREATE INDEX CONCURRENTLY cannot run in a function
# or a transaction, so the rebuild statements are composed here, from fixed identifiers
# and a checked integer only: nothing a caller passes reaches them as text.
IVFFLAT_MAX_LISTS: Final = 32768  # pgvector's limit

DROP_NEW_IVFFLAT: Final[LiteralString] = (
    "DROP INDEX CONCURRENTLY IF EXISTS llm_cache_embedding_ivfflat_new"
)
DROP_OLD_IVFFLAT: Final[LiteralString] = (
    "DROP INDEX CONCURRENTLY IF EXISTS llm_cache_embedding_ivfflat"
)
RENAME_NEW_IVFFLAT: Final[LiteralString] = (
    "ALTER INDEX llm_cache_embedding_ivfflat_new RENAME TO llm_cache_embedding_ivfflat"
)
RESET_MAINTENANCE_WORK_MEM: Final[LiteralString] = "RESET maintenance_work_mem"
# Fresh statistics, so that the planner knows how many rows each scope holds.
ANALYZE_TABLE: Final[LiteralString] = "ANALYZE llm_cache"


INDEX_QUERIES: Final[dict[str, LiteralString]] = {
    "last_index_build": LAST_INDEX_BUILD,
    "record_index_build": RECORD_INDEX_BUILD,
    "count_embedded": COUNT_EMBEDDED,
    "set_maintenance_work_mem": SET_MAINTENANCE_WORK_MEM,
    "try_reindex_lock": TRY_REINDEX_LOCK,
    "release_reindex_lock": RELEASE_REINDEX_LOCK,
}

INDEX_DDL: Final[dict[str, LiteralString]] = {
    "drop_new_ivfflat": DROP_NEW_IVFFLAT,
    "drop_old_ivfflat": DROP_OLD_IVFFLAT,
    "rename_new_ivfflat": RENAME_NEW_IVFFLAT,
    "reset_maintenance_work_mem": RESET_MAINTENANCE_WORK_MEM,
    "analyze_table": ANALYZE_TABLE,
}


def create_new_ivfflat(lists: int) -> str:
    """CREATE INDEX CONCURRENTLY of the replacement ivfflat index with `lists` lists."""
    if type(lists) is not int or not 1 <= lists <= IVFFLAT_MAX_LISTS:
        raise ValueError(f"lists must be an int from 1 to {IVFFLAT_MAX_LISTS}, got {lists!r}")
    return (
        "CREATE INDEX CONCURRENTLY llm_cache_embedding_ivfflat_new ON llm_cache "
        "USING ivfflat (embedding vector_cosine_ops) WITH (lists = " + str(lists) + ")"
    )
