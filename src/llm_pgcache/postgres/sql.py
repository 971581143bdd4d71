"""Every SQL statement the repository runs, by name, with `$n` parameters (those of the
index rebuild are in `index_sql`, of semantic lookups in `nearest_sql`, of aliases and
judgments in `judgment_sql`, of stats in `stats`).

Nothing else in the package writes SQL for the hot path; a test prepares each of these
against a migrated database, so a renamed column fails CI rather than production.

A statement that names rows by `id` names their namespace too: on a table partitioned by
namespace (`llm-pgcache partition`) or distributed by it (Citus), that keeps it on the
one partition or shard that holds them.
"""

from __future__ import annotations

from typing import Final, LiteralString

# Every read filters on expiry: an expired row is never returned, whether or not the purge
# job has deleted it yet. The one exception is a cache's stale-while-revalidate grace
# (seconds, 0 without): a row expired less than that long ago comes back marked stale.
# An alias row answers as the row it copies: its `cache_key` is that row's, so that the
# copies above PostgreSQL go with it; `judged_similarity` tells it apart. The exact
# rounds' function (llm_cache_exact_round, migration 0010) has these columns and filters
# too: a change to them is a migration of it as well.
_EXACT_COLUMNS: Final[LiteralString] = """id, coalesce(alias_of, cache_key) AS cache_key,
       model, response, tags, prompt_tokens, completion_tokens, upstream_ms, created_at,
       expires_at, judged_similarity,
       extract(epoch FROM expires_at - now())::float8 AS ttl_left,
       coalesce(expires_at <= now(), false) AS stale"""

# An alias is served only while the row it copies is there, unchanged since it was
# copied (a replaced row has a new created_at): whatever raced with its making. A scalar
# subquery, run only for an alias: one unique-index probe (an EXISTS may be planned as a
# hashed scan of the whole table).
_ALIAS_LIVE: Final[LiteralString] = """(llm_cache.alias_of IS NULL OR llm_cache.created_at = (
        SELECT o.created_at FROM llm_cache AS o
        WHERE o.namespace = llm_cache.namespace AND o.cache_key = llm_cache.alias_of
    ))"""

GET_EXACT: Final[LiteralString] = (
    "SELECT "
    + _EXACT_COLUMNS
    + """
FROM llm_cache
WHERE namespace = $1 AND cache_key = $2
  AND (expires_at IS NULL OR expires_at > now() - $3::float8 * interval '1 second')
  AND """
    + _ALIAS_LIVE
)

# Lookups that overlap, in one round: arrays of (namespace, key, grace), one row back per
# key found, `slot` being the key's 1-based place in the arrays. llm_cache_exact_round
# (migration 0010) runs GET_EXACT's filters as one unique-index probe per key (a lateral
# subquery with LIMIT 1, whatever the arrays' length), on a plan made once per
# connection: as a statement of its own the query over arrays would be planned afresh on
# every call (0.21 ms of server CPU for a round, against 0.08).
GET_EXACT_ROUND: Final[LiteralString] = """
SELECT out_slot AS slot, out_id AS id, out_cache_key AS cache_key, out_model AS model,
       out_response AS response, out_tags AS tags, out_prompt_tokens AS prompt_tokens,
       out_completion_tokens AS completion_tokens, out_upstream_ms AS upstream_ms,
       out_created_at AS created_at, out_expires_at AS expires_at,
       out_judged_similarity AS judged_similarity, out_ttl_left AS ttl_left,
       out_stale AS stale
FROM llm_cache_exact_round($1::text[], $2::bytea[], $3::float8[])
"""

# A stored row replaces the previous one of its key whole: new response, embedding,
# expiry, and its hit count starts again.
_REPLACE_ROW: Final[LiteralString] = """ON CONFLICT (namespace, cache_key) DO UPDATE SET
    scope_key = EXCLUDED.scope_key,
    model = EXCLUDED.model,
    prompt = EXCLUDED.prompt,
    response = EXCLUDED.response,
    tags = EXCLUDED.tags,
    prompt_tokens = EXCLUDED.prompt_tokens,
    completion_tokens = EXCLUDED.completion_tokens,
    upstream_ms = EXCLUDED.upstream_ms,
    embedding = EXCLUDED.embedding,
    embedder = EXCLUDED.embedder,
    hit_count = 0,
    last_hit_at = NULL,
    created_at = now(),
    expires_at = EXCLUDED.expires_at,
    alias_of = NULL,
    judged_similarity = NULL
"""

