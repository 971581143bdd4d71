"""The SQL of aliases and judgments (`postgres.judgments`), with `$n` parameters; a
test prepares each against a migrated database, as those of `sql`."""

from __future__ import annotations

from typing import Final, LiteralString

# An alias ($2, scope $3, prompt $4, judged at similarity $5) of the live row $6 of
# namespace $1: a copy of its response, expiry and tags under the new key; nothing when
# that row is gone, is itself an alias, or the new key has a row of its own. The row is
# locked until the alias commits: an invalidation or a replacement running meanwhile
# waits (and one already running makes this find no row).
PUT_ALIAS: Final[LiteralString] = """
INSERT INTO llm_cache (
    namespace, cache_key, scope_key, model, prompt, response, tags, prompt_tokens,
    completion_tokens, upstream_ms, created_at, expires_at, alias_of, judged_similarity
)
SELECT namespace, $2, $3, model, $4, response, tags, prompt_tokens, completion_tokens,
       upstream_ms, created_at, expires_at, cache_key, $5
FROM (
    SELECT * FROM llm_cache
    WHERE namespace = $1 AND cache_key = $6 AND alias_of IS NULL
      AND (expires_at IS NULL OR expires_at > now())
    FOR SHARE
) AS original
ON CONFLICT (namespace, cache_key) DO NOTHING
RETURNING id
"""

# After an invalidation of namespace $1: the aliases whose row is gone or was replaced
# (never served: `_ALIAS_LIVE`), deleted; an invalidation that started before an alias
# was made does not see it.
DROP_ORPHAN_ALIASES: Final[LiteralString] = """
DELETE FROM llm_cache AS a
WHERE a.namespace = $1 AND a.alias_of IS NOT NULL AND NOT EXISTS (
    SELECT 1 FROM llm_cache AS o
    WHERE o.namespace = a.namespace AND o.cache_key = a.alias_of
      AND o.created_at = a.created_at
)
"""

# Verdicts on semantic candidates: arrays of (namespace, embedder, similarity, verdict,
# source).
ADD_JUDGMENTS: Final[LiteralString] = """
INSERT INTO llm_cache_judgments (namespace, embedder, similarity, verdict, source)
SELECT * FROM unnest($1::text[], $2::text[], $3::float8[], $4::bool[], $5::text[])
"""

# The evidence behind a serve threshold: the $4 judgments of (namespace, embedder) with
# the highest similarities from $3 up, highest first.
JUDGMENTS_OF: Final[LiteralString] = """
SELECT similarity, verdict
FROM llm_cache_judgments
WHERE namespace = $1 AND embedder = $2 AND similarity >= $3
ORDER BY similarity DESC
LIMIT $4
"""

# Which (namespace, embedder) have judgments ($1 NULL: every namespace).
JUDGED_SCOPES: Final[LiteralString] = """
SELECT namespace, embedder, count(*) AS judgments
FROM llm_cache_judgments
WHERE $1::text IS NULL OR namespace = $1
GROUP BY namespace, embedder
ORDER BY namespace, embedder
"""


JUDGMENT_QUERIES: Final[dict[str, LiteralString]] = {
    "put_alias": PUT_ALIAS,
    "drop_orphan_aliases": DROP_ORPHAN_ALIASES,
    "add_judgments": ADD_JUDGMENTS,
    "judgments_of": JUDGMENTS_OF,
    "judged_scopes": JUDGED_SCOPES,
}
