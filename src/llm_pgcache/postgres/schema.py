"""The `llm_cache` table, defined once, in SQLAlchemy Core.

The migrations create exactly these tables, `llm_cache`, `llm_cache_index_builds`,
`llm_cache_counters`, `llm_cache_judgments`, `llm_pgcache_schema` and
`llm_pgcache_leases` (a test builds one database from this metadata and one from
`alembic upgrade head` and compares their catalogs). The hot path does not use
SQLAlchemy: its SQL lives in `llm_pgcache.postgres.sql`.
"""

from __future__ import annotations

from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    DateTime,
    Float,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB

from llm_pgcache.config import DEFAULT_EMBEDDING_DIM, DEFAULT_EMBEDDING_TYPE
from llm_pgcache.postgres.index_sql import INDEX_NAMES
from llm_pgcache.postgres.judgments import JUDGMENT_SOURCES

TABLE_NAME = "llm_cache"
INDEX_BUILDS_TABLE = "llm_cache_index_builds"
COUNTERS_TABLE = "llm_cache_counters"
JUDGMENTS_TABLE = "llm_cache_judgments"
COMPATIBILITY_TABLE = "llm_pgcache_schema"
LEASES_TABLE = "llm_pgcache_leases"
VERSION_TABLE = "llm_pgcache_alembic_version"  # not alembic_version: the host app may use it
# The ANN index over `embedding`: the migrations create an ivfflat one; `llm-pgcache
# reindex` rebuilds it, or replaces it with an HNSW one (`--method hnsw`) and back.
IVFFLAT_INDEX = INDEX_NAMES["ivfflat"]
HNSW_INDEX = INDEX_NAMES["hnsw"]
ANN_INDEXES = (IVFFLAT_INDEX, HNSW_INDEX)
IVFFLAT_LISTS = 100
# Room on each page for a row's next version: hit counts are written behind into the rows
# they count, and an update that fits on its page and changes no indexed column is HOT
# (heap-only: no new entry in any index, the ANN index included). Set by migration 0005;
# SQLAlchemy does not declare table storage parameters.
FILLFACTOR = 80