# $10 is the ttl in seconds; NULL means no expiry (NULL * interval is NULL). $14 is the
# invalidation notice sent to other processes' memory tiers, on commit. The aliases of
# the row replaced go with its old response.
PUT: Final[LiteralString] = (
    """
WITH unaliased AS (DELETE FROM llm_cache WHERE namespace = $1 AND alias_of = $2),
stored AS (
INSERT INTO llm_cache AS c (
    namespace, cache_key, scope_key, model, prompt, response, tags,
    prompt_tokens, completion_tokens, expires_at, embedding, embedder, upstream_ms
)
VALUES (
    $1, $2, $3, $4, $5, $6::jsonb, $7, $8, $9, now() + $10::float8 * interval '1 second',
    $11, $12, $13
)
"""  # noqa: S608 - constant fragments only, no values
    + _REPLACE_ROW
    + """RETURNING 1
)
SELECT pg_notify('llm_pgcache', $14) FROM stored
"""
)

# Stores that overlap, in one statement (`postgres.puts`): arrays of the columns of PUT
# ($10 ttls, $7 tags as JSON arrays), the last of each key winning; $14 the notices.
PUT_ROUND: Final[LiteralString] = (
    """
WITH input AS (
    SELECT * FROM unnest(
        $1::text[], $2::bytea[], $3::bytea[], $4::text[], $5::text[], $6::text[],
        $7::text[], $8::int[], $9::int[], $10::float8[], $11::vector[], $12::text[],
        $13::int[]
    ) WITH ORDINALITY AS i(
        namespace, cache_key, scope_key, model, prompt, response, tags, prompt_tokens,
        completion_tokens, ttl, embedding, embedder, upstream_ms, seq
    )
),
latest AS (
    SELECT DISTINCT ON (namespace, cache_key) * FROM input
    ORDER BY namespace, cache_key, seq DESC
),
unaliased AS (
    DELETE FROM llm_cache AS a USING latest AS l
    WHERE a.namespace = l.namespace AND a.alias_of = l.cache_key
),
stored AS (
INSERT INTO llm_cache AS c (
    namespace, cache_key, scope_key, model, prompt, response, tags,
    prompt_tokens, completion_tokens, expires_at, embedding, embedder, upstream_ms
)
SELECT namespace, cache_key, scope_key, model, prompt, response::jsonb,
       ARRAY(SELECT jsonb_array_elements_text(tags::jsonb)), prompt_tokens,
       completion_tokens, now() + ttl * interval '1 second', embedding, embedder, upstream_ms
FROM latest
"""  # noqa: S608 - constant fragments only, no values
    + _REPLACE_ROW
    + """RETURNING 1
)
SELECT pg_notify('llm_pgcache', notice) FROM unnest($14::text[]) AS notice
"""
)

# Invalidations return the count deleted and notify other processes' memory tiers ($3,
# $2 for a whole namespace), on commit. Those of many rows delete at most $4 ($3) rows a
# statement, and run again while a statement deletes that many (`store.delete`).
DELETE_BY_KEY: Final[LiteralString] = """
WITH gone AS (
    DELETE FROM llm_cache WHERE namespace = $1 AND (cache_key = $2 OR alias_of = $2)
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted, pg_notify('llm_pgcache', $3)
"""

DELETE_BY_TAG: Final[LiteralString] = """
WITH gone AS (
    DELETE FROM llm_cache WHERE namespace = $1 AND id IN (
        SELECT id FROM llm_cache WHERE namespace = $1 AND tags @> ARRAY[$2::text] LIMIT $4
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted, pg_notify('llm_pgcache', $3)
"""

DELETE_BY_MODEL: Final[LiteralString] = """
WITH gone AS (
    DELETE FROM llm_cache WHERE namespace = $1 AND id IN (
        SELECT id FROM llm_cache WHERE namespace = $1 AND model = $2 LIMIT $4
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted, pg_notify('llm_pgcache', $3)
"""

