"""Judged semantic hits: aliases in `llm_cache` and the judgments table behind the
false-hit bound.

An alias is a row under a new request's exact key that a judge accepted as answered by
another row (`alias_of`, same namespace): it copies that row's response, expiry and tags,
and goes with it when the row is invalidated or replaced. `llm_cache_judgments` holds
every verdict on a semantic candidate (judge, audit, feedback, labelled pairs) with its
similarity, from which each namespace's serve threshold is computed.

It also starts `llm_pgcache_schema`, whose one row says the oldest code revision that
runs against this schema: a later migration that only expands the schema (new tables,
nullable columns, indexes) leaves it, so code deployed before it keeps running during a
rolling deploy; one that contracts (drops or renames what older code uses) raises it.
And `llm_pgcache_leases`: who runs the purge or a reindex, in place of session advisory
locks, which a transaction-mode pooler cannot hold.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "llm_pgcache_schema",
        sa.Column("oldest_code_revision", sa.Text(), nullable=False),
        comment="The oldest llm-pgcache schema revision whose code runs against this "
        "schema: expand-only migrations keep it, contracting ones raise it.",
    )
    op.execute("INSERT INTO llm_pgcache_schema (oldest_code_revision) VALUES ('0006')")
    op.create_table(
        "llm_pgcache_leases",
        sa.Column("name", sa.Text(), primary_key=True),
        sa.Column("holder", sa.Text(), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        comment="Who runs the purge or a reindex, until when (renewed while it runs): no "
        "session lock, so that they work through a transaction-mode pooler.",
    )
    op.add_column("llm_cache", sa.Column("alias_of", sa.LargeBinary(), nullable=True))
    op.add_column("llm_cache", sa.Column("judged_similarity", sa.Float(), nullable=True))
    op.create_index(
        "llm_cache_alias_of_idx",
        "llm_cache",
        ["namespace", "alias_of"],
        postgresql_where=sa.text("alias_of IS NOT NULL"),
    )
    op.create_table(
        "llm_cache_judgments",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=True), primary_key=True),
        sa.Column("namespace", sa.Text(), nullable=False),
        sa.Column("embedder", sa.Text(), nullable=False),
        sa.Column("similarity", sa.Float(), nullable=False),
        sa.Column("verdict", sa.Boolean(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column(
            "judged_at",
            sa.DateTime(timezone=True),
            nullable=False,
            server_default=sa.text("now()"),
        ),
        sa.CheckConstraint(
            "source IN ('judge', 'audit', 'report', 'label')", name="llm_cache_judgments_source"
        ),
        comment="Verdicts on semantic candidates (true: the stored answer answers the "
        "query), by source; each namespace's serve threshold is computed from its own.",
    )
    op.create_index(
        "llm_cache_judgments_scope_idx",
        "llm_cache_judgments",
        ["namespace", "embedder", "similarity"],
    )


def downgrade() -> None:
    op.drop_table("llm_pgcache_leases")
    op.drop_table("llm_pgcache_schema")
    op.drop_table("llm_cache_judgments")
    op.drop_index("llm_cache_alias_of_idx", table_name="llm_cache")
    op.drop_column("llm_cache", "judged_similarity")
    op.drop_column("llm_cache", "alias_of")
