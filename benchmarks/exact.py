"""Exact-hit latency and throughput of `Cache.get` against raw asyncpg on the same server.

    python benchmarks/exact.py [--rows 10000] [--ops 4000] [--rounds 3]

The baseline is the physical limit of the hot path: one prepared
`SELECT response FROM llm_cache WHERE namespace=$1 AND cache_key=$2` through an asyncpg
pool of the same size (with the per-release reset disabled, as the cache does). As
`Cache.get` shares one query among lookups that overlap, the limit of that is measured
too at concurrency 32: raw asyncpg asking for the 32 keys in flight in one
`... cache_key = ANY($2)` query at a time. All run in the same process against the same
server, interleaved, best of `--rounds`.
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

from llm_pgcache import Cache, init_connection, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

NAMESPACE = "bench-exact"
RAW_QUERY = "SELECT response FROM llm_cache WHERE namespace=$1 AND cache_key=$2"
RAW_BATCH_QUERY = "SELECT response FROM llm_cache WHERE namespace=$1 AND cache_key = ANY($2)"
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
    return figures(latencies, len(keys), time.perf_counter() - started, misses)


async def measure_batched(pool: asyncpg.Pool, keys: list[bytes], batch: int) -> dict[str, float]:
    """`batch` lookups at a time as one query; each lookup's latency is its query's."""
    latencies: list[float] = []
    misses = 0
    started = time.perf_counter()
    for first in range(0, len(keys), batch):
        chunk = keys[first : first + batch]
        query_started = time.perf_counter()
        rows = await pool.fetch(RAW_BATCH_QUERY, NAMESPACE, chunk)
        latencies += [(time.perf_counter() - query_started) * 1000] * len(chunk)
        misses += len(chunk) - len(rows)
    return figures(latencies, len(keys), time.perf_counter() - started, misses)


def figures(latencies: list[float], ops: int, elapsed: float, misses: int) -> dict[str, float]:
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "p50_ms": quantiles[49],
        "p99_ms": quantiles[98],
        "ops_per_s": ops / elapsed,
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
                for name in ("raw_asyncpg", "raw_asyncpg_batched", "cache_get"):
                    keys = random.sample(range(args.rows), min(args.ops, args.rows))
                    if name == "raw_asyncpg_batched":
                        if concurrency == 1:
                            continue  # one key per query: the plain raw lookup
                        found = await measure_batched(
                            raw, [exact_keys[i] for i in keys], concurrency
                        )
                    else:
                        lookup = raw_get if name == "raw_asyncpg" else cache_get
                        found = await measure(lookup, keys, concurrency)
                    if name not in best or found["ops_per_s"] > best[name]["ops_per_s"]:
                        best[name] = found
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
        "ratios": {level: ratios(r) for level, r in results.items()},
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "exact.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(results)
    print(json.dumps(report, indent=2))


def ratios(results: dict[str, dict[str, float]]) -> dict[str, float]:
    cache = results["cache_get"]
    found = {
        "throughput_vs_raw": cache["ops_per_s"] / results["raw_asyncpg"]["ops_per_s"],
        "p50_vs_raw": cache["p50_ms"] / results["raw_asyncpg"]["p50_ms"],
    }
    if "raw_asyncpg_batched" in results:
        batched = results["raw_asyncpg_batched"]["ops_per_s"]
        found["throughput_vs_raw_batched"] = cache["ops_per_s"] / batched
    return found


async def _no_reset(connection: asyncpg.Connection) -> None:
    """No reset query on release, as the cache's own pool."""


def plot(results: dict[str, dict[str, dict[str, float]]]) -> None:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    levels = list(results)
    names = ("raw_asyncpg", "raw_asyncpg_batched", "cache_get")
    fig, (ax_tp, ax_lat) = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.27
    for k, name in enumerate(names):
        shown = [i for i, lv in enumerate(levels) if name in results[lv]]
        xs = [i + (k - 1) * width for i in shown]
        tp = [results[levels[i]][name]["ops_per_s"] for i in shown]
        p50 = [results[levels[i]][name]["p50_ms"] for i in shown]
        ax_tp.bar(xs, tp, width, label=name)
        ax_lat.bar(xs, p50, width, label=f"{name} p50")
    for ax, title in ((ax_tp, "exact hits per second"), (ax_lat, "p50 latency (ms)")):
        ax.set_xticks(range(len(levels)), [lv.replace("_", " ") for lv in levels])
        ax.set_title(title)
        ax.legend()
    fig.suptitle("Cache.get exact hit vs raw asyncpg point lookup (same server, same run)")
    fig.tight_layout()
    fig.savefig(OUT / "exact.png", dpi=110)


if __name__ == "__main__":
    asyncio.run(main())