DELETE_NAMESPACE: Final[LiteralString] = """
WITH gone AS (
    DELETE FROM llm_cache WHERE namespace = $1 AND id IN (
        SELECT id FROM llm_cache WHERE namespace = $1 LIMIT $3
    )
    RETURNING 1
)
SELECT (SELECT count(*) FROM gone) AS deleted, pg_notify('llm_pgcache', $2)
"""

INVALIDATION_CHANNEL: Final = "llm_pgcache"

SCHEMA_STATE: Final[LiteralString] = """
SELECT
    to_regclass('llm_cache') IS NOT NULL AS has_table,
    to_regclass('llm_pgcache_alembic_version') IS NOT NULL AS has_version_table,
    to_regclass('llm_pgcache_schema') IS NOT NULL AS has_compatibility_table,
    (SELECT a.atttypmod FROM pg_attribute a
     WHERE a.attrelid = to_regclass('llm_cache') AND a.attname = 'embedding'
       AND NOT a.attisdropped) AS embedding_dim,
    (SELECT format_type(a.atttypid, NULL) FROM pg_attribute a
     WHERE a.attrelid = to_regclass('llm_cache') AND a.attname = 'embedding'
       AND NOT a.attisdropped) AS embedding_type
"""

SCHEMA_REVISION: Final[LiteralString] = """
SELECT version_num FROM llm_pgcache_alembic_version
"""

# The oldest code revision the schema runs with (its table: migration 0006 on).
OLDEST_CODE_REVISION: Final[LiteralString] = """
SELECT max(oldest_code_revision) FROM llm_pgcache_schema
"""

# The purge deletes in short batches (one statement, one transaction each) so that it
# never holds many locks for long; SKIP LOCKED steps around rows a writer holds.
PURGE_EXPIRED_BATCH: Final[LiteralString] = """
WITH doomed AS (
    SELECT namespace, id FROM llm_cache
    WHERE expires_at <= now()
    ORDER BY expires_at
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM llm_cache c USING doomed d WHERE c.namespace = d.namespace AND c.id = d.id
"""

COUNT_EXPIRED: Final[LiteralString] = """
SELECT count(*) FROM llm_cache WHERE expires_at <= now()
"""

# Size cap: the least recently used live rows go first (last hit, else creation).
EVICT_LEAST_RECENT_BATCH: Final[LiteralString] = """
WITH doomed AS (
    SELECT namespace, id FROM llm_cache
    ORDER BY coalesce(last_hit_at, created_at)
    LIMIT $1
    FOR UPDATE SKIP LOCKED
)
DELETE FROM llm_cache c USING doomed d WHERE c.namespace = d.namespace AND c.id = d.id
"""

# Rows and bytes per row, for a --max-rows / --max-bytes cap (bytes are an estimate:
# deleted rows' space is reused by later rows, not returned to the filesystem).
TABLE_VOLUME: Final[LiteralString] = """
SELECT (SELECT count(*) FROM llm_cache) AS rows,
       (SELECT coalesce(sum(pg_total_relation_size(relid)), pg_total_relation_size('llm_cache'))
        FROM pg_partition_tree('llm_cache')) AS bytes  -- its partitions', or its own
"""

# Lock keys are shared by every version that may run at once (old and new processes of
# a deploy): never change them.
# A lease ($1, e.g. "purge") taken or renewed by holder $2 for $3 seconds: a row back
# when it is $2's (it was free, expired, or already $2's).
TAKE_LEASE: Final[LiteralString] = """
INSERT INTO llm_pgcache_leases AS l (name, holder, expires_at)
VALUES ($1, $2, now() + $3::float8 * interval '1 second')
ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at
WHERE l.holder = EXCLUDED.holder OR l.expires_at < now()
RETURNING holder
"""

DROP_LEASE: Final[LiteralString] = """
DELETE FROM llm_pgcache_leases WHERE name = $1 AND holder = $2
"""

# Hits counted in memory and written behind, many rows per statement.
RECORD_HITS: Final[LiteralString] = """
UPDATE llm_cache c
SET hit_count = c.hit_count + v.hits,
    last_hit_at = greatest(c.last_hit_at, v.at)
FROM unnest($1::text[], $2::bytea[], $3::bigint[], $4::timestamptz[]) AS v(namespace, key, hits, at)
WHERE c.namespace = v.namespace AND c.cache_key = v.key
"""

