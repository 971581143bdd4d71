"""The openai wrapper: its overhead on a hit, and what a hit saves end to end.

    python benchmarks/openai_wrapper.py [--ops 2000] [--upstream-ms 500]

1. Overhead: an exact hit through `cached_openai(...).chat.completions.create` against a
   bare `Cache.get` of the same request, same cache, same run (concurrency 1).
2. End to end: the same wrapped client against the tests' OpenAI-compatible server on
   127.0.0.1 answering after `--upstream-ms`: a miss (the upstream call, then the store)
   against a hit.

Uses LLM_PGCACHE_DSN when set, else a fresh embedded PostgreSQL in a temporary directory.
Writes docs/benchmarks/openai_wrapper.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from openai import AsyncOpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' OpenAI-compatible server

from tests.openai_server import OpenAIServer  # noqa: E402

from llm_pgcache import Cache, cached_openai  # noqa: E402
from llm_pgcache.postgres import embedded, migrate  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"


def request(n: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": f"Question number {n}: what is {n} squared?"},
        ],
        "temperature": 0,
    }


async def timed(call: Callable[[], Awaitable[object]], times: int) -> dict[str, float]:
    latencies = []
    for _ in range(times):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49], "p99_ms": q[98]}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--upstream-ms", type=float, default=500)
    parser.add_argument("--misses", type=int, default=20)
    args = parser.parse_args()

    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    server = OpenAIServer()
    await server.start()
    openai_client = AsyncOpenAI(base_url=server.base_url, api_key="bench", max_retries=0)
    try:
        async with Cache.connect(dsn, namespace="bench-wrapper") as cache:
            await cache.invalidate(namespace="bench-wrapper")
            client = cached_openai(openai_client, cache)
            await client.chat.completions.create(**request(0))  # stored: every call below hits

            async def bare() -> object:
                return await cache.get(request(0))

            async def wrapped() -> object:
                return await client.chat.completions.create(**request(0))

            overhead: dict[str, dict[str, float]] = {}
            for _ in range(3):  # interleaved rounds, best p50 of each
                for name, call in (("cache_get", bare), ("wrapper_hit", wrapped)):
                    figures = await timed(call, args.ops)
                    if name not in overhead or figures["p50_ms"] < overhead[name]["p50_ms"]:
                        overhead[name] = figures

            server.state.latency = args.upstream_ms / 1000
            misses = []
            for n in range(1, args.misses + 1):
                started = time.perf_counter()
                await client.chat.completions.create(**request(n))
                misses.append((time.perf_counter() - started) * 1000)
            hits = await timed(lambda: client.chat.completions.create(**request(1)), args.ops)
    finally:
        await openai_client.close()
        await server.stop()

    miss_p50 = statistics.median(misses)
    report = {
        "ops": args.ops,
        "overhead": {
            **overhead,
            "wrapper_minus_get_p50_us": (
                overhead["wrapper_hit"]["p50_ms"] - overhead["cache_get"]["p50_ms"]
            )
            * 1000,
        },
        "end_to_end": {
            "upstream_ms": args.upstream_ms,
            "miss_p50_ms": miss_p50,
            "hit": hits,
            "speedup_p50": miss_p50 / hits["p50_ms"],
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "openai_wrapper.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
