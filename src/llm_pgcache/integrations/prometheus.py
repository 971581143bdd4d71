"""Prometheus metrics of a `Cache` (the `prometheus` extra).

    from prometheus_client import REGISTRY
    REGISTRY.register(CacheCollector(cache))

Counters are read from `cache.counters` at each scrape; nothing is recorded twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from llm_pgcache.errors import MissingExtraError

if TYPE_CHECKING:
    from llm_pgcache.cache.facade import Cache

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise MissingExtraError(package="prometheus-client", extra="prometheus") from exc


class CacheCollector:
    """Exposes hits per tier, misses, backend errors, savings and lookup latency."""

    def __init__(self, cache: Cache, *, namespace: str = "llm_pgcache") -> None:
        self._cache = cache
        self._prefix = namespace

    def collect(self) -> Iterator[Any]:
        counters = self._cache.counters
        hits = CounterMetricFamily(f"{self._prefix}_hits", "Cache hits", labels=["tier"])
        latency = GaugeMetricFamily(
            f"{self._prefix}_hit_latency_avg_ms", "Average lookup time of hits", labels=["tier"]
        )
        for tier, count in sorted(counters.hits_by_tier.items()):
            hits.add_metric([tier], count)
            latency.add_metric([tier], counters.avg_hit_ms(tier) or 0.0)
        yield hits
        yield latency
        yield CounterMetricFamily(f"{self._prefix}_misses", "Cache misses", value=counters.misses)
        refused = CounterMetricFamily(
            f"{self._prefix}_semantic_refused",
            "Semantic candidates not served, by reason",
            labels=["reason"],
        )
        for reason, count in sorted(counters.refused_by_reason.items()):
            refused.add_metric([reason], count)
        yield refused
        judgments = CounterMetricFamily(
            f"{self._prefix}_judgments",
            "Judge verdicts, by when they were asked (inline, background, audit) and outcome",
            labels=["when", "outcome"],
        )
        for name, count in sorted(counters.judgments.items()):
            judgments.add_metric(name.split(":", 1), count)
        yield judgments
        yield CounterMetricFamily(
            f"{self._prefix}_backend_errors",
            "Backend failures served as misses",
            value=counters.backend_errors,
        )
        yield CounterMetricFamily(
            f"{self._prefix}_semantic_late",
            "Semantic lookups served as misses before their budget ran out: their answer "
            "would have come after it",
            value=counters.semantic_late,
        )
        tokens = CounterMetricFamily(
            f"{self._prefix}_tokens_saved",
            "Upstream tokens saved by hits",
            labels=["model", "kind"],
        )
        cost = CounterMetricFamily(
            f"{self._prefix}_cost_saved_usd", "USD saved by hits (known prices)", labels=["model"]
        )
        for model, saved in sorted(counters.by_model.items()):
            tokens.add_metric([model, "prompt"], saved.prompt_tokens)
            tokens.add_metric([model, "completion"], saved.completion_tokens)
            cost.add_metric([model], saved.cost_saved or 0.0)
        yield tokens
        yield cost
