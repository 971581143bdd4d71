"""The ANN index may be HNSW as well as ivfflat (its builds record the method and its
parameters), and llm_cache pages keep room for HOT updates of hit counts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BUILDS_COMMENT = (
    "Each rebuild of the ANN index by `llm-pgcache reindex`: an index that was never "
    "rebuilt was clustered on no data, and semantic lookups scan exactly instead."
)
OLD_BUILDS_COMMENT = (
    "Each rebuild of the ivfflat index by `llm-pgcache reindex`: an index that was never "
    "rebuilt was clustered on no data, and semantic lookups scan exactly instead."
)


def upgrade() -> None:
    op.add_column(
        "llm_cache_index_builds",
        sa.Column("method", sa.Text(), nullable=False, server_default=sa.text("'ivfflat'")),
    )
    op.add_column("llm_cache_index_builds", sa.Column("m", sa.Integer(), nullable=True))
    op.add_column(
        "llm_cache_index_builds", sa.Column("ef_construction", sa.Integer(), nullable=True)
    )
    op.alter_column("llm_cache_index_builds", "lists", nullable=True)
    op.create_table_comment("llm_cache_index_builds", BUILDS_COMMENT)
    # Applies to pages written from now on (a VACUUM FULL or pg_repack would apply it to
    # all); existing rows keep working, their updates just are not HOT until then.
    op.execute("ALTER TABLE llm_cache SET (fillfactor = 80)")


def downgrade() -> None:
    op.execute("ALTER TABLE llm_cache RESET (fillfactor)")
    op.create_table_comment("llm_cache_index_builds", OLD_BUILDS_COMMENT)
    # Older code knows only the ivfflat index: put one back if an HNSW one replaced it
    # (unbuilt on data, as the first migration made it; its lookups scan exactly until
    # the next reindex), and forget the HNSW builds, which have no lists.
    column_type = op.get_bind().scalar(
        sa.text(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute "
            "WHERE attrelid = 'llm_cache'::regclass AND attname = 'embedding'"
        )
    )
    op.execute("DROP INDEX IF EXISTS llm_cache_embedding_hnsw")
    op.execute(
        "CREATE INDEX IF NOT EXISTS llm_cache_embedding_ivfflat ON llm_cache USING ivfflat "
        f"(embedding {'halfvec' if column_type == 'halfvec' else 'vector'}_cosine_ops) "
        "WITH (lists = 100)"
    )
    op.execute("DELETE FROM llm_cache_index_builds WHERE method <> 'ivfflat'")
    op.alter_column("llm_cache_index_builds", "lists", nullable=False)
    op.drop_column("llm_cache_index_builds", "ef_construction")
    op.drop_column("llm_cache_index_builds", "m")
    op.drop_column("llm_cache_index_builds", "method")
