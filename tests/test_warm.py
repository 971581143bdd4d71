"""Warming: bulk loads (COPY) and answering expected requests ahead of time."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from openai import AsyncOpenAI

from llm_pgcache import (
    Cache,
    EmbeddingDimensionError,
    HashingEmbedder,
    InvalidEmbeddingError,
    InvalidInputError,
    InvalidRequestError,
    cached_openai,
)
from llm_pgcache.cache.warming import WarmItem
from llm_pgcache.cli import cli

from .conftest import connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]


def write_pairs(path: Path, count: int, namespace: str, **extra: Any) -> None:
    with path.open("w") as out:
        for i in range(count):
            request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q {i}"}]}
            response = {"id": f"r{i}", "choices": [{"message": {"content": f"a {i}"}}]}
            line = {"request": request, "response": response, "namespace": namespace, **extra}
            out.write(json.dumps(line) + "\n")


async def test_warm_cli_loads_a_file(
    dsn: str,
    namespace: str,
    tmp_path: Path,
    db: asyncpg.Connection,
    capsys: pytest.CaptureFixture[str],
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 5000, namespace, ttl=3600, tags=["warm"])
    assert await cli(["warm", str(pairs), "--dsn", dsn, "--batch-size", "1000"]) == 0
    assert capsys.readouterr().out.startswith("loaded 5000 rows in ")
    async with connect_cache(dsn, namespace=namespace) as cache:
        hit = await cache.get(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "q 4321"}]}
        )
        assert hit is not None
        assert hit.response == {"id": "r4321", "choices": [{"message": {"content": "a 4321"}}]}
        assert hit.tags == ("warm",)
        assert hit.expires_at is not None
        # Loading again replaces, never duplicates.
        assert await cli(["warm", str(pairs), "--dsn", dsn]) == 0
        assert (await cache.stats()).table.entries == 5000


async def test_a_bad_line_is_a_clear_error(
    dsn: str, namespace: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pairs = tmp_path / "pairs.jsonl"
    write_pairs(pairs, 3, namespace)
    with pairs.open("a") as out:
        out.write('{"request": {"model": "m"}, "response": {}}\n')  # no messages
    assert await cli(["warm", str(pairs), "--dsn", dsn]) == 1
    assert "messages" in capsys.readouterr().err
    assert await cli(["warm", str(tmp_path / "missing.jsonl"), "--dsn", dsn]) == 1


async def test_load_with_embeddings_serves_semantic_hits(
    dsn: str, namespace: str, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace, embedder=HashingEmbedder(1536)) as cache:
        items = [
            WarmItem(
                request={"model": "m", "messages": [{"role": "user", "content": text}]},
                response=make_response(text),
            )
            for text in ("What is the capital of France?", "Who wrote Hamlet?")
        ]
        assert await cache.load(items, embed=True) == 2
        hit = await cache.get(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "what's the capital of france"}],
            }
        )
        assert hit is not None
        assert hit.tier == "postgres-semantic"
        with pytest.raises(InvalidRequestError):
            await cache.load([WarmItem(request={"model": "m"}, response={})])


async def test_load_takes_precomputed_embeddings_and_refuses_bad_ones(
    dsn: str, namespace: str, db: asyncpg.Connection, make_response: Factory
) -> None:
    """Embeddings made elsewhere (by the same embedder) are stored as given: no embedder
    call; a vector of the wrong size or with a NaN fails its batch, whose rows are not
    written, while the batches before it are."""
    embedder = HashingEmbedder(1536)
    texts = [f"Who painted picture number {n}?" for n in range(30)]
    vectors = await embedder.embed(texts)

    def item(n: int, vector: list[float]) -> WarmItem:
        request = {"model": "m", "messages": [{"role": "user", "content": texts[n]}]}
        return WarmItem(request=request, response=make_response(texts[n]), embedding=vector)

    async with connect_cache(dsn, namespace=namespace, embedder=embedder) as cache:
        loaded = await cache.load([item(n, vectors[n].tolist()) for n in range(20)], batch_size=7)
        assert loaded == 20
        hit = await cache.get(
            {
                "model": "m",
                "messages": [{"role": "user", "content": "who painted picture number 3"}],
            }
        )
        assert hit is not None
        assert hit.tier == "postgres-semantic"
        assert hit.matched_prompt == texts[3]
        stored = await db.fetch(
            "SELECT embedder, embedding IS NOT NULL AS embedded FROM llm_cache "
            "WHERE namespace = $1",
            namespace,
        )
        assert {(r["embedder"], r["embedded"]) for r in stored} == {(embedder.name, True)}

        bad = [item(20 + n, vectors[20 + n].tolist()) for n in range(5)]
        bad.append(item(25, [0.1] * 384))
        with pytest.raises(EmbeddingDimensionError):
            await cache.load(bad, batch_size=5)  # the first batch of 5 is written
        nan = [item(26, [float("nan")] * 1536)]
        with pytest.raises(InvalidEmbeddingError):
            await cache.load(nan)
    assert await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 25
    async with connect_cache(dsn, namespace=namespace) as plain:
        with pytest.raises(InvalidInputError, match="embedder"):
            await plain.load([item(27, vectors[27].tolist())])


async def test_warm_precomputes_through_the_llm(
    cache: Cache, openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    requests = [
        {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"warm {i}"}]}
        for i in range(20)
    ]
    await cache.set(requests[0], {"id": "already", "choices": []})
    openai_api.state.latency = 0.05
    report = await cache.warm(
        requests, lambda r: openai_client.chat.completions.create(**r), concurrency=5
    )
    assert (report.stored, report.skipped, report.failed) == (19, 1, 0)
    assert openai_api.state.calls["chat"] == 19
    client = cached_openai(openai_client, cache)
    reply = await client.chat.completions.create(**requests[7])
    assert reply.llm_pgcache["tier"] == "postgres-exact"

    openai_api.state.fail_status = 500
    failing = [{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "no"}]}]
    report = await cache.warm(failing, lambda r: openai_client.chat.completions.create(**r))
    assert report.failed == 1
