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
    ) -> CacheHit | None:
        """The cached response of `request`, or None on a miss.

        Looks up the exact request first; on a miss, when the cache has an embedder and
        `semantic` is on, the nearest stored request of the same scope (same model, system
        prompt, earlier turns and parameters; only the last user turn may differ) whose
        similarity reaches the threshold. The embedding made here is kept for a `set` of
        the same request that follows, so a miss is embedded once.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            namespace: overrides the cache's namespace for this call.
            semantic: overrides the cache's `semantic` for this call.
            threshold: overrides the cache's `similarity_threshold` for this call.
            embed_timeout: overrides the cache's `embed_timeout` for this call: seconds
                the semantic lookup waits for its embedding before it is a miss.

        Raises:
            InvalidRequestError: the request cannot be keyed (no model, non-JSON values...).
            InvalidInputError: a bad threshold, or `semantic=True` without an embedder.
            BackendError: only with `strict=True`; otherwise a backend failure is a miss.
        """
        key = self.rules.exact_key(request)
        ns = self.rules.namespace_of(namespace)
        semantic_search = self._semantic_for(semantic)
        if threshold is not None:
            check_threshold(threshold)
        embed_timeout = check_timeout("embed_timeout", embed_timeout)
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
            )
        if hit is None:
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
    ) -> CacheHit | None:
        """A hit from PostgreSQL, exact then semantic, promoted to the tiers above (with
        the `ticket` their miss gave). Each path fails open on its own: a semantic path
        that fails or is slow never turns exact lookups off, nor the other way round."""
        health = self._health
        if not health.breaker.allow():
            return None
        try:
            with health.deadline(self.lookup_timeout, "PostgreSQL lookup"):
                record = await self._store.get(ns, key, self.stale_grace, self.lookup_timeout)
        except BackendError as exc:
            health.failed(exc)
            return None
        health.ok()
        if record is not None:
            hit = CacheHit.from_record(record, namespace=ns, tier="postgres-exact")
        elif semantic_search is not None:
            keys = self.rules.keys(request, key)
            record = await self._nearest(semantic_search, ns, keys, embed_timeout)
            if record is None:
                return None
            decided = await self._decide(
                ns,
                keys,
                request,
                record,
                embedder=semantic_search.embedder.name,
                threshold=threshold,
            )
            if decided is None:
                return None
            semantic_search.served(ns, key)
            hit = decided
        else:
            return None
        if ticket is not None and not hit.stale:  # a stale entry is served, never promoted
            copy = TierCopy(ns, key, hit, record["response"], record["ttl_left"])
            await self._tiers.promote(copy, ticket=ticket)
        return hit

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
    ) -> asyncpg.Record | None:
        """The nearest live row of the request's scope, whatever its similarity."""
        if not keys.text.strip():
            return None
        vector = await self._embedding(search, namespace, keys, embed_timeout, keep=True)
        health = self._semantic_health
        if vector is None or not health.breaker.allow():
            return None
        try:
            with health.deadline(search.options.timeout, "PostgreSQL semantic lookup"):
                record = await search.nearest(namespace, keys, vector)
        except Late:  # no failure: the breaker is not told
            self._metrics.late()
            return None
        except BackendError as exc:
            health.failed(exc)
            return None
        health.ok()
        return record
