"""Redis (L2) hits against PostgreSQL exact hits, through `Cache.get`, at 1 and 32 in
flight, with raw Redis and raw asyncpg lookups as the limits in the same run.

    python benchmarks/redis_hits.py [--keys 2000] [--rounds 3]

A cache with only a Redis tier (no memory tier) answers every key from Redis after one
pass has promoted it; a cache with no tiers answers from PostgreSQL. The limits: one
`GET` per lookup through redis-py's asyncio client, and one prepared point SELECT per
lookup through an asyncpg pool of 10. Needs a Redis on 127.0.0.1:6379 (REDIS_URL).
Uses LLM_PGCACHE_DSN when set, else a fresh embedded PostgreSQL in a temporary
directory. Writes docs/benchmarks/redis_hits.json.
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
from redis.asyncio import Redis

from llm_pgcache import Cache, RedisTier, WarmItem, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
NAMESPACE = "bench-redis"
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

Lookup = Callable[[int], Awaitable[object]]


def request(n: int) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": f"Question number {n}: what is {n} squared?"}],
    }


async def measure(lookup: Lookup, keys: int, in_flight: int) -> dict[str, float]:
    latencies: list[float] = []
    misses = 0
    queue = iter(range(keys))

    async def worker() -> None:
        nonlocal misses
        for n in queue:
            started = time.perf_counter()
            misses += await lookup(n) is None
            latencies.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    quantiles = statistics.quantiles(latencies, n=100)
    return {"p50_ms": quantiles[49], "ops_per_s": keys / elapsed, "misses": misses}


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    redis = Redis.from_url(os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"))
    pool = await asyncpg.create_pool(asyncpg_dsn(dsn), min_size=10, max_size=10)
    keys = [request_keys(request(n)).exact_key for n in range(args.keys)]
    body = json.dumps(RESPONSE)
    for key in keys:
        await redis.set(f"bench-raw:{key.hex()}", body)
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    async with (
        Cache.connect(dsn, namespace=NAMESPACE, lookup_timeout=1.0) as postgres,
        Cache.connect(
            dsn,
            namespace=NAMESPACE,
            lookup_timeout=1.0,
            redis=RedisTier(redis, prefix="bench-llm-pgcache"),
        ) as tiered,
    ):
        await postgres.load(
            WarmItem(request=request(n), response=RESPONSE) for n in range(args.keys)
        )
        for n in range(args.keys):  # promote every key into Redis
            await tiered.get(request(n))

        async def from_redis(n: int) -> object:
            hit = await tiered.get(request(n))
            return hit if hit is not None and hit.tier == "redis" else None

        async def from_postgres(n: int) -> object:
            return await postgres.get(request(n))

        async def raw_redis(n: int) -> object:
            return await redis.get(f"bench-raw:{keys[n].hex()}")

        async def raw_postgres(n: int) -> object:
            return await pool.fetchval(
                "SELECT response FROM llm_cache WHERE namespace = $1 AND cache_key = $2",
                NAMESPACE,
                keys[n],
            )

        lookups = {
            "redis_hit": from_redis,
            "postgres_hit": from_postgres,
            "raw_redis_get": raw_redis,
            "raw_asyncpg_select": raw_postgres,
        }
        for concurrency in (1, 32):
            runs = results.setdefault(str(concurrency), {name: [] for name in lookups})
            for _ in range(args.rounds):
                for name, lookup in lookups.items():
                    runs[name].append(await measure(lookup, args.keys, concurrency))
    await pool.close()
    await redis.aclose()
    report: dict[str, object] = {"keys": args.keys, "rounds": args.rounds}
    for in_flight, runs in results.items():
        best = {name: max(r["ops_per_s"] for r in rs) for name, rs in runs.items()}
        report[in_flight] = {"runs": runs, "best_ops_per_s": best}
        print(
            f"{in_flight:>2} in flight: redis hit {best['redis_hit']:7.0f}/s, postgres hit "
            f"{best['postgres_hit']:7.0f}/s ({best['redis_hit'] / best['postgres_hit']:.2f}x); "
            f"raw redis GET {best['raw_redis_get']:7.0f}/s, raw asyncpg "
            f"{best['raw_asyncpg_select']:7.0f}/s"
        )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "redis_hits.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