def build_metadata(
    embedding_dim: int = DEFAULT_EMBEDDING_DIM,
    embedding_type: str = DEFAULT_EMBEDDING_TYPE,
    *,
    partitioned: bool = False,
) -> MetaData:
    """The schema, with an `embedding` column of `embedding_dim` dimensions, stored as
    `embedding_type` ("vector" or "halfvec").

    `partitioned`: `llm_cache` as `llm-pgcache partition` makes it, partitioned by hash of
    namespace: every unique index holds the namespace (no primary key on id alone), and
    the ANN index is built on each partition by `reindex`, not on the parent.
    """
    column_type = HALFVEC(embedding_dim) if embedding_type == "halfvec" else VECTOR(embedding_dim)
    metadata = MetaData()
    ann_indexes = (
        ()
        if partitioned
        else (
            Index(
                IVFFLAT_INDEX,
                "embedding",
                postgresql_using="ivfflat",
                postgresql_with={"lists": IVFFLAT_LISTS},
                postgresql_ops={"embedding": f"{embedding_type}_cosine_ops"},
            ),
        )
    )
    Table(
        TABLE_NAME,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=not partitioned),
        Column("namespace", Text, nullable=False),
        Column("cache_key", LargeBinary, nullable=False),
        Column("scope_key", LargeBinary, nullable=False),
        Column("model", Text, nullable=False),
        Column("prompt", Text, nullable=True),
        Column("response", JSONB, nullable=False),
        Column("embedding", column_type, nullable=True),
        Column("embedder", Text, nullable=True),
        Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
        Column("prompt_tokens", Integer, nullable=True),
        Column("completion_tokens", Integer, nullable=True),
        Column("upstream_ms", Integer, nullable=True),  # how long the LLM took to answer
        Column("hit_count", BigInteger, nullable=False, server_default=text("0")),
        Column("last_hit_at", DateTime(timezone=True), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        # An alias: a request a judge accepted as answered by the row `alias_of` (of the
        # same namespace), at `judged_similarity`; it copies that row and goes with it.
        Column("alias_of", LargeBinary, nullable=True),
        Column("judged_similarity", Float, nullable=True),
        UniqueConstraint("namespace", "cache_key", name="llm_cache_namespace_cache_key_key"),
        # Rows named by id are named with their namespace (`sql`): one partition or shard
        # when the table is partitioned or distributed by namespace. id leads, so that
        # exact lookups by (namespace, cache_key) never take it for theirs.
        Index("llm_cache_id_namespace_key", "id", "namespace", unique=True),
        Index("llm_cache_expires_at_idx", "expires_at"),
        Index("llm_cache_tags_idx", "tags", postgresql_using="gin"),
        # Semantic candidates of one scope: exact scans of small scopes, and the planner's
        # alternative to the ivfflat index when a scope holds few rows. scope_key leads, so
        # that exact lookups by (namespace, cache_key) never mistake it for theirs.
        Index("llm_cache_scope_idx", "scope_key", "namespace", "embedder"),
        Index(
            "llm_cache_alias_of_idx",
            "namespace",
            "alias_of",
            postgresql_where=text("alias_of IS NOT NULL"),
        ),
        *ann_indexes,
        postgresql_partition_by="HASH (namespace)" if partitioned else None,
    )
    Table(
        INDEX_BUILDS_TABLE,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("index_name", Text, nullable=False),
        Column("lists", Integer, nullable=True),  # ivfflat
        Column("rows", BigInteger, nullable=False),
        Column("built_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("method", Text, nullable=False, server_default=text("'ivfflat'")),
        Column("m", Integer, nullable=True),  # hnsw
        Column("ef_construction", Integer, nullable=True),  # hnsw
        comment="Each rebuild of the ANN index by `llm-pgcache reindex`: an index that was "
        "never rebuilt was clustered on no data, and semantic lookups scan exactly instead.",
    )
    Table(
        COUNTERS_TABLE,
        metadata,
        Column("namespace", Text, primary_key=True),
        Column("tier", Text, primary_key=True),
        Column("lookups", BigInteger, nullable=False, server_default=text("0")),
        Column("lookup_ms", Float(precision=53), nullable=False, server_default=text("0")),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        comment="Lookups answered per namespace and tier ('miss' for misses), added up by "
        "every cache process every few seconds.",
    )
    Table(
        COMPATIBILITY_TABLE,
        metadata,
        Column("oldest_code_revision", Text, nullable=False),
        comment="The oldest llm-pgcache schema revision whose code runs against this "
        "schema: expand-only migrations keep it, contracting ones raise it.",
    )
    Table(
        LEASES_TABLE,
        metadata,
        Column("name", Text, primary_key=True),
        Column("holder", Text, nullable=False),
        Column("expires_at", DateTime(timezone=True), nullable=False),
        comment="Who runs the purge or a reindex, until when (renewed while it runs): no "
        "session lock, so that they work through a transaction-mode pooler.",
    )
    sources = ", ".join(f"'{source}'" for source in JUDGMENT_SOURCES)
    Table(
        JUDGMENTS_TABLE,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("namespace", Text, nullable=False),
        Column("embedder", Text, nullable=False),
        Column("similarity", Float, nullable=False),
        Column("verdict", Boolean, nullable=False),
        Column("source", Text, nullable=False),
        Column("judged_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        CheckConstraint(f"source IN ({sources})", name="llm_cache_judgments_source"),
        Index("llm_cache_judgments_scope_idx", "namespace", "embedder", "similarity"),
        comment="Verdicts on semantic candidates (true: the stored answer answers the "
        "query), by source; each namespace's serve threshold is computed from its own.",
    )
    return metadata


metadata = build_metadata()
