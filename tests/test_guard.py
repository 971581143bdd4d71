"""The look-alike guard: pairs that look alike but ask something else are refused (with
their reason), true paraphrases pass; through the cache, a refusal is a counted miss and a
semantic hit says what accepted it."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry, generate_latest

from llm_pgcache import HashingEmbedder, cache_info, cached_openai
from llm_pgcache.integrations.prometheus import CacheCollector
from llm_pgcache.semantic.guard import LookAlikeGuard

from .conftest import connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]
LOOKALIKES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "lookalike_pairs.jsonl"


@pytest.mark.parametrize(
    ("query", "candidate", "reason"),
    [
        ("flights from New York to Boston", "flights from Boston to New York", "order"),
        ("convert 5 miles to kilometers", "convert 5 kilometers to miles", "order"),
        ("A man is cutting a potato", "A potato is cutting a man", "order"),
        ("how do I turn on dark mode", "how do I turn off dark mode", "antonym"),
        ("what is the maximum file size", "what is the minimum file size", "antonym"),
        ("sort in ascending order", "sort in descending order", "antonym"),
        ("is the store open on Monday?", "is the store open on Tuesday?", "entity"),
        ("What is the capital of France?", "What is the capital of Spain?", "entity"),
        ("Translate 'good morning'", "Translate 'good night'", "entity"),
        ("A man is playing a guitar", "There is no man playing a guitar", "negation"),
        ("Why does it work?", "Why doesn't it work?", "negation"),
        ("set a timer for 10 minutes", "set a timer for ten minutes", None),
        ("set a timer for 10 minutes", "set a timer for 15 minutes", "number"),
        ("What is the capital of France?", "what's the capital of france?", None),
        (
            "Explain what a B-tree index is in one sentence.",
            "In one sentence, explain what a B-tree index is.",
            None,
        ),
        ("How tall is Everest?", "What is the height of Mount Everest?", None),
        ("I can't log in", "I cannot log in", None),
    ],
)
def test_the_guard_refuses_look_alikes_and_passes_paraphrases(
    query: str, candidate: str, reason: str | None
) -> None:
    guard = LookAlikeGuard()
    assert guard.check(query, candidate) == reason
    assert guard.check(candidate, query) == reason  # either way round


def test_the_readme_look_alike_set() -> None:
    """Our own set (benchmarks/data/lookalike_pairs.jsonl): every paraphrase passes, and
    at most one look-alike of 30 gets through (currently the euros/dollars swap, which
    no rule sees: no relational word, one phrase moved)."""
    pairs = [json.loads(line) for line in LOOKALIKES.read_text().splitlines()]
    guard = LookAlikeGuard()
    passed = [p for p in pairs if guard.check(p["text_a"], p["text_b"]) is None]
    assert {p["id"] for p in passed if p["label"] == 1} == {
        p["id"] for p in pairs if p["label"] == 1
    }
    assert len([p for p in passed if p["label"] == 0]) <= 1


async def test_a_look_alike_is_a_counted_miss_and_a_hit_says_what_accepted_it(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with connect_cache(
        dsn, namespace=namespace, embedder=HashingEmbedder(1536), similarity_threshold=0.5
    ) as cache:
        await cache.set(make_request("How do I turn on dark mode?"), make_response("Settings."))
        refused = await cache.get(make_request("How do I turn off dark mode?"))
        assert refused is None
        assert cache.counters.refused_by_reason == {"guard:antonym": 1}
        hit = await cache.get(make_request("how do I turn on dark mode"))
        assert hit is not None
        assert (hit.tier, hit.accepted_by) == ("postgres-semantic", "threshold")
        assert hit.matched_prompt == "How do I turn on dark mode?"
        exact = await cache.get(make_request("How do I turn on dark mode?"))
        assert exact is not None
        assert exact.accepted_by == "exact"

        client = cached_openai(openai_client, cache)
        await cache.set(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Name a prime."}]},
            make_response("7"),
        )
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "name a prime"}]
        )
        info = cache_info(reply)
        assert info is not None
        assert (info.tier, info.accepted_by, info.matched_prompt) == (
            "postgres-semantic",
            "threshold",
            "Name a prime.",
        )

        registry = CollectorRegistry()
        registry.register(CacheCollector(cache))
        exposed = generate_latest(registry).decode()
        assert 'llm_pgcache_semantic_refused_total{reason="guard:antonym"} 1.0' in exposed
