"""Every SQL statement the repository runs, by name, with `$n` parameters.

Nothing else in the package writes SQL for the hot path; a test prepares each of these
against a migrated database, so a renamed column fails CI rather than production.
"""

from __future__ import annotations

from typing import Final, LiteralString

# Every read repeats `expires_at IS NULL OR expires_at > now()`: an expired row is never
# returned, whether or not the purge job has deleted it yet.
GET_EXACT: Final[LiteralString] = """
SELECT id, model, response, tags, prompt_tokens, completion_tokens, created_at, expires_at
FROM llm_cache
WHERE namespace = $1 AND cache_key = $2 AND (expires_at IS NULL OR expires_at > now())
"""

# $10 is the ttl in seconds; NULL means no expiry (NULL * interval is NULL).
PUT: Final[LiteralString] = """
INSERT INTO llm_cache AS c (
    namespace, cache_key, scope_key, model, prompt, response, tags,
    prompt_tokens, completion_tokens, expires_at
)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, now() + $10::float8 * interval '1 second')
ON CONFLICT (namespace, cache_key) DO UPDATE SET
    scope_key = EXCLUDED.scope_key,
    model = EXCLUDED.model,
    prompt = EXCLUDED.prompt,
    response = EXCLUDED.response,
    tags = EXCLUDED.tags,
    prompt_tokens = EXCLUDED.prompt_tokens,
    completion_tokens = EXCLUDED.completion_tokens,
    embedding = NULL,
    embedder = NULL,
    hit_count = 0,
    last_hit_at = NULL,
    created_at = now(),
    expires_at = EXCLUDED.expires_at
"""

DELETE_BY_KEY: Final[LiteralString] = """
DELETE FROM llm_cache WHERE namespace = $1 AND cache_key = $2
"""

DELETE_BY_TAG: Final[LiteralString] = """
DELETE FROM llm_cache WHERE namespace = $1 AND tags @> ARRAY[$2::text]
"""

DELETE_BY_MODEL: Final[LiteralString] = """
DELETE FROM llm_cache WHERE namespace = $1 AND model = $2
"""

DELETE_NAMESPACE: Final[LiteralString] = """
DELETE FROM llm_cache WHERE namespace = $1
"""

# $1 NULL: every namespace.
COUNT_ENTRIES: Final[LiteralString] = """
SELECT
    count(*) AS entries,
    count(*) FILTER (WHERE expires_at <= now()) AS expired,
    coalesce(sum(coalesce(prompt_tokens, 0) + coalesce(completion_tokens, 0)), 0)::bigint
        AS stored_tokens
FROM llm_cache
WHERE $1::text IS NULL OR namespace = $1
"""

TOP_MODELS: Final[LiteralString] = """
SELECT model, count(*) AS entries
FROM llm_cache
WHERE $1::text IS NULL OR namespace = $1
GROUP BY model
ORDER BY entries DESC, model
LIMIT $2
"""

TABLE_SIZES: Final[LiteralString] = """
SELECT
    pg_table_size('llm_cache'::regclass) AS table_bytes,
    pg_indexes_size('llm_cache'::regclass) AS index_bytes
"""

SCHEMA_STATE: Final[LiteralString] = """
SELECT
    to_regclass('llm_cache') IS NOT NULL AS has_table,
    to_regclass('llm_pgcache_alembic_version') IS NOT NULL AS has_version_table,
    (SELECT a.atttypmod FROM pg_attribute a
     WHERE a.attrelid = to_regclass('llm_cache') AND a.attname = 'embedding'
       AND NOT a.attisdropped) AS embedding_dim
"""

SCHEMA_REVISION: Final[LiteralString] = """
SELECT version_num FROM llm_pgcache_alembic_version
"""

NAMED_QUERIES: Final[dict[str, LiteralString]] = {
    "get_exact": GET_EXACT,
    "put": PUT,
    "delete_by_key": DELETE_BY_KEY,
    "delete_by_tag": DELETE_BY_TAG,
    "delete_by_model": DELETE_BY_MODEL,
    "delete_namespace": DELETE_NAMESPACE,
    "count_entries": COUNT_ENTRIES,
    "top_models": TOP_MODELS,
    "table_sizes": TABLE_SIZES,
    "schema_state": SCHEMA_STATE,
    "schema_revision": SCHEMA_REVISION,
}
