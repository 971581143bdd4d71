"""llm_cache_nearest chooses its search by the scope's size, on plans made once: a scope
of at most `p_scan_rows` live-or-not rows (counted on its btree, stopping past that) is
scanned exactly, a larger one goes through the ANN index (`out_indexed`, so that the
caller can skip the count next time: `p_scan_rows` 0). Both searches' plans are generic,
made once per connection (~0.2-0.3 ms less per round than a custom plan each time,
docs/benchmarks.md); the settings that shape them (no sort: the index's order; no
sequential or bitmap scan: the scope's btree) are set before each.

Expand-only: the 10-argument function of 0008 stays for the code of 0006-0008.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The candidates' subqueries are 0008's: the cut-off outside the LIMIT the index serves,
# the strict re-ranking ("+ 0") after relaxed iterative scans. The exact search orders by
# "distance + 0" too: no index can serve that order, so it reads the scope's rows.
NEAREST_FUNCTION = """
CREATE FUNCTION llm_cache_nearest(
    p_namespace text, p_scope_key bytea, p_embedder text,
    p_vectors vector[], p_max_distances float8[], p_candidates integer,
    p_probes integer, p_max_probes integer, p_ef_search integer, p_index_scans boolean,
    p_scan_rows integer
) RETURNS TABLE (out_slot bigint, out_id bigint, out_distance float8, out_indexed boolean)
LANGUAGE plpgsql VOLATILE ROWS 8 AS $$
DECLARE
    v_indexed boolean := p_index_scans;
BEGIN
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true),
            set_config('enable_seqscan', 'off', true),
            set_config('enable_bitmapscan', 'off', true);
    IF v_indexed AND p_scan_rows > 0 THEN
        v_indexed := (
            SELECT count(*) FROM (
                SELECT 1 FROM llm_cache AS s
                WHERE s.namespace = p_namespace AND s.scope_key = p_scope_key
                  AND s.embedder = p_embedder
                LIMIT p_scan_rows + 1
            ) AS scope_rows
        ) > p_scan_rows;
    END IF;
    IF v_indexed THEN
        PERFORM set_config('ivfflat.probes', p_probes::text, true),
                set_config('ivfflat.max_probes', p_max_probes::text, true),
                set_config('ivfflat.iterative_scan', 'relaxed_order', true),
                set_config('hnsw.ef_search', p_ef_search::text, true),
                set_config('hnsw.iterative_scan', 'relaxed_order', true),
                set_config('enable_indexscan', 'on', true),
                set_config('enable_sort', 'off', true);
        IF cardinality(p_vectors) = 1 THEN
            RETURN QUERY
            SELECT 1::bigint, candidates.id, candidates.distance, true
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
        SELECT q.slot, n.id, n.distance, true
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
        RETURN;
    END IF;
    PERFORM set_config('enable_indexscan', 'on', true),
            set_config('enable_sort', 'on', true);
    IF cardinality(p_vectors) = 1 THEN
        RETURN QUERY
        SELECT 1::bigint, scanned.id, scanned.distance, false
        FROM (
            SELECT l.id, l.embedding <=> p_vectors[1] AS distance
            FROM llm_cache l
            WHERE l.namespace = p_namespace AND l.scope_key = p_scope_key
              AND l.embedder = p_embedder
              AND (l.expires_at IS NULL OR l.expires_at > now())
            OFFSET 0
        ) AS scanned
        WHERE scanned.distance <= p_max_distances[1]
        ORDER BY scanned.distance + 0
        LIMIT 1;
        RETURN;
    END IF;
    RETURN QUERY
    SELECT q.slot, n.id, n.distance, false
    FROM unnest(p_vectors, p_max_distances) WITH ORDINALITY AS q(embedding, max_distance, slot)
    CROSS JOIN LATERAL (
        SELECT scanned.id, scanned.distance
        FROM (
            SELECT l.id, l.embedding <=> q.embedding AS distance
            FROM llm_cache l
            WHERE l.namespace = p_namespace AND l.scope_key = p_scope_key
              AND l.embedder = p_embedder
              AND (l.expires_at IS NULL OR l.expires_at > now())
            OFFSET 0
        ) AS scanned
        WHERE scanned.distance <= q.max_distance
        ORDER BY scanned.distance + 0
        LIMIT 1
    ) AS n;
END
$$
"""


def upgrade() -> None:
    op.execute(NEAREST_FUNCTION)


def downgrade() -> None:
    op.execute(
        "DROP FUNCTION llm_cache_nearest(text, bytea, text, vector[], float8[], integer, "
        "integer, integer, integer, boolean, integer)"
    )
