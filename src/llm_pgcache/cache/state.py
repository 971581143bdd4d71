"""What the parts of a `Cache` share: the state its use cases work on.

`Cache` is put together from `reads.Reads` (lookups), `writes.Writes` (stores, loads,
invalidations) and `maintenance.Maintenance` (index, purge, measures); `Cache.__init__`
sets every attribute declared here.
"""

from __future__ import annotations

import asyncio

from llm_pgcache.cache.health import BackendHealth
from llm_pgcache.cache.metrics import Metrics
from llm_pgcache.cache.rules import EntryRules
from llm_pgcache.cache.write_behind import WriteBehind
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.postgres.store import PostgresStore
from llm_pgcache.semantic.search import SemanticSearch
from llm_pgcache.tiers.upper import UpperTiers


class CacheParts:
    """The state of a `Cache`, declared once for the modules of its use cases."""

    rules: EntryRules
    semantic: bool
    similarity_threshold: float
    lookup_timeout: float | None
    write_timeout: float | None
    stale_grace: float
    _store: PostgresStore
    _semantic: SemanticSearch | None
    _metrics: Metrics
    _health: BackendHealth
    _write_behind: WriteBehind
    _tiers: UpperTiers
    _origin: str  # tells our own invalidation notices from others
    _purging: asyncio.Task[None] | None

    @property
    def namespace(self) -> str:
        """The namespace of calls that name none."""
        return self.rules.namespace

    @property
    def version(self) -> str:
        """The cache version in every key."""
        return self.rules.version

    def _semantic_for(self, semantic: bool | None) -> SemanticSearch | None:
        """The semantic search to use for a call, given its `semantic` argument."""
        if semantic is None:
            return self._semantic if self.semantic else None
        if semantic and self._semantic is None:
            raise InvalidInputError("semantic=True needs a cache opened with an embedder")
        return self._semantic if semantic else None
