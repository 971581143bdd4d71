"""Aliases and judgments in PostgreSQL: what the judges decided, shared by every process."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from llm_pgcache.postgres import judgment_sql
from llm_pgcache.postgres.pool import Connections

JUDGMENT_SOURCES = ("judge", "audit", "report", "label")  # the table's check constraint


class Judgment(NamedTuple):
    """A verdict on a semantic candidate: `verdict` true when the stored answer answers
    the query. `source`: "judge", "audit", "report" or "label"."""

    namespace: str
    embedder: str
    similarity: float
    verdict: bool
    source: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Alias:
    """A new request's key (`cache_key`, `scope_key`, `prompt`) for the row `alias_of` of
    the same namespace, which a judge accepted at `similarity`."""

    namespace: str
    cache_key: bytes
    scope_key: bytes
    prompt: str | None
    alias_of: bytes
    similarity: float


class Judgments:
    """The `llm_cache_judgments` table, and alias rows in `llm_cache`."""

    def __init__(self, db: Connections, *, wrote: Callable[[str], None]) -> None:
        self._db = db
        self._wrote = wrote  # an alias was stored in that namespace

    async def add(self, judgments: Sequence[Judgment]) -> None:
        if judgments:
            columns = zip(*judgments, strict=True)
            await self._db.execute(
                judgment_sql.ADD_JUDGMENTS, *(list(column) for column in columns)
            )

    async def of(
        self, namespace: str, embedder: str, *, floor: float, limit: int
    ) -> list[tuple[float, bool]]:
        """The `limit` judgments of (namespace, embedder) of highest similarity >= floor."""
        rows = await self._db.fetch(judgment_sql.JUDGMENTS_OF, namespace, embedder, floor, limit)
        return [(row["similarity"], row["verdict"]) for row in rows]

    async def scopes(self, namespace: str | None) -> list[tuple[str, str, int]]:
        """(namespace, embedder, judgments) of every judged scope (of one namespace)."""
        rows = await self._db.fetch(judgment_sql.JUDGED_SCOPES, namespace)
        return [(row["namespace"], row["embedder"], row["judgments"]) for row in rows]

    async def put_alias(self, alias: Alias) -> bool:
        """Store `alias`; returns whether it was (not when its row is gone, or the key
        has a row of its own)."""
        alias_id = await self._db.fetchval(
            judgment_sql.PUT_ALIAS,
            alias.namespace,
            alias.cache_key,
            alias.scope_key,
            alias.prompt,
            alias.similarity,
            alias.alias_of,
        )
        if alias_id is None:
            return False
        self._wrote(alias.namespace)
        return True
