"""Exact-hit latency and throughput of `Cache.get` against raw asyncpg on the same server.

    python benchmarks/exact.py [--rows 10000] [--ops 4000] [--rounds 3]

The baseline is the physical limit of the hot path: one prepared
`SELECT response FROM llm_cache WHERE namespace=$1 AND cache_key=$2` through an asyncpg
pool of the same size (with the per-release reset disabled, as the cache does). Both run
in the same process against the same server, interleaved, best of `--rounds`.
Uses LLM_PGCACHE_DSN when set, else a fresh embedded PostgreSQL in a temporary directory.
Writes docs/benchmarks/exact.json and docs/benchmarks/exact.png.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import asyncpg

from llm_pgcache import Cache, embedded, init_connection, migrate, request_keys
from llm_pgcache.config import asyncpg_dsn

NAMESPACE = "bench-exact"
RAW_QUERY = "SELECT response FROM llm_cache WHERE namespace=$1 AND cache_key=$2"
POOL_SIZE = 10
OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"

Lookup = Callable[[int], Awaitable[object]]


def make_request(i: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question number {i}: what is {i} squared?"},
        ],
        "temperature": 0,
    }


def make_response(i: int) -> dict[str, object]:
    return {
        "id": f"chatcmpl-{i}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": f"{i * i}. " + "x" * 900},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 30, "completion_tokens": 250, "total_tokens": 280},
    }


async def measure(lookup: Lookup, keys: list[int], concurrency: int) -> dict[str, float]:
    """Run every lookup once with `concurrency` workers; latencies in ms, throughput in
    ops/s, and how many found nothing (a cache lookup over its budget is a miss)."""
    latencies: list[float] = []
    misses = 0
    queue = iter(keys)

    async def worker() -> None:
        nonlocal misses
        for i in queue:
            started = time.perf_counter()
            result = await lookup(i)
            latencies.append((time.perf_counter() - started) * 1000)
            misses += result is None

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": quantiles[49],
        "p99_ms": quantiles[98],
        "ops_per_s": len(keys) / elapsed,
        "misses": misses,
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--ops", type=int, default=4_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    cache = await Cache.connect(dsn, namespace=NAMESPACE, min_size=POOL_SIZE, max_size=POOL_SIZE)
    raw = await asyncpg.create_pool(
        asyncpg_dsn(dsn),
        min_size=POOL_SIZE,
        max_size=POOL_SIZE,
        init=init_connection,
        reset=_no_reset,
    )
    try:
        await cache.invalidate(namespace=NAMESPACE)
        for start in range(0, args.rows, 500):
            await asyncio.gather(
                *(
                    cache.set(make_request(i), make_response(i))
                    for i in range(start, min(start + 500, args.rows))
                )
            )
        await raw.execute("ANALYZE llm_cache")
        exact_keys = [request_keys(make_request(i)).exact_key for i in range(args.rows)]

        async def cache_get(i: int) -> object:
            return await cache.get(make_request(i))

        async def raw_get(i: int) -> object:
            return await raw.fetchval(RAW_QUERY, NAMESPACE, exact_keys[i])

        results: dict[str, dict[str, dict[str, float]]] = {}
        for concurrency in (1, 32):
            best: dict[str, dict[str, float]] = {}
            for _ in range(args.rounds):
                for name, lookup in (("raw_asyncpg", raw_get), ("cache_get", cache_get)):
                    keys = random.sample(range(args.rows), min(args.ops, args.rows))
                    figures = await measure(lookup, keys, concurrency)
                    if name not in best or figures["ops_per_s"] > best[name]["ops_per_s"]:
                        best[name] = figures
            results[f"concurrency_{concurrency}"] = best
    finally:
        await raw.close()
        await cache.close()

    report = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "rows": args.rows,
        "ops_per_round": args.ops,
        "rounds": args.rounds,
        "results": results,
        "ratios": {
            level: {
                "throughput_vs_raw": r["cache_get"]["ops_per_s"] / r["raw_asyncpg"]["ops_per_s"],
                "p50_vs_raw": r["cache_get"]["p50_ms"] / r["raw_asyncpg"]["p50_ms"],
            }
            for level, r in results.items()
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "exact.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results)
    print(json.dumps(report, indent=2))


async def _no_reset(connection: asyncpg.Connection) -> None:
    """No reset query on release, as the cache's own pool."""


def plot(results: dict[str, dict[str, dict[str, float]]]) -> None:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    levels = list(results)
    names = ("raw_asyncpg", "cache_get")
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.38
    for k, name in enumerate(names):
        xs = [i + (k - 0.5) * width for i in range(len(levels))]
        ax_tp.bar(xs, [results[lv][name]["ops_per_s"] for lv in levels], width, label=name)
        ax_lat.bar(xs, [results[lv][name]["p50_ms"] for lv in levels], width, label=f"{name} p50")
    for ax, title in ((ax_tp, "exact hits per second"), (ax_lat, "p50 latency (ms)")):
        ax.set_xticks(range(len(levels)), [lv.replace("_", " ") for lv in levels])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Cache.get exact hit vs raw asyncpg point lookup (same server, same run)")
    fig.tight_layout()
    fig.savefig(OUT / "exact.png", dpi=110)


if __name__ == "__main__":
    asyncio.run(main())
