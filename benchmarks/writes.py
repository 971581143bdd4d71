"""`Cache.set` against a raw asyncpg upsert on the same server, at 1 and 32 in flight.

    python benchmarks/writes.py [--ops 4000] [--rounds 3]

The physical limit: the same row written by one `INSERT ... ON CONFLICT DO UPDATE`
through an asyncpg pool of the same size (10, no reset on release), one statement per
row, from as many workers. `Cache.set` also keys the request, checks and encodes the
response, tells other processes (NOTIFY) and drops the copies above PostgreSQL; stores
that overlap share one statement (`postgres.puts`). Exact-only (no embedder). Best of
`--rounds`, interleaved. Uses LLM_PGCACHE_DSN when set, else a fresh embedded
PostgreSQL in a temporary directory. Writes docs/benchmarks/writes.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from llm_pgcache import Cache, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
POOL_SIZE = 10
RAW_UPSERT = """
INSERT INTO llm_cache (namespace, cache_key, scope_key, model, prompt, response, tags,
                       prompt_tokens, completion_tokens, expires_at)
VALUES ($1, $2, $3, $4, $5, $6::jsonb, '{}', 12, 40, now() + interval '1 hour')
ON CONFLICT (namespace, cache_key) DO UPDATE SET response = EXCLUDED.response,
    expires_at = EXCLUDED.expires_at, created_at = now()
"""
RESPONSE = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-mini",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Paris. " * 40, "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 40, "total_tokens": 52},
}

Write = Callable[[int], Awaitable[object]]


def request(n: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": f"Question number {n}: what is {n} squared?"},
        ],
    }


async def measure(write: Write, ops: int, concurrency: int) -> dict[str, float]:
    latencies: list[float] = []
    queue = iter(range(ops))

    async def worker() -> None:
        for n in queue:
            started = time.perf_counter()
            await write(n)
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"p50_ms": quantiles[49], "p99_ms": quantiles[98], "ops_per_s": ops / elapsed}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=4000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    body = json.dumps(RESPONSE)
    keys = [request_keys(request(n)) for n in range(args.ops)]

    async def no_reset(connection: asyncpg.Connection) -> None:
        return None

    pool = await asyncpg.create_pool(
        asyncpg_dsn(dsn), min_size=POOL_SIZE, max_size=POOL_SIZE, reset=no_reset
    )
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    async with Cache.connect(dsn, namespace="bench-set", write_timeout=10.0) as cache:

        async def cached(n: int) -> None:
            await cache.set(request(n), RESPONSE, ttl=3600)

        async def raw(n: int) -> None:
            k = keys[n]
            await pool.execute(
                RAW_UPSERT, "bench-raw", k.exact_key, k.scope_key, k.model, k.text, body
            )

        for in_flight in (1, 32):
            runs = results.setdefault(str(in_flight), {"set": [], "raw_upsert": []})
            for _ in range(args.rounds):
                runs["raw_upsert"].append(await measure(raw, args.ops, in_flight))
                runs["set"].append(await measure(cached, args.ops, in_flight))
    await pool.close()
    report: dict[str, object] = {"ops": args.ops, "rounds": args.rounds, "by_concurrency": {}}
    for concurrency, runs in results.items():
        best = {name: max(r["ops_per_s"] for r in rs) for name, rs in runs.items()}
        report["by_concurrency"][concurrency] = {  # type: ignore[index]
            "runs": runs,
            "best_ops_per_s": best,
            "set_vs_raw_upsert": best["set"] / best["raw_upsert"],
        }
        print(
            f"{concurrency:>2} in flight: set {best['set']:8.0f}/s  raw upsert "
            f"{best['raw_upsert']:8.0f}/s  ratio {best['set'] / best['raw_upsert']:.2f}x"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "writes.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
