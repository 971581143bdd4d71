"""The statements of the ANN index rebuild (`reindex`): its record, its lock, and the DDL
that builds an ivfflat or HNSW index and swaps it in.

A test prepares `INDEX_QUERIES` against a migrated database, like `sql.NAMED_QUERIES`.
"""

from __future__ import annotations

from typing import Final, LiteralString

# The builds of both methods, newest first: the last one says which index serves lookups.
LAST_INDEX_BUILD: Final[LiteralString] = """
SELECT method, lists, m, ef_construction, rows, built_at FROM llm_cache_index_builds
WHERE index_name = ANY($1::text[]) ORDER BY id DESC LIMIT 1
"""

RECORD_INDEX_BUILD: Final[LiteralString] = """
INSERT INTO llm_cache_index_builds (index_name, method, lists, m, ef_construction, rows)
VALUES ($1, $2, $3, $4, $5, $6)
"""

COUNT_EMBEDDED: Final[LiteralString] = """
SELECT count(*) FROM llm_cache WHERE embedding IS NOT NULL
"""

# Memory for building the index (ivfflat's k-means, HNSW's graph), for the reindex session.
SET_MAINTENANCE_WORK_MEM: Final[LiteralString] = """
SELECT set_config('maintenance_work_mem', $1, false)
"""

# DDL takes no bind parameters, and CREATE INDEX CONCURRENTLY cannot run in a function
# or a transaction, so the rebuild statements are composed here, from fixed identifiers
# and checked integers only: nothing a caller passes reaches them as text.
IVFFLAT_MAX_LISTS: Final = 32768  # pgvector's limit
HNSW_M_RANGE: Final = (2, 100)  # pgvector's limits
HNSW_EF_CONSTRUCTION_RANGE: Final = (4, 1000)
METHODS: Final = ("ivfflat", "hnsw")
OPERATOR_CLASSES: Final[dict[str, LiteralString]] = {
    "vector": "vector_cosine_ops",
    "halfvec": "halfvec_cosine_ops",
}
TABLE: Final = "llm_cache"
# The partitions of a table partitioned by namespace (`partitions`): llm_cache_p0, ...
PARTITION_PREFIX: Final = "llm_cache_p"
MAX_PARTITIONS: Final = 1024


def checked_table(table: str) -> LiteralString:
    """`table` if it is llm_cache or one of its partitions' names, for composed DDL."""
    number = table.removeprefix(PARTITION_PREFIX)
    if table != TABLE and not (
        table != number and number.isascii() and number.isdigit() and int(number) < MAX_PARTITIONS
    ):
        raise ValueError(f"not llm_cache or one of its partitions: {table!r}")
    return table  # checked: fixed letters and digits


def ann_index(table: str, method: str) -> LiteralString:
    """The name of `table`'s ANN index of `method` (llm_cache_embedding_ivfflat, ...)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    return checked_table(table) + (
        "_embedding_ivfflat" if method == "ivfflat" else "_embedding_hnsw"
    )


def drop_new_indexes(table: str) -> tuple[LiteralString, ...]:
    """A killed run may leave a half-built replacement behind. One statement each: DROP
    INDEX CONCURRENTLY takes one index."""
    return tuple(
        "DROP INDEX CONCURRENTLY IF EXISTS " + ann_index(table, method) + "_new"
        for method in METHODS
    )


def drop_index(table: str, method: str) -> LiteralString:
    """The index of `method`: the old one, or the other method's after a switch."""
    return "DROP INDEX CONCURRENTLY IF EXISTS " + ann_index(table, method)


def rename_new_index(table: str, method: str) -> LiteralString:
    return "ALTER INDEX " + ann_index(table, method) + "_new RENAME TO " + ann_index(table, method)


INDEX_NAMES: Final[dict[str, LiteralString]] = {
    method: ann_index(TABLE, method) for method in METHODS
}
DROP_NEW_INDEXES: Final[tuple[LiteralString, ...]] = drop_new_indexes(TABLE)
DROP_INDEXES: Final[dict[str, LiteralString]] = {m: drop_index(TABLE, m) for m in METHODS}
RENAME_NEW_INDEXES: Final[dict[str, LiteralString]] = {
    m: rename_new_index(TABLE, m) for m in METHODS
}
RESET_MAINTENANCE_WORK_MEM: Final[LiteralString] = "RESET maintenance_work_mem"
# Fresh statistics, so that the planner knows how many rows each scope holds.
ANALYZE_TABLE: Final[LiteralString] = "ANALYZE llm_cache"


INDEX_QUERIES: Final[dict[str, LiteralString]] = {
    "last_index_build": LAST_INDEX_BUILD,
    "record_index_build": RECORD_INDEX_BUILD,
    "count_embedded": COUNT_EMBEDDED,
    "set_maintenance_work_mem": SET_MAINTENANCE_WORK_MEM,
}

INDEX_DDL: Final[dict[str, LiteralString]] = {
    **{f"drop_new_{i}": statement for i, statement in enumerate(DROP_NEW_INDEXES)},
    **{f"drop_{method}": statement for method, statement in DROP_INDEXES.items()},
    **{f"rename_new_{method}": statement for method, statement in RENAME_NEW_INDEXES.items()},
    "reset_maintenance_work_mem": RESET_MAINTENANCE_WORK_MEM,
    "analyze_table": ANALYZE_TABLE,
}


def _checked(name: str, value: int | None, low: int, high: int) -> str:
    if type(value) is not int or not low <= value <= high:
        raise ValueError(f"{name} must be an int from {low} to {high}, got {value!r}")
    return str(value)


def create_new_index(
    method: str,
    embedding_type: str,
    *,
    table: str = TABLE,
    lists: int | None = None,
    m: int | None = None,
    ef_construction: int | None = None,
) -> str:
    """CREATE INDEX CONCURRENTLY of `table`'s replacement index: ivfflat with `lists`
    lists, or HNSW with `m` links per node and an `ef_construction` candidate list, over
    cosine distance of the `embedding_type` ("vector" or "halfvec") column."""
    name = ann_index(table, method)
    if embedding_type not in OPERATOR_CLASSES:
        raise ValueError(f"unknown embedding column type {embedding_type!r}")
    if method == "ivfflat":
        options = "lists = " + _checked("lists", lists, 1, IVFFLAT_MAX_LISTS)
    else:
        options = (
            "m = "
            + _checked("m", m, *HNSW_M_RANGE)
            + ", ef_construction = "
            + _checked("ef_construction", ef_construction, *HNSW_EF_CONSTRUCTION_RANGE)
        )
    return (
        "CREATE INDEX CONCURRENTLY "
        + name
        + "_new ON "
        + checked_table(table)
        + " USING "
        + method
        + " (embedding "
        + OPERATOR_CLASSES[embedding_type]
        + ") WITH ("
        + options
        + ")"
    )
