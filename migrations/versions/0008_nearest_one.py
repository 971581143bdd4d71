"""llm_cache_nearest searches for a lone query vector without unnesting an array: the
round of a single semantic lookup (every lookup when they do not overlap) is a plain
`ORDER BY embedding <=> q LIMIT k`, ~0.1-0.2 ms less than the lateral join over one
element (docs/benchmarks.md). Same signature and results.

Expand-only: code of revision 0006 on keeps running on it.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01
"""

import runpy
from collections.abc import Sequence
from pathlib import Path

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As in 0005, with the branch for one vector first. Its candidates' subquery is the
# lateral one's with q.embedding and q.max_distance bound once: the same plan choices
# (custom plans, the settings above), the same strict re-ranking ("+ 0").
NEAREST_FUNCTION = """
CREATE OR REPLACE FUNCTION llm_cache_nearest(
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
    IF cardinality(p_vectors) = 1 THEN
        RETURN QUERY
        SELECT 1::bigint, candidates.id, candidates.distance
        FROM (
            SELECT l.id, l.embedding <=> p_vectors[1] AS distance
            FROM llm_cache l
            WHERE l.namespace = p_namespace AND l.scope_key = p_scope_key
              AND l.embedder = p_embedder
              AND (l.expires_at IS NULL OR l.expires_at > now())
            ORDER BY l.embedding <=> p_vectors[1]
            LIMIT p_candidates
        ) AS candidates
        WHERE candidates.distance <= p_max_distances[1]
        ORDER BY candidates.distance + 0
        LIMIT 1;
        RETURN;
    END IF;
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


def upgrade() -> None:
    op.execute(NEAREST_FUNCTION)


def downgrade() -> None:
    """Back to 0005's function (read from its migration, the one place it is written)."""
    previous = runpy.run_path(str(Path(__file__).with_name("0005_index_methods.py")))
    function: str = previous["NEAREST_FUNCTION"]
    op.execute(function.replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
