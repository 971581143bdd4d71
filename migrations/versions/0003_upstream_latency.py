"""Record how long the upstream call took, so that hits can report the latency saved.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-21
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("llm_cache", sa.Column("upstream_ms", sa.Integer(), nullable=True))


def downgrade() -> None:
    op.drop_column("llm_cache", "upstream_ms")
