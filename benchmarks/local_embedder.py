"""Texts embedded per second by the local model (all-MiniLM-L6-v2, the `local` extra) at
32 in flight: through the cache's batches (texts asked for meanwhile share one model
call, `semantic.batches`) against one model call per text, and through `Cache.get`
(semantic misses: the embedding is the cost).

    python benchmarks/local_embedder.py

Needs the `local` extra (torch==2.13.0 first on these machines, see the README). Uses
LLM_PGCACHE_DSN when set, else the embedded PostgreSQL. Writes
docs/benchmarks/local_embedder.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from llm_pgcache import Cache, SentenceTransformerEmbedder
from llm_pgcache.postgres import embedded
from llm_pgcache.semantic.batches import EmbeddingBatches
from llm_pgcache.semantic.embedders import bundled_local_model

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
CONCURRENCY = 32
TEXTS = 512


def texts(tag: str) -> list[str]:
    return [
        f"How do I {tag} step {i} of the deployment checklist for service {i % 17}?"
        for i in range(TEXTS)
    ]


async def at_concurrency(embed_one: Callable[[str], Awaitable[object]], items: list[str]) -> float:
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(text: str) -> None:
        async with slots:
            await embed_one(text)

    started = time.perf_counter()
    await asyncio.gather(*(one(t) for t in items))
    return len(items) / (time.perf_counter() - started)


async def main() -> None:
    path = bundled_local_model()
    if path is None:
        raise SystemExit("the local extra is not installed (README: local-model tests)")
    embedder = SentenceTransformerEmbedder(path, device="cpu")
    await embedder.embed(["warm up"])
    report: dict[str, object] = {"model": embedder.name, "concurrency": CONCURRENCY}

    async def unbatched(text: str) -> None:
        await embedder.embed([text])

    batches = EmbeddingBatches(embedder.embed)
    rounds = []
    for r in range(3):
        rounds.append(
            {
                "unbatched_texts_per_s": await at_concurrency(unbatched, texts(f"u{r}")),
                "batched_texts_per_s": await at_concurrency(batches.embed, texts(f"b{r}")),
            }
        )
    report["rounds"] = rounds
    report["model_calls_batched"] = batches.calls
    best_u = max(r["unbatched_texts_per_s"] for r in rounds)
    best_b = max(r["batched_texts_per_s"] for r in rounds)
    report.update({"unbatched_texts_per_s": best_u, "batched_texts_per_s": best_b})
    report["batched_over_unbatched"] = best_b / best_u

    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start_database(
        "bench_local_embedder", embedding_dim=embedder.dim
    )
    async with Cache.connect(dsn, namespace="bench-local", embedder=embedder) as cache:

        async def lookup(text: str) -> None:
            await cache.get({"model": "m", "messages": [{"role": "user", "content": text}]})

        report["cache_get_semantic_misses_per_s"] = await at_concurrency(lookup, texts("g"))
    await batches.close()
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "local_embedder.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
