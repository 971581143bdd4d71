"""The llm_cache table, its indexes and the vector extension.

Revision ID: 0001
Revises:
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op
from pgvector.sqlalchemy import HALFVEC, VECTOR
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    embedding_dim = context.config.attributes["embedding_dim"]
    embedding_type = context.config.attributes.get("embedding_type", "vector")
    column_type = HALFVEC(embedding_dim) if embedding_type == "halfvec" else VECTOR(embedding_dim)
    op.execute("CREATE EXTENSION IF NOT EXISTS vector")
    op.create_table(
        "llm_cache",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("cache_key", sa.LargeBinary(), nullable=False),
        sa.Column("scope_key", sa.LargeBinary(), nullable=False),
        sa.Column("model", sa.Text(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("response", postgresql.JSONB(), nullable=False),
        sa.Column("embedding", column_type, nullable=True),
        sa.Column("embedder", sa.Text(), nullable=True),
        sa.Column(
            "tags",
            postgresql.ARRAY(sa.Text()),
            nullable=False,
            server_default=sa.text("'{}'::text[]"),
        ),
        sa.Column("prompt_tokens", sa.Integer(), nullable=True),
        sa.Column("completion_tokens", sa.Integer(), nullable=True),
        sa.Column("hit_count", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_hit_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.UniqueConstraint("namespace", "cache_key", name="llm_cache_namespace_cache_key_key"),
    )
    op.create_index("llm_cache_expires_at_idx", "llm_cache", ["expires_at"])
    op.create_index("llm_cache_tags_idx", "llm_cache", ["tags"], postgresql_using="gin")
    op.create_index(
        "llm_cache_embedding_ivfflat",
        "llm_cache",
        ["embedding"],
        postgresql_using="ivfflat",
        postgresql_with={"lists": 100},
        postgresql_ops={"embedding": f"{embedding_type}_cosine_ops"},
    )


def downgrade() -> None:
    op.drop_table("llm_cache")
    # The vector extension stays: other tables of the database may use it.
