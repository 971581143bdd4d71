"""The false-hit bound: the serve threshold is the lowest similarity whose judged
candidates keep the 95 % upper bound of the false-hit rate within the bound; it comes
from judgments in PostgreSQL (feedback, audits, labelled pairs), is the same in every
process, and one namespace's evidence never loosens another's."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from openai import AsyncOpenAI

from llm_pgcache import HashingEmbedder, LLMJudge
from llm_pgcache.cli import cli
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.semantic.bound import serve_threshold, upper_bound

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]
STORED = "What is the capital of France?"
LOOKUP = "capital of France what is it"  # HashingEmbedder: similarity about 0.8


def test_the_upper_bound_is_wilsons_one_sided_95() -> None:
    # With no false hit, the bound is z^2 / (n + z^2): 133 clean verdicts reach 2 %.
    assert upper_bound(0, 133) <= 0.02 < upper_bound(0, 132)
    assert upper_bound(0, 0) == 1.0
    rng = np.random.default_rng(7)
    for _ in range(200):
        judged = int(rng.integers(1, 5000))
        false = int(rng.integers(0, judged + 1))
        bound = upper_bound(false, judged)
        assert false / judged <= bound <= 1.0
        assert upper_bound(false, judged * 4) <= bound or false == 0  # more evidence: tighter
    # Coverage: with a true rate of 2 %, the bound is below it in about 5 % of samples.
    samples = rng.binomial(400, 0.02, size=4000)
    below = np.mean([upper_bound(int(k), 400) < 0.02 for k in samples])
    assert 0.02 < below < 0.08


def test_the_serve_threshold_is_the_lowest_similarity_the_evidence_allows() -> None:
    assert serve_threshold([], bound=0.02, floor=0.5).threshold is None
    good = [(0.95 + i / 10_000, True) for i in range(200)]
    at = serve_threshold(good, bound=0.02, floor=0.5)
    assert at.threshold == pytest.approx(0.95)
    assert (at.judged, at.false, at.serves(0.96), at.serves(0.94)) == (200, 0, True, False)
    # Wrong answers below 0.93 keep the threshold above them; right ones between help.
    mixed = [*good, *((0.93 + i / 10_000, True) for i in range(100))]
    mixed += [(0.90 + i / 1000, False) for i in range(20)]
    at = serve_threshold(mixed, bound=0.02, floor=0.5)
    assert at.threshold is not None
    assert 0.90 <= at.threshold <= 0.93
    assert at.upper <= 0.02
    served = [verdict for similarity, verdict in mixed if similarity >= at.threshold]
    assert served.count(False) / len(served) <= 0.02
    # Too little evidence: nothing on similarity alone.
    assert serve_threshold(good[:100], bound=0.02, floor=0.5).threshold is None
    # Never below the floor.
    assert serve_threshold(good, bound=0.02, floor=0.97).threshold is None
    # A threshold takes every candidate of its similarity, wrong ones too.
    tied = [*((0.99, True) for _ in range(300)), *((0.95, True) for _ in range(50))]
    tied += [(0.95, False) for _ in range(20)]
    assert serve_threshold(tied, bound=0.02, floor=0.5).threshold == 0.99


async def test_the_bound_serves_only_where_the_namespaces_own_evidence_allows(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    other = f"{namespace}-other"
    embedder = HashingEmbedder(1536)
    async with (
        connect_cache(
            dsn,
            namespace=namespace,
            embedder=embedder,
            similarity_threshold=0.5,
            max_false_hit_rate=0.02,
        ) as cache,
        connect_cache(
            dsn,
            namespace=namespace,
            embedder=embedder,
            similarity_threshold=0.5,
            max_false_hit_rate=0.02,
        ) as peer,
    ):
        for ns in (namespace, other):
            await cache.set(make_request(STORED), make_response("Paris."), namespace=ns)
        assert await cache.get(make_request(LOOKUP)) is None  # no evidence yet
        assert cache.counters.refused_by_reason == {"below_serve_threshold": 1}

        clean = [(0.6 + i / 1000, True) for i in range(300)]  # 0.6 to 0.9, all right
        assert await cache.record_judgments(clean) == 300
        wrong = [(0.6 + i / 100, False) for i in range(30)]  # the other namespace's: wrong
        await cache.record_judgments(wrong, namespace=other)
        at = await cache.refresh_serve_threshold()
        assert at.threshold is not None
        assert at.threshold < 0.7

        hit = await cache.get(make_request(LOOKUP))
        assert hit is not None
        assert (hit.accepted_by, hit.tier) == ("threshold", "postgres-semantic")
        assert await cache.get(make_request(LOOKUP), namespace=other) is None
        assert (await cache.refresh_serve_threshold(namespace=other)).threshold is None
        assert await cache.get(make_request(LOOKUP), namespace=other) is None

        # Another process computes the same threshold from the same rows.
        assert await peer.refresh_serve_threshold() == at
        assert await peer.get(make_request(LOOKUP)) is not None


async def test_reports_are_judgments_and_audits_add_more(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=HashingEmbedder(1536),
        similarity_threshold=0.5,
        judge=LLMJudge(openai_client),
        verify="background",
        max_false_hit_rate=0.05,
        audit_rate=1.0,
    ) as cache:
        await cache.set(make_request(STORED), make_response("Paris."))
        await cache.record_judgments([(0.6 + i / 1000, True) for i in range(100)])
        await cache.refresh_serve_threshold()
        hit = await cache.get(make_request(LOOKUP))
        assert hit is not None
        assert hit.accepted_by == "threshold"
        await cache.drain()  # the audit: the test judge says no (other words)
        assert cache.counters.judgments == {"audit:refused": 1}
        assert await cache.report_good_hit(hit)
        exact = await cache.get(make_request(STORED))
        assert exact is not None
        assert not await cache.report_good_hit(exact)  # no similarity to learn from
        assert await cache.report_wrong_hit(hit)
    rows = await db.fetch(
        "SELECT source, verdict, similarity FROM llm_cache_judgments "
        "WHERE namespace = $1 AND source <> 'label' ORDER BY id",
        namespace,
    )
    assert [(r["source"], r["verdict"]) for r in rows] == [
        ("audit", False),
        ("report", True),
        ("report", False),
    ]
    assert all(math.isclose(r["similarity"], hit.similarity, rel_tol=1e-6) for r in rows)


async def test_bad_judgments_are_refused_and_nothing_is_recorded(
    dsn: str, namespace: str, db: asyncpg.Connection
) -> None:
    async with connect_cache(dsn, namespace=namespace) as cache:
        with pytest.raises(InvalidInputError, match="embedder"):
            await cache.record_judgments([(0.9, True)])
        for bad in ([(1.5, True)], [(0.9, 1)], [(float("nan"), True)], [("0.9", True)]):
            with pytest.raises(InvalidInputError):
                await cache.record_judgments(bad, embedder="e")  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError, match="source"):
            await cache.record_judgments([(0.9, True)], embedder="e", source="gut feeling")
    assert (
        await db.fetchval(
            "SELECT count(*) FROM llm_cache_judgments WHERE namespace = $1", namespace
        )
        == 0
    )


async def test_tune_threshold_loads_labelled_pairs_and_stats_shows_the_threshold(
    dsn: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    make_request: Factory,
    make_response: Factory,
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PGCACHE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    pairs = tmp_path / "pairs.jsonl"
    lines = [
        {"a": f"the {n} blue whale swims", "b": f"the {n} blue whale swims far", "match": True}
        for n in range(150)
    ]
    lines += [{"a": f"red fox {n}", "b": f"green owl {n}", "match": False} for n in range(20)]
    pairs.write_text("".join(json.dumps(line) + "\n" for line in lines))
    args = ["tune-threshold", str(pairs), "--dsn", dsn, "--embedder", "hashing"]
    assert await cli([*args, "--load", "--namespace", namespace]) == 0
    out = capsys.readouterr().out
    assert f"recorded 170 judgments for hashing:v1:1536 in namespace {namespace}" in out

    async with connect_cache(
        dsn, namespace=namespace, embedder=HashingEmbedder(1536), max_false_hit_rate=0.05
    ) as cache:
        await cache.set(make_request(STORED), make_response("Paris."))
        assert await cache.get(make_request("what is capital of France?")) is None  # refused
    stats_args = ["stats", "--dsn", dsn, "--namespace", namespace]
    assert (
        await cli([*stats_args, "--max-false-hit-rate", "0.05", "--similarity-threshold", "0.5"])
        == 0
    )
    text = capsys.readouterr().out
    assert f"serve threshold: {namespace} / hashing:v1:1536: 0." in text
    assert "0/150 judged wrong" in text
    assert re.search(r"semantic refused: below_\w+ 1\n", text), text
    assert await cli([*stats_args, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    (threshold,) = stats["serve_thresholds"]
    assert (threshold["namespace"], threshold["bound"]) == (namespace, 0.01)
    assert threshold["threshold"] is None  # 150 clean verdicts are too few for 1 %
