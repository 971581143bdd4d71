"""Lookups: the upper tiers, then PostgreSQL (exact, then semantic), promoted upwards."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import asyncpg

from llm_pgcache.cache.state import CacheState
from llm_pgcache.entries import AcceptedBy, CacheHit, TierCopy, load_response, storable_text
from llm_pgcache.errors import BackendError
from llm_pgcache.keys import RequestKeys
from llm_pgcache.postgres.judgments import Alias, Judgment
from llm_pgcache.rounds import Late
from llm_pgcache.semantic.batches import Vector
from llm_pgcache.semantic.judges import JudgeCase
from llm_pgcache.semantic.search import SemanticSearch
from llm_pgcache.tiers.upper import Ticket
from llm_pgcache.validation import check_threshold, check_timeout


class Reads(CacheState):
    """`Cache.get`."""

    async def get(
        self,
        request: Mapping[str, Any],
        *,
        namespace: str | None = None,
        semantic: bool | None = None,
        threshold: float | None = None,
        embed_timeout: float | None = None,
        embedding: object = None,
    ) -> CacheHit | None:
        """The cached response of `request`, or None on a miss.

        Looks up the exact request first; on a miss, when the cache has an embedder and
        `semantic` is on, the nearest stored request of the same scope (same model, system
        prompt, earlier turns and parameters; only the last user turn may differ) whose
        similarity reaches the threshold. The embedding made here is kept for a `set` of
        the same request that follows, so a miss is embedded once.

        With `embedding` (the last user turn's, made by the cache's embedder's model: one
        a retrieval step made already, say), nothing is embedded, and while no semantic
        lookup is in flight the two lookups are one statement: the exact row, else the
        nearest (a semantic hit costs one round trip, not two; an exact hit runs no
        semantic search).

        Args:
            request: the keyword arguments of `chat.completions.create`.
            namespace: overrides the cache's namespace for this call.
            semantic: overrides the cache's `semantic` for this call.
            threshold: overrides the cache's `similarity_threshold` for this call.
            embed_timeout: overrides the cache's `embed_timeout` for this call: seconds
                the semantic lookup waits for its embedding before it is a miss.
            embedding: the embedding of the request's last user turn (a sequence or
                array of the table's dimension); kept for the `set` that follows a miss.

        Raises:
            InvalidRequestError: the request cannot be keyed (no model, non-JSON values...).
            InvalidInputError: a bad threshold, or `semantic=True` or an `embedding`
                without an embedder.
            InvalidEmbeddingError, EmbeddingDimensionError: an unusable `embedding`.
            BackendError: only with `strict=True`; otherwise a backend failure is a miss.
        """
        key = self.rules.exact_key(request)
        ns = self.rules.namespace_of(namespace)
        semantic_search = self._semantic_for(semantic)
        if threshold is not None:
            check_threshold(threshold)
        embed_timeout = check_timeout("embed_timeout", embed_timeout)
        vector = None if embedding is None else self._given_vector(embedding)
        started = time.perf_counter()
        hit, ticket = await self._tiers.get(ns, key) if self._tiers.active else (None, None)
        if hit is None:
            hit = await self._postgres(
                ns,
                key,
                request,
                semantic_search=semantic_search,
                threshold=threshold,
                embed_timeout=embed_timeout,
                ticket=ticket,
                vector=vector,
            )
        if hit is None:
            if semantic_search is not None and vector is not None:
                semantic_search.keep(ns, key, vector)
            self._missed(ns, started)
            return None
        self._metrics.hit(hit, lookup_ms=(time.perf_counter() - started) * 1000)
        self._write_behind.record(hit.namespace, hit.key)
        return hit

    def _missed(self, ns: str, started: float) -> None:
        self._metrics.miss(ns, (time.perf_counter() - started) * 1000)
        self._write_behind.schedule()

    async def _postgres(
        self,
        ns: str,
        key: bytes,
        request: Mapping[str, Any],
        *,
        semantic_search: SemanticSearch | None,
        threshold: float | None,
        embed_timeout: float | None,
        ticket: Ticket | None,
        vector: Vector | None,
    ) -> CacheHit | None:
        """A hit from PostgreSQL, exact then semantic, promoted to the tiers above (with
        the `ticket` their miss gave). Each path fails open on its own: a semantic path
        that fails or is slow never turns exact lookups off, nor the other way round.

        Given its `vector` while the semantic path is idle and healthy, the lookup asks
        once, on the semantic path's connections: the exact row, else the nearest (an
        exact hit runs no semantic search; a semantic hit costs one round trip, not two).
        Busy or failing, it goes the two ways in turn, as any other."""
        health = self._health
        if not health.breaker.allow():
            return None
        keys = None
        if (
            vector is not None
            and semantic_search is not None
            and semantic_search.idle()
            and self._semantic_health.breaker.healthy
        ):
            keys = self.rules.keys(request, key)
        if semantic_search is not None and keys is not None and keys.text.strip():
            record = await self._nearest(
                semantic_search, ns, keys, embed_timeout, vector, exact_grace=self.stale_grace
            )
        else:
            try:
                with health.deadline(self.lookup_timeout, "PostgreSQL lookup"):
                    record = await self._store.get(ns, key, self.stale_grace, self.lookup_timeout)
            except BackendError as exc:
                health.failed(exc)
                return None
            health.ok()
            if record is not None:
                return await self._exact_hit(ns, key, record, ticket)
            if semantic_search is None:
                return None
            if keys is None:
                keys = self.rules.keys(request, key)
            record = await self._nearest(semantic_search, ns, keys, embed_timeout, vector)
        return await self._served(
            record,
            search=semantic_search,
            ns=ns,
            keys=keys,
            request=request,
            threshold=threshold,
            ticket=ticket,
        )

    async def _exact_hit(
        self, ns: str, key: bytes, record: asyncpg.Record, ticket: Ticket | None
    ) -> CacheHit:
        hit = CacheHit.from_record(record, namespace=ns, tier="postgres-exact")
        await self._promote(ns, key, hit, record, ticket)
        return hit

    async def _served(
        self,
        record: asyncpg.Record | None,
        *,
        search: SemanticSearch,
        ns: str,
        keys: RequestKeys,
        request: Mapping[str, Any],
        threshold: float | None,
        ticket: Ticket | None,
    ) -> CacheHit | None:
        """The hit of what the semantic path answered: the exact row (`exact` true: it was
        asked for with it), or the nearest candidate if the decision serves it."""
        if record is None:
            return None
        if record.get("exact"):
            return await self._exact_hit(ns, keys.exact_key, record, ticket)
        hit = await self._decide(
            ns, keys, request, record, embedder=search.embedder.name, threshold=threshold
        )
        if hit is not None:
            search.forget(ns, keys.exact_key)
            await self._promote(ns, keys.exact_key, hit, record, ticket)
        return hit

    async def _promote(
        self, ns: str, key: bytes, hit: CacheHit, record: asyncpg.Record, ticket: Ticket | None
    ) -> None:
        """Copy a hit to the tiers above (a stale entry is served, never promoted)."""
        if ticket is not None and not hit.stale:
            copy = TierCopy(ns, key, hit, record["response"], record["ttl_left"])
            await self._tiers.promote(copy, ticket=ticket)

    async def _decide(
        self,
        ns: str,
        keys: RequestKeys,
        request: Mapping[str, Any],
        record: asyncpg.Record,
        *,
        embedder: str,
        threshold: float | None,
    ) -> CacheHit | None:
        """The one decision on the nearest candidate: similar enough (`threshold`, this
        call's, else the cache's), not a look-alike (the guard needs the stored prompt:
        without one, it passes), then the judge inline, or the serve threshold of a
        false-hit bound (a candidate under it goes to the background judge). A refusal is
        counted by its reason; a hit says what accepted it."""
        similarity = 1.0 - record["distance"]
        candidate: str | None = record["prompt"]
        if similarity < (self.similarity_threshold if threshold is None else threshold):
            self._metrics.refused(ns, "below_threshold")
            return None
        if self.guard is not None and candidate is not None:
            reason = self.guard.check(keys.text, candidate)
            if reason is not None:
                self._metrics.refused(ns, f"guard:{reason}")
                return None
        verdicts = self._verdicts

        def case() -> JudgeCase:
            return JudgeCase(
                query=keys.text,
                candidate=candidate or "",
                response=load_response(record["response"]),
                similarity=similarity,
                request=request,
            )

        accepted_by: AcceptedBy = "threshold"
        if verdicts.judge is not None and self.verify == "inline":
            verdict = await verdicts.verdict(case())
            self._metrics.judged("inline", verdict)
            if verdict is not True:
                self._metrics.refused(ns, "judge" if verdict is False else str(verdict))
                return None
            verdicts.record(Judgment(ns, embedder, similarity, True, "judge"))
            accepted_by = "judge"
        elif threshold is None and self._thresholds is not None:
            serving = self._thresholds.current(ns, embedder)
            if serving is None or not serving.serves(similarity):
                if verdicts.judge is not None:
                    alias = Alias(
                        namespace=ns,
                        cache_key=keys.exact_key,
                        scope_key=keys.scope_key,
                        prompt=storable_text(keys.text) if self.rules.store_prompts else None,
                        alias_of=record["cache_key"],
                        similarity=similarity,
                    )
                    verdicts.later(case(), embedder, alias)
                self._metrics.refused(ns, "below_serve_threshold")
                return None
            verdicts.maybe_audit(case, ns, embedder)
        else:
            verdicts.maybe_audit(case, ns, embedder)
        return CacheHit.from_record(
            record,
            namespace=ns,
            tier="postgres-semantic",
            similarity=similarity,
            accepted_by=accepted_by,
        )

    async def _nearest(
        self,
        search: SemanticSearch,
        namespace: str,
        keys: RequestKeys,
        embed_timeout: float | None,
        vector: Vector | None,
        *,
        exact_grace: float | None = None,
    ) -> asyncpg.Record | None:
        """The nearest live row of the request's scope, whatever its similarity; `vector`:
        the caller's embedding, else one made (or kept) for it. With `exact_grace`, the
        exact row first (`SemanticSearch.nearest`)."""
        if not keys.text.strip():
            return None
        if vector is None:
            vector = await self._embedding(search, namespace, keys, embed_timeout, keep=True)
        health = self._semantic_health
        if vector is None or not health.breaker.allow():
            return None
        try:
            with health.deadline(search.options.timeout, "PostgreSQL semantic lookup"):
                record = await search.nearest(namespace, keys, vector, exact_grace=exact_grace)
        except Late:  # no failure: the breaker is not told
            self._metrics.late()
            return None
        except BackendError as exc:
            health.failed(exc)
            return None
        health.ok()
        return record
