"""Writes: stores, bulk loads and invalidations. Each goes to PostgreSQL with its notice
to other processes in the same statement, then drops the copies above it (`tiers.upper`)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from llm_pgcache.cache.state import CacheState
from llm_pgcache.cache.warming import WarmItem, batches
from llm_pgcache.entries import CacheHit, StoredEntry
from llm_pgcache.errors import BackendError, InvalidInputError
from llm_pgcache.invalidation import Change
from llm_pgcache.postgres.judgments import JUDGMENT_SOURCES, Judgment
from llm_pgcache.semantic.vectors import check_vectors
from llm_pgcache.validation import TTL, check_model, check_tags, check_timeout


class Writes(CacheState):
    """`Cache.set`, `load`, `invalidate`, `report_wrong_hit` and `report_good_hit`."""

    async def set(
        self,
        request: Mapping[str, Any],
        response: object,
        *,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
        semantic: bool | None = None,
        upstream_ms: int | None = None,
        embed_timeout: float | None = None,
        embedding: object = None,
    ) -> None:
        """Store `response` as the answer to `request`, replacing any previous one.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            response: a `ChatCompletion` or its JSON dict.
            ttl: seconds (or timedelta) until expiry; default from `model_ttls`, then
                `default_ttl`.
            tags: labels for `invalidate(tag=...)`.
            namespace: overrides the cache's namespace for this call.
            semantic: whether to store an embedding (default: the cache's `semantic`);
                the one made by a missed `get` of the same request is reused.
            upstream_ms: how long the LLM took to produce the response; hits report it
                as the latency they saved.
            embed_timeout: overrides the cache's `embed_timeout` for this call: seconds
                to wait for the embedding; without it in time the entry is stored for
                exact lookups only.
            embedding: the embedding of the request's last user turn, made by the
                cache's embedder's model; stored as that embedder's, nothing embedded
                (unless `semantic` is off for the call: then no embedding is stored).

        Raises:
            InvalidRequestError, InvalidResponseError, InvalidTTLError, InvalidInputError:
                bad input (an `embedding` without an embedder); nothing is written.
            InvalidEmbeddingError, EmbeddingDimensionError: the embedder returned, or the
                caller gave, an unusable vector; nothing is written.
            BackendError: only with `strict=True`; otherwise the failure is logged.
        """
        semantic_search = self._semantic_for(semantic)
        embed_timeout = check_timeout("embed_timeout", embed_timeout)
        vector = None if embedding is None else self._given_vector(embedding)
        keys, entry = self.rules.entry(
            request, response, ttl=ttl, tags=tags, namespace=namespace, upstream_ms=upstream_ms
        )
        ns = entry.namespace
        if semantic_search is not None and keys.text.strip():
            if vector is None:
                # Without one in time (the embedder down or slow): exact lookups only.
                vector = await self._embedding(semantic_search, ns, keys, embed_timeout)
            else:
                semantic_search.forget(ns, keys.exact_key)
            if vector is not None:
                entry = replace(entry, embedding=vector, embedder=semantic_search.embedder.name)
        if not self._health.breaker.allow():
            return
        try:
            change = Change(ns, key=keys.exact_key)
            with self._health.deadline(self.write_timeout, "PostgreSQL write"):
                await self._store.put(entry, change.notice(self._origin), self.write_timeout)
            await self._tiers.drop(change)
        except BackendError as exc:
            self._health.failed(exc)
            return
        self._health.ok()

    async def load(
        self,
        items: Iterable[WarmItem],
        *,
        batch_size: int = 2000,
        embed: bool = False,
        progress: Callable[[int], None] | None = None,
    ) -> int:
        """Bulk-load request/response pairs (COPY, in batches); returns the rows written.

        Every item is checked as by `set`; a bad one raises before its batch is written.
        An item's own `embedding` is stored as the cache's embedder's; with `embed`, the
        embedder embeds the others, one call per batch. Each batch is written (COPY into a
        staging table, one upsert) by a task started before the next batch is built;
        building holds the event loop, so the two overlap little (docs/benchmarks.md).

        Raises:
            InvalidInputError, InvalidEmbeddingError, EmbeddingDimensionError: a bad item.
            BackendError: always (a bulk load does not fail open).
        """
        if embed and self._semantic is None:
            raise InvalidInputError("embedding needs a cache opened with an embedder")
        written = 0
        writing: asyncio.Task[int] | None = None
        try:
            for batch in batches(items, batch_size):
                entries = await self._entries(batch, embed=embed)
                if writing is not None:
                    written += await writing
                    if progress is not None:
                        progress(written)
                writing = asyncio.get_running_loop().create_task(self._write_batch(entries))
            if writing is not None:
                written += await writing
                writing = None
                if progress is not None:
                    progress(written)
        finally:
            if writing is not None:  # a bad batch after it: the one in flight still lands
                with contextlib.suppress(Exception):
                    await writing
        return written

    async def _entries(self, batch: list[WarmItem], *, embed: bool) -> list[StoredEntry]:
        """The rows of `batch`: checked, keyed, with their embeddings."""
        built = [
            self.rules.entry(
                item.request,
                item.response,
                ttl=item.ttl,
                tags=item.tags,
                namespace=item.namespace,
                upstream_ms=None,
            )
            for item in batch
        ]
        given = [i for i, item in enumerate(batch) if item.embedding is not None]
        entries = [entry for _, entry in built]
        if given:
            if self._semantic is None:
                raise InvalidInputError("items with an embedding need a cache with an embedder")
            name = self._semantic.embedder.name
            vectors = check_vectors(
                [batch[i].embedding for i in given], count=len(given), dim=self._store.embedding_dim
            )
            for i, vector in zip(given, vectors, strict=True):
                entries[i] = replace(entries[i], embedding=vector, embedder=name)
        if self._semantic is not None and embed:
            missing = [i for i, item in enumerate(batch) if item.embedding is None]
            embedded = await self._semantic.with_embeddings([built[i] for i in missing])
            for i, entry in zip(missing, embedded, strict=True):
                entries[i] = entry
        return entries

    async def _write_batch(self, entries: list[StoredEntry]) -> int:
        changes = [Change(ns) for ns in sorted({entry.namespace for entry in entries})]
        written = await self._store.bulk_put(
            entries, [change.notice(self._origin) for change in changes]
        )
        for change in changes:  # rows were replaced: no copy is known good
            await self._tiers.drop(change)
        return written

    async def invalidate(
        self,
        *,
        key: Mapping[str, Any] | bytes | None = None,
        tag: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
    ) -> int:
        """Delete entries; returns how many.

        Name at most one of `key` (a request, or its 32-byte `exact_key`), `tag` or
        `model`, within the cache's namespace or `namespace`. With none of them, the whole
        `namespace` is cleared, which must then be named explicitly.

        Raises:
            InvalidInputError: more than one filter, or nothing named.
            BackendError: the database failed (invalidation never fails open).
        """
        filters = [f for f in (key, tag, model) if f is not None]
        if len(filters) > 1:
            raise InvalidInputError("invalidate takes one of key, tag or model at a time")
        if not filters and namespace is None:
            raise InvalidInputError(
                "name what to invalidate: key=, tag=, model=, or namespace= for a whole namespace"
            )
        ns = self.rules.namespace_of(namespace)
        if tag is not None:
            check_tags((tag,))
        if model is not None:
            check_model(model)
        cache_key = None
        if isinstance(key, bytes):
            if len(key) != 32:
                raise InvalidInputError("a key given as bytes must be a 32-byte sha256 digest")
            cache_key = key
        elif key is not None:
            cache_key = self.rules.exact_key(key)
        change = Change(ns, key=cache_key, tag=tag, model=model)
        return await self._delete(change)

    async def report_wrong_hit(self, hit: CacheHit) -> bool:
        """Remove the entry that answered `hit` (and its aliases), so a known-bad answer
        is not served again; a semantic hit's report is also a judgment against its
        similarity, evidence for `max_false_hit_rate`.

        Use it when a semantic hit answered a question it should not have. Returns whether
        the entry was still there.

        Raises:
            BackendError: the database failed (a report never fails open).
        """
        await self._report(hit, verdict=False)
        return await self._delete(Change(hit.namespace, key=hit.key)) > 0

    async def report_good_hit(self, hit: CacheHit) -> bool:
        """Record that semantic `hit` answered its question: a judgment for its
        similarity, evidence for `max_false_hit_rate`. Returns whether it was recorded
        (exact hits carry no evidence).

        Raises:
            BackendError: the database failed.
        """
        return await self._report(hit, verdict=True)

    async def record_judgments(
        self,
        judgments: Iterable[tuple[float, bool]],
        *,
        namespace: str | None = None,
        embedder: str | None = None,
        source: str = "label",
    ) -> int:
        """Record verdicts (similarity, whether the candidate's answer answered the
        query) as evidence for `max_false_hit_rate` in `namespace`, for `embedder` (by
        name; default: the cache's). Returns how many. What `llm-pgcache tune-threshold
        --load` does with labelled pairs.

        Raises:
            InvalidInputError: no embedder named and the cache has none, a similarity
                outside [-1, 1], a verdict that is not a bool, or an unknown source.
            BackendError: the database failed.
        """
        ns = self.rules.namespace_of(namespace)
        if embedder is None:
            if self._semantic is None:
                raise InvalidInputError("name the embedder the judgments are for")
            embedder = self._semantic.embedder.name
        if source not in JUDGMENT_SOURCES:
            raise InvalidInputError(f"source must be one of {', '.join(JUDGMENT_SOURCES)}")
        rows = []
        for similarity, verdict in judgments:
            if (
                isinstance(similarity, bool)
                or not isinstance(similarity, int | float)
                or not -1.0 <= similarity <= 1.0
            ):
                raise InvalidInputError(f"a similarity must be in [-1, 1], got {similarity!r}")
            if not isinstance(verdict, bool):
                raise InvalidInputError(f"a verdict must be a bool, got {verdict!r}")
            rows.append(Judgment(ns, embedder, float(similarity), verdict, source))
        await self._store.judgments.add(rows)
        return len(rows)

    async def _report(self, hit: CacheHit, *, verdict: bool) -> bool:
        if hit.accepted_by == "exact" or self._semantic is None:
            return False
        judgment = Judgment(
            hit.namespace, self._semantic.embedder.name, hit.similarity, verdict, "report"
        )
        await self._store.judgments.add([judgment])
        return True

    async def _delete(self, change: Change) -> int:
        try:
            return await self._store.delete(change, change.notice(self._origin))
        finally:  # also when the delete failed: no copy is known good
            await self._tiers.drop(change)
