"""The ANN index may be HNSW as well as ivfflat (its builds record the method and its
parameters); llm_cache pages keep room for HOT updates of hit counts; semantic lookups
run as one statement (llm_cache_nearest).

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


# A round of semantic lookups in one statement: the search settings (for this statement's
# transaction only) and one ANN search per query vector among the live rows of one
# namespace, scope and embedder. Set in the function, so that the query it runs is planned
# and executed under them; custom plans, so that the plan sees the scope's size (the ANN
# index for a big scope, the scope's btree and a sort for a small one) and follows
# `enable_indexscan` (off: exact scans, before the index was built on data). The distance
# cut-off is applied outside the candidates' subquery, whose LIMIT keeps it from reaching
# the `ORDER BY embedding <=> q LIMIT k` the index serves. Candidates come in relaxed order
# from an iterative scan; "+ 0" makes the outer sort one of its own, which PostgreSQL 17+
# would otherwise drop as already done (pgvector's README): the nearest is returned.
NEAREST_FUNCTION = """
CREATE FUNCTION llm_cache_nearest(
    p_namespace text, p_scope_key bytea, p_embedder text,
    p_vectors vector[], p_max_distances float8[], p_candidates integer,
    p_probes integer, p_max_probes integer, p_ef_search integer, p_index_scans boolean
) RETURNS TABLE (out_slot bigint, out_id bigint, out_distance float8)
LANGUAGE plpgsql VOLATILE ROWS 8 AS $$
BEGIN
    PERFORM set_config('ivfflat.probes', p_probes::text, true),
            set_config('ivfflat.max_probes', p_max_probes::text, true),
            set_config('ivfflat.iterative_scan', 'relaxed_order', true),
            set_config('hnsw.ef_search', p_ef_search::text, true),
            set_config('hnsw.iterative_scan', 'relaxed_order', true),
            set_config('enable_indexscan', CASE WHEN p_index_scans THEN 'on' ELSE 'off' END, true),
            set_config('plan_cache_mode', 'force_custom_plan', true);
    RETURN QUERY
    SELECT q.slot, n.id, n.distance
    FROM unnest(p_vectors, p_max_distances) WITH ORDINALITY AS q(embedding, max_distance, slot)
    CROSS JOIN LATERAL (
        SELECT candidates.id, candidates.distance
        FROM (
            SELECT l.id, l.embedding <=> q.embedding AS distance
            FROM llm_cache l
            WHERE l.namespace = p_namespace AND l.scope_key = p_scope_key
              AND l.embedder = p_embedder
              AND (l.expires_at IS NULL OR l.expires_at > now())
            ORDER BY l.embedding <=> q.embedding
            LIMIT p_candidates
        ) AS candidates
        WHERE candidates.distance <= q.max_distance
        ORDER BY candidates.distance + 0
        LIMIT 1
    ) AS n;
END
$$
"""
NEAREST_SIGNATURE = (
    "llm_cache_nearest(text, bytea, text, vector[], float8[], integer, integer, integer, "
    "integer, boolean)"
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
    op.execute(NEAREST_FUNCTION)


def downgrade() -> None:
    op.execute(f"DROP FUNCTION {NEAREST_SIGNATURE}")
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
