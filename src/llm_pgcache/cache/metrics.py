"""In-process counters of a `Cache`: hits per tier, misses, and what the hits saved."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from llm_pgcache.entries import CacheHit
from llm_pgcache.postgres.stats import TableStats
from llm_pgcache.pricing import Price, cost
from llm_pgcache.semantic.bound import ServeThreshold


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelSavings:
    """What hits of one model saved: upstream tokens, money (None: unknown price) and time."""

    hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_saved: float | None = None  # USD, from the cache's price table
    latency_saved_ms: float = 0.0  # upstream time of the entries served, minus lookup time


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """In-process counters of one `Cache` since it was opened."""

    hits_by_tier: dict[str, int]
    misses: int
    backend_errors: int
    # semantic lookups whose answer would have come after their budget
    # (`SearchOptions.timeout`): misses then, not when the budget ran out
    semantic_late: int = 0
    by_model: dict[str, ModelSavings] = field(default_factory=dict)
    hit_ms_by_tier: dict[str, float] = field(default_factory=dict)  # total lookup time
    # semantic candidates not served, by reason: "below_threshold", "guard:<reason>",
    # "judge", "judge_timeout", "judge_error" (inline), "below_serve_threshold" (under a
    # false-hit bound; with a background judge, the candidate is judged later)
    refused_by_reason: dict[str, int] = field(default_factory=dict)
    # verdicts by when they were asked and what came of them: "inline:accepted",
    # "background:refused", "audit:judge_timeout", "background:dropped" (too many pending)
    judgments: dict[str, int] = field(default_factory=dict)

    def avg_hit_ms(self, tier: str) -> float | None:
        """Average lookup time of the hits of `tier`, in milliseconds."""
        hits = self.hits_by_tier.get(tier, 0)
        return self.hit_ms_by_tier.get(tier, 0.0) / hits if hits else None

    @property
    def hits(self) -> int:
        return sum(self.hits_by_tier.values())

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0

    @property
    def tokens_saved(self) -> int:
        return sum(s.prompt_tokens + s.completion_tokens for s in self.by_model.values())

    @property
    def cost_saved(self) -> float:
        """USD saved by the hits whose model has a known price."""
        return sum(s.cost_saved or 0.0 for s in self.by_model.values())


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """`Counters` of this process, `TableStats` of the database, and the serve
    threshold of each judged (namespace, embedder)."""

    counters: Counters
    table: TableStats
    serve_thresholds: tuple[tuple[str, str, ServeThreshold], ...] = ()


REFUSED = "refused:"  # the shared counters' tier of refused semantic candidates


class Metrics:
    """Records lookups; `snapshot()` returns them as `Counters`. Cheap per hit: plain
    numbers are added up, and the dataclasses are built only for a snapshot."""

    def __init__(self, prices: Mapping[str, Price]) -> None:
        self.prices = prices
        self._hits: dict[str, int] = {}
        self._hit_ms: dict[str, float] = {}
        self._refused: dict[str, int] = {}
        self._judgments: dict[str, int] = {}
        self._misses = 0
        self._backend_errors = 0
        self._semantic_late = 0
        # model -> [hits, prompt tokens, completion tokens, milliseconds saved]
        self._by_model: dict[str, list[float]] = {}
        # (namespace, tier or "miss") -> [lookups, milliseconds], not yet written
        self._unwritten: dict[tuple[str, str], list[float]] = {}

    def hit(self, hit: CacheHit, lookup_ms: float) -> None:
        tier = hit.tier
        self._count(hit.namespace, tier, lookup_ms)
        self._hits[tier] = self._hits.get(tier, 0) + 1
        self._hit_ms[tier] = self._hit_ms.get(tier, 0.0) + lookup_ms
        sums = self._by_model.get(hit.model)
        if sums is None:
            sums = self._by_model[hit.model] = [0, 0, 0, 0.0]
        sums[0] += 1
        sums[1] += hit.prompt_tokens or 0
        sums[2] += hit.completion_tokens or 0
        if hit.upstream_ms is not None and hit.upstream_ms > lookup_ms:
            sums[3] += hit.upstream_ms - lookup_ms

    def miss(self, namespace: str, lookup_ms: float) -> None:
        self._misses += 1
        self._count(namespace, "miss", lookup_ms)

    def _count(self, namespace: str, tier: str, lookup_ms: float) -> None:
        sums = self._unwritten.get((namespace, tier))
        if sums is None:
            sums = self._unwritten[(namespace, tier)] = [0, 0.0]
        sums[0] += 1
        sums[1] += lookup_ms

    def take_unwritten(self) -> list[tuple[str, str, int, float]]:
        """The lookups counted since the last call, for the shared counters."""
        unwritten, self._unwritten = self._unwritten, {}
        return [(ns, tier, int(n), ms) for (ns, tier), (n, ms) in unwritten.items()]

    def backend_error(self) -> None:
        self._backend_errors += 1

    def late(self) -> None:
        self._semantic_late += 1

    def refused(self, namespace: str, reason: str) -> None:
        """A semantic candidate was not served, for `reason` (also in the shared counters,
        as the tier "refused:<reason>")."""
        self._refused[reason] = self._refused.get(reason, 0) + 1
        self._count(namespace, f"{REFUSED}{reason}", 0.0)

    def judged(self, when: str, verdict: bool | str) -> None:
        """A judge's verdict (True, False) or why there was none, asked `when`."""
        outcome = verdict if isinstance(verdict, str) else ("accepted" if verdict else "refused")
        name = f"{when}:{outcome}"
        self._judgments[name] = self._judgments.get(name, 0) + 1

    def snapshot(self) -> Counters:
        by_model = {}
        for model, (hits, prompt, completion, saved_ms) in self._by_model.items():
            by_model[model] = ModelSavings(
                hits=int(hits),
                prompt_tokens=int(prompt),
                completion_tokens=int(completion),
                cost_saved=cost(model, int(prompt), int(completion), self.prices),
                latency_saved_ms=saved_ms,
            )
        return Counters(
            hits_by_tier=dict(self._hits),
            misses=self._misses,
            backend_errors=self._backend_errors,
            semantic_late=self._semantic_late,
            by_model=by_model,
            hit_ms_by_tier=dict(self._hit_ms),
            refused_by_reason=dict(self._refused),
            judgments=dict(self._judgments),
        )
