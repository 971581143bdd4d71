"""The `llm_cache` table, defined once, in SQLAlchemy Core.

The migrations create exactly this (a test builds one database from this metadata and
one from `alembic upgrade head` and compares their catalogs). The hot path does not use
SQLAlchemy: its SQL lives in `llm_pgcache.sql`.
"""

from __future__ import annotations

from pgvector.sqlalchemy import VECTOR
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
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

from llm_pgcache.config import DEFAULT_EMBEDDING_DIM

TABLE_NAME = "llm_cache"
VERSION_TABLE = "llm_pgcache_alembic_version"  # not alembic_version: the host app may use it
IVFFLAT_INDEX = "llm_cache_embedding_ivfflat"
IVFFLAT_LISTS = 100


def build_metadata(embedding_dim: int = DEFAULT_EMBEDDING_DIM) -> MetaData:
    """The schema, with an `embedding` column of `embedding_dim` dimensions."""
    metadata = MetaData()
    Table(
        TABLE_NAME,
        metadata,
        Column("id", BigInteger, Identity(always=True), primary_key=True),
        Column("namespace", Text, nullable=False),
        Column("cache_key", LargeBinary, nullable=False),
        Column("scope_key", LargeBinary, nullable=False),
        Column("model", Text, nullable=False),
        Column("prompt", Text, nullable=True),
        Column("response", JSONB, nullable=False),
        Column("embedding", VECTOR(embedding_dim), nullable=True),
        Column("embedder", Text, nullable=True),
        Column("tags", ARRAY(Text), nullable=False, server_default=text("'{}'::text[]")),
        Column("prompt_tokens", Integer, nullable=True),
        Column("completion_tokens", Integer, nullable=True),
        Column("hit_count", BigInteger, nullable=False, server_default=text("0")),
        Column("last_hit_at", DateTime(timezone=True), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=text("now()")),
        Column("expires_at", DateTime(timezone=True), nullable=True),
        UniqueConstraint("namespace", "cache_key", name="llm_cache_namespace_cache_key_key"),
        Index("llm_cache_expires_at_idx", "expires_at"),
        Index("llm_cache_tags_idx", "tags", postgresql_using="gin"),
        Index(
            IVFFLAT_INDEX,
            "embedding",
            postgresql_using="ivfflat",
            postgresql_with={"lists": IVFFLAT_LISTS},
            postgresql_ops={"embedding": "vector_cosine_ops"},
        ),
    )
    return metadata


metadata = build_metadata()
