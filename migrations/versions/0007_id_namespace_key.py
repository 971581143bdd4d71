"""A unique index on (id, namespace): statements that name rows by id name their
namespace too, so that on a table partitioned or distributed by namespace they stay on
one partition (or shard); here, this index serves them. id leads, so that exact lookups
by (namespace, cache_key) never take it for theirs.

Expand-only: code of revision 0006 keeps running on it (its statements use the primary
key on id, which stays). Built concurrently, so that writes go on during the build.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.get_context().autocommit_block():
        # A build that was stopped leaves an invalid index of that name: built again.
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS llm_cache_id_namespace_key")
        op.execute(
            "CREATE UNIQUE INDEX CONCURRENTLY llm_cache_id_namespace_key "
            "ON llm_cache (id, namespace)"
        )


def downgrade() -> None:
    with op.get_context().autocommit_block():
        op.execute("DROP INDEX CONCURRENTLY IF EXISTS llm_cache_id_namespace_key")
