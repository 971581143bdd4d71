"""Semantic lookups: a btree for scoped candidates, and the record of ivfflat rebuilds.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("llm_cache_scope_idx", "llm_cache", ["scope_key", "namespace", "embedder"])
    op.create_table(
        "llm_cache_index_builds",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("index_name", sa.Text(), nullable=False),
        sa.Column("lists", sa.Integer(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column(
            "built_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        comment="Each rebuild of the ivfflat index by `llm-pgcache reindex`: an index that was "
        "never rebuilt was clustered on no data, and semantic lookups scan exactly instead.",
    )


def downgrade() -> None:
    op.drop_table("llm_cache_index_builds")
    op.drop_index("llm_cache_scope_idx", table_name="llm_cache")
