"""Counters and their Prometheus exposition."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from llm_pgcache.cli import cli
from llm_pgcache.integrations.prometheus import CacheCollector
from llm_pgcache.tiers.memory import MemoryTier

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]


async def test_counters_per_tier_and_prometheus(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace, memory=MemoryTier()) as cache:
        await cache.get(make_request())
        await cache.set(make_request(), make_response(prompt_tokens=100, completion_tokens=50))
        for _ in range(3):
            await cache.get(make_request())
        counters = cache.counters
        assert counters.hits_by_tier == {"postgres-exact": 1, "memory": 2}
        assert counters.misses == 1
        assert counters.hit_rate == 0.75
        assert counters.tokens_saved == 3 * 150
        memory_ms, postgres_ms = (
            counters.avg_hit_ms("memory"),
            counters.avg_hit_ms("postgres-exact"),
        )
        assert memory_ms is not None
        assert postgres_ms is not None
        assert counters.avg_hit_ms("redis") is None

        registry = CollectorRegistry()
        registry.register(CacheCollector(cache))
        text = generate_latest(registry).decode()
        table = (await cache.stats()).table
    assert 'llm_pgcache_hits_total{tier="memory"} 2.0' in text
    assert "llm_pgcache_misses_total 1.0" in text
    assert 'llm_pgcache_tokens_saved_total{kind="prompt",model="gpt-4o-mini"} 300.0' in text
    assert 'llm_pgcache_cost_saved_usd_total{model="gpt-4o-mini"}' in text
    assert (table.entries, table.hits) == (1, 0)  # hit counts are written on close


async def test_table_stats_count_recorded_hits(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace) as cache:
        await cache.set(make_request(), make_response())
        for _ in range(4):
            await cache.get(make_request())
    async with connect_cache(dsn, namespace=namespace) as cache:
        table = (await cache.stats()).table
    assert (table.entries, table.hits, table.embedded) == (1, 4, 0)


async def test_table_stats_report_what_recorded_hits_saved(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace) as cache:
        await cache.set(make_request(), make_response(prompt_tokens=100, completion_tokens=10))
        for _ in range(3):
            await cache.get(make_request())
    async with connect_cache(dsn, namespace=namespace) as cache:
        table = (await cache.stats()).table
    assert table.saved_by_model == (("gpt-4o-mini", 3, 300, 30),)


async def test_stats_cli_reports_lookups_of_every_process(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    for _ in range(2):  # two processes of an app, each with memory in front
        async with connect_cache(dsn, namespace=namespace, memory=MemoryTier()) as cache:
            await cache.get(make_request("never stored"))
            await cache.set(make_request(), make_response())
            await cache.get(make_request())
            await cache.get(make_request())
    assert await cli(["stats", "--dsn", dsn, "--namespace", namespace, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    lookups = {tier: n for tier, n, _ in stats["lookups_by_tier"]}
    assert lookups == {"miss": 2, "postgres-exact": 2, "memory": 2}
    assert await cli(["stats", "--dsn", dsn, "--namespace", namespace]) == 0
    text = capsys.readouterr().out
    assert "4 hits, 2 misses, hit rate 66.7%" in text
    assert "memory:" in text
