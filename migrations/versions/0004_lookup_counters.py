"""Lookup counters per namespace and tier, written behind by every cache, for
`llm-pgcache stats`.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_cache_counters",
        sa.Column("namespace", sa.Text(), primary_key=True),
        sa.Column("tier", sa.Text(), primary_key=True),
        sa.Column("lookups", sa.BigInteger(), nullable=False, server_default=sa.text("0")),
        sa.Column("lookup_ms", sa.Float(precision=53), nullable=False, server_default=sa.text("0")),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        comment="Lookups answered per namespace and tier ('miss' for misses), added up by "
        "every cache process every few seconds.",
    )


def downgrade() -> None:
    op.drop_table("llm_cache_counters")