# Bulk loading (`warm`): rows are copied into a temporary table, then upserted; the last
# of several rows with one key wins.
CREATE_WARM_TABLE: Final[LiteralString] = """
CREATE TEMPORARY TABLE llm_cache_warm (
    seq bigint, namespace text, cache_key bytea, scope_key bytea, model text, prompt text,
    response text, tags text[], prompt_tokens integer, completion_tokens integer,
    ttl float8, embedding vector, embedder text
) ON COMMIT DROP
"""

UPSERT_WARM_ROWS: Final[LiteralString] = (
    """
INSERT INTO llm_cache AS c (
    namespace, cache_key, scope_key, model, prompt, response, tags, prompt_tokens,
    completion_tokens, upstream_ms, expires_at, embedding, embedder
)
SELECT DISTINCT ON (namespace, cache_key)
    namespace, cache_key, scope_key, model, prompt, response::jsonb, tags, prompt_tokens,
    completion_tokens, NULL::integer, now() + ttl * interval '1 second', embedding, embedder
FROM llm_cache_warm
ORDER BY namespace, cache_key, seq DESC
"""
    + _REPLACE_ROW
)

# The aliases of the rows a bulk load replaces go with their old responses.
DROP_WARM_ALIASES: Final[LiteralString] = """
DELETE FROM llm_cache AS a USING llm_cache_warm AS w
WHERE a.namespace = w.namespace AND a.alias_of = w.cache_key
"""

# Lookups counted in memory, added to the shared counters every few seconds.
ADD_COUNTERS: Final[LiteralString] = """
INSERT INTO llm_cache_counters AS c (namespace, tier, lookups, lookup_ms)
SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::float8[])
ON CONFLICT (namespace, tier) DO UPDATE SET
    lookups = c.lookups + EXCLUDED.lookups,
    lookup_ms = c.lookup_ms + EXCLUDED.lookup_ms,
    updated_at = now()
"""

COUNTERS_BY_TIER: Final[LiteralString] = """
SELECT tier, sum(lookups)::bigint AS lookups, sum(lookup_ms) AS lookup_ms
FROM llm_cache_counters
WHERE $1::text IS NULL OR namespace = $1
GROUP BY tier
ORDER BY tier
"""

NOTIFY_CHANNEL: Final[LiteralString] = """
SELECT pg_notify($1, $2)
"""

NOTIFY: Final[LiteralString] = """
SELECT pg_notify('llm_pgcache', $1)
"""

NAMED_QUERIES: Final[dict[str, LiteralString]] = {
    "get_exact": GET_EXACT,
    "get_exact_round": GET_EXACT_ROUND,
    "put": PUT,
    "put_round": PUT_ROUND,
    "purge_expired_batch": PURGE_EXPIRED_BATCH,
    "count_expired": COUNT_EXPIRED,
    "evict_least_recent_batch": EVICT_LEAST_RECENT_BATCH,
    "table_volume": TABLE_VOLUME,
    "take_lease": TAKE_LEASE,
    "drop_lease": DROP_LEASE,
    "record_hits": RECORD_HITS,
    "notify": NOTIFY,
    "notify_channel": NOTIFY_CHANNEL,
    "add_counters": ADD_COUNTERS,
    "counters_by_tier": COUNTERS_BY_TIER,
    "delete_by_key": DELETE_BY_KEY,
    "delete_by_tag": DELETE_BY_TAG,
    "delete_by_model": DELETE_BY_MODEL,
    "delete_namespace": DELETE_NAMESPACE,
    "schema_state": SCHEMA_STATE,
    "schema_revision": SCHEMA_REVISION,
    "oldest_code_revision": OLDEST_CODE_REVISION,
}


MAINTENANCE_STATEMENTS: Final[dict[str, LiteralString]] = {
    "create_warm_table": CREATE_WARM_TABLE,
    "upsert_warm_rows": UPSERT_WARM_ROWS,  # reads the temporary table
    "drop_warm_aliases": DROP_WARM_ALIASES,
}
