"""The statements of semantic lookups (`store.nearest_round`): a round of nearest rows
for the vectors of one scope, and one lookup's exact row else its nearest.

Both call llm_cache_nearest (migrations 0005, 0009) and read the row it found by primary
key. `NEAREST_QUERIES` is prepared by a test against a migrated database, like
`sql.NAMED_QUERIES`.
"""

from __future__ import annotations

from typing import Final, LiteralString

from llm_pgcache.postgres import sql

# The row served, for each row llm_cache_nearest found (`n`, in namespace $1): a lateral
# lookup by primary key ("OFFSET 0" keeps the planner from flattening it into a join,
# which on a small table reads it whole and may never call the function at all).
_SERVED_ROW: Final[LiteralString] = """CROSS JOIN LATERAL (
    SELECT id, cache_key, model, prompt, response, tags, prompt_tokens, completion_tokens,
           upstream_ms, created_at, expires_at,
           extract(epoch FROM expires_at - now())::float8 AS ttl_left
    FROM llm_cache WHERE namespace = $1 AND id = n.out_id
    OFFSET 0
) AS c
"""

# A round of semantic lookups that share a scope (`store.nearest_round`), in one
# statement: llm_cache_nearest (migrations 0005, 0009) sets the search ($7 probes, $8 max
# probes, $9 ef_search; $10 whether an ANN index was built on data) for this statement's
# transaction, scans a scope of at most $11 rows exactly and searches a larger one (or
# any, with $11 0) through the index, and returns, per query vector of $4 whose nearest
# live row of the scope ($1-$3) is within its distance ($5), the row's id and distance,
# and whether the index answered; the one row served is read here (`_SERVED_ROW`).
SEMANTIC_NEAREST_ROUND: Final[LiteralString] = (
    """
SELECT n.out_slot AS slot, c.*, n.out_distance AS distance, n.out_indexed AS indexed
FROM llm_cache_nearest($1, $2, $3, $4::vector[], $5::float8[], $6, $7, $8, $9, $10, $11) AS n
"""
    + _SERVED_ROW
)

# One lookup given its vector while the semantic path is idle (`store.nearest_round`):
# the exact row (GET_EXACT, $1-$3), else the nearest (SEMANTIC_NEAREST_ROUND's, its
# arguments from $4 on: $4 the scope key, $5 the embedder, $6 one vector...), in one
# statement: `exact` says which. The nearest branch is under a one-time filter on the
# exact one being empty: on an exact hit PostgreSQL never runs llm_cache_nearest. The
# columns are both shapes' (NULL where one has none: an exact row has no prompt or
# distance). GET_EXACT inline rather than llm_cache_exact_round: 0.05 ms less a lookup,
# exact hit or miss (measured apart, 2,000 statements each, random order).
EXACT_OR_NEAREST: Final[LiteralString] = (
    """
WITH exact AS ("""  # noqa: S608 - constant fragments only, no values
    + sql.GET_EXACT
    + """)
SELECT 1::bigint AS slot, true AS exact, id, cache_key, model, NULL::text AS prompt,
       response, tags, prompt_tokens, completion_tokens, upstream_ms, created_at,
       expires_at, judged_similarity, ttl_left, stale, NULL::float8 AS distance,
       NULL::boolean AS indexed
FROM exact
UNION ALL
SELECT n.out_slot, false, c.id, c.cache_key, c.model, c.prompt, c.response, c.tags,
       c.prompt_tokens, c.completion_tokens, c.upstream_ms, c.created_at, c.expires_at,
       NULL, c.ttl_left, false, n.out_distance, n.out_indexed
FROM llm_cache_nearest(
    $1, $4, $5, $6::vector[], $7::float8[], $8, $9, $10, $11, $12, $13
) AS n
"""
    + _SERVED_ROW
    + """WHERE NOT EXISTS (SELECT 1 FROM exact)
"""
)

NEAREST_QUERIES: Final[dict[str, LiteralString]] = {
    "semantic_nearest_round": SEMANTIC_NEAREST_ROUND,
    "exact_or_nearest": EXACT_OR_NEAREST,
}
