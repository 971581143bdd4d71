"""llm_cache_exact_round: the exact lookups of a round (`postgres.lookups`), on a plan
made once per connection. As a prepared statement the round's query over arrays is
planned afresh on every call (the arrays' length is unknown to a generic plan, so the
server keeps custom plans): 0.18-0.23 ms of server CPU for rounds of one to eight keys,
against 0.075-0.095 here and 0.05 for the point query (docs/benchmarks.md). The
function sets `plan_cache_mode` for its own transaction, as llm_cache_nearest does: no
session state, behind a transaction-mode pooler too.

The plan stays one probe of the (namespace, cache_key) index per key: the lateral
subquery with LIMIT 1, whatever the arrays' length. On a table partitioned by namespace
each probe prunes to its key's partition as it runs.

Expand-only: code of revisions 0006-0009 keeps running on it (their query over arrays
reads the table as before).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The columns, filters and alias check of 0009's code's GET_EXACT_ROUND (sql.py): a row
# live, or expired less than its key's grace ago (`out_stale`); an alias only while the
# row it copies is there, unchanged since it was copied.
EXACT_ROUND_FUNCTION = """
CREATE FUNCTION llm_cache_exact_round(
    p_namespaces text[], p_keys bytea[], p_graces float8[]
) RETURNS TABLE (
    out_slot bigint, out_id bigint, out_cache_key bytea, out_model text,
    out_response jsonb, out_tags text[], out_prompt_tokens integer,
    out_completion_tokens integer, out_upstream_ms integer, out_created_at timestamptz,
    out_expires_at timestamptz, out_judged_similarity float8, out_ttl_left float8,
    out_stale boolean
)
LANGUAGE plpgsql VOLATILE ROWS 8 AS $$
BEGIN
    PERFORM set_config('plan_cache_mode', 'force_generic_plan', true);
    RETURN QUERY
    SELECT k.slot, c.*
    FROM unnest(p_namespaces, p_keys, p_graces) WITH ORDINALITY AS k(ns, key, grace, slot)
    CROSS JOIN LATERAL (
        SELECT id, coalesce(alias_of, cache_key), model, response, tags, prompt_tokens,
               completion_tokens, upstream_ms, created_at, expires_at, judged_similarity,
               extract(epoch FROM expires_at - now())::float8,
               coalesce(expires_at <= now(), false)
        FROM llm_cache
        WHERE namespace = k.ns AND cache_key = k.key
          AND (expires_at IS NULL OR expires_at > now() - k.grace * interval '1 second')
          AND (llm_cache.alias_of IS NULL OR llm_cache.created_at = (
                SELECT o.created_at FROM llm_cache AS o
                WHERE o.namespace = llm_cache.namespace AND o.cache_key = llm_cache.alias_of
              ))
        LIMIT 1
    ) AS c;
END
$$
"""


def upgrade() -> None:
    op.execute(EXACT_ROUND_FUNCTION)


def downgrade() -> None:
    op.execute("DROP FUNCTION llm_cache_exact_round(text[], bytea[], float8[])")
