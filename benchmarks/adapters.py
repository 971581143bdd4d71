"""Every adapter's exact-hit overhead over `Cache.get`, and LangChain's hit path against
LangChain's own `InMemoryCache` and `AsyncRedisCache`, in one run.

    python benchmarks/adapters.py [--ops 2000] [--rounds 3]

One embedded PostgreSQL (or LLM_PGCACHE_DSN), one cache, one stored entry per adapter;
each figure is the p50/p99 of `--ops` sequential hits (1 in flight), the best p50 of
`--rounds` interleaved rounds:

- async: `Cache.get`; `cached_openai` chat and embeddings (one item); `cached_anthropic`
  messages; `@cache.cached`; LangChain `PgCache.alookup`.
- sync (from a thread, as sync code calls): `SyncCache.get`; the sync openai and
  anthropic wrappers; `@sync_cache.cached`; LangChain `PgCache.lookup`.
- LangChain's whole hit path, `ChatOpenAI.ainvoke` with `cache=` each of PgCache,
  InMemoryCache (in process: the floor) and AsyncRedisCache (Redis on 127.0.0.1:6379,
  needs `langchain-community`), and the bare `alookup` of each.

Writes docs/benchmarks/adapters.json.
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
from typing import Any

import redis.asyncio as redis_asyncio
from anthropic import Anthropic, AsyncAnthropic
from langchain_community.cache import AsyncRedisCache
from langchain_core.caches import BaseCache, InMemoryCache
from langchain_openai import ChatOpenAI
from openai import AsyncOpenAI, OpenAI

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the tests' OpenAI- and Anthropic-compatible servers

from tests.anthropic_server import AnthropicServer  # noqa: E402
from tests.openai_server import OpenAIServer  # noqa: E402

from llm_pgcache import Cache, SyncCache, cached_anthropic, cached_openai  # noqa: E402
from llm_pgcache.integrations.langchain import PgCache  # noqa: E402
from llm_pgcache.postgres import embedded, migrate  # noqa: E402

OUT = ROOT / "docs" / "benchmarks"
NAMESPACE = "bench-adapters"
CHAT = {
    "model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
    "temperature": 0,
}
MESSAGES = {
    "model": "claude-haiku-4-5",
    "max_tokens": 256,
    "messages": [{"role": "user", "content": "What is the capital of France?"}],
}
EMBED = {"model": "text-embedding-3-small", "input": ["the capital of France"]}


def figures(latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"p50_us": q[49] * 1000, "p99_us": q[98] * 1000}


async def timed(call: Callable[[], Awaitable[object]], ops: int) -> dict[str, float]:
    latencies = []
    for _ in range(ops):
        started = time.perf_counter()
        await call()
        latencies.append((time.perf_counter() - started) * 1000)
    return figures(latencies)


def timed_sync(call: Callable[[], object], ops: int) -> dict[str, float]:
    latencies = []
    for _ in range(ops):
        started = time.perf_counter()
        call()
        latencies.append((time.perf_counter() - started) * 1000)
    return figures(latencies)


def best(runs: list[dict[str, float]]) -> dict[str, float]:
    return min(runs, key=lambda r: r["p50_us"])


async def main() -> None:  # noqa: PLR0915 - one straight script of measurements
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(
        Path(tempfile.mkdtemp(prefix="llm-pgcache-bench-")) / "data"
    )
    await migrate.upgrade(dsn)
    openai_server, anthropic_server = OpenAIServer(), AnthropicServer()
    await openai_server.start()
    await anthropic_server.start()
    redis = redis_asyncio.Redis(host="127.0.0.1", port=6379)
    openai_async = AsyncOpenAI(base_url=openai_server.base_url, api_key="b", max_retries=0)
    anthropic_async = AsyncAnthropic(base_url=anthropic_server.url, api_key="b", max_retries=0)
    loop = asyncio.get_running_loop()
    results: dict[str, list[dict[str, float]]] = {}

    def record(name: str, value: dict[str, float]) -> None:
        results.setdefault(name, []).append(value)

    try:
        async with Cache.connect(dsn, namespace=NAMESPACE) as cache:
            await cache.invalidate(namespace=NAMESPACE)
            sync = await asyncio.to_thread(SyncCache.connect, dsn, namespace=NAMESPACE)
            chat = cached_openai(openai_async, cache)
            messages = cached_anthropic(anthropic_async, cache)
            openai_sync = cached_openai(
                OpenAI(base_url=openai_server.base_url, api_key="b", max_retries=0), sync
            )
            anthropic_sync = cached_anthropic(
                Anthropic(base_url=anthropic_server.url, api_key="b", max_retries=0), sync
            )

            @cache.cached()
            async def square(n: int) -> int:
                return n * n

            @sync.cached()
            def cube(n: int) -> int:
                return n * n * n

            pg_async, pg_sync = PgCache(cache), PgCache(sync)
            memory = InMemoryCache()
            await redis.flushdb()
            redis_cache = AsyncRedisCache(redis)
            caches: dict[str, BaseCache] = {
                "pgcache": pg_async,
                "in_memory": memory,
                "async_redis": redis_cache,
            }
            models = {
                name: ChatOpenAI(
                    model="gpt-4o-mini",
                    base_url=openai_server.base_url,
                    api_key="b",  # type: ignore[arg-type]
                    max_retries=0,
                    cache=lc_cache,
                )
                for name, lc_cache in caches.items()
            }
            prompt = "What is the capital of France?"
            # Store one entry for each (misses, not measured).
            await chat.chat.completions.create(**CHAT)
            await chat.embeddings.create(**EMBED)
            await messages.messages.create(**MESSAGES)
            await square(7)
            await asyncio.to_thread(cube, 7)
            for model in models.values():
                await model.ainvoke(prompt)
            llm_string = models["pgcache"]._get_llm_string()

            def sync_round() -> None:
                record("sync/SyncCache.get", timed_sync(lambda: sync.get(CHAT), args.ops))
                record(
                    "sync/openai chat",
                    timed_sync(lambda: openai_sync.chat.completions.create(**CHAT), args.ops),
                )
                record(
                    "sync/anthropic messages",
                    timed_sync(lambda: anthropic_sync.messages.create(**MESSAGES), args.ops),
                )
                record("sync/@sync_cache.cached", timed_sync(lambda: cube(7), args.ops))
                record(
                    "sync/langchain PgCache.lookup",
                    timed_sync(lambda: pg_sync.lookup(prompt, llm_string), args.ops),
                )

            for _ in range(args.rounds):
                record("async/Cache.get", await timed(lambda: cache.get(CHAT), args.ops))
                record(
                    "async/openai chat",
                    await timed(lambda: chat.chat.completions.create(**CHAT), args.ops),
                )
                record(
                    "async/openai embeddings (1 item)",
                    await timed(lambda: chat.embeddings.create(**EMBED), args.ops),
                )
                record(
                    "async/anthropic messages",
                    await timed(lambda: messages.messages.create(**MESSAGES), args.ops),
                )
                record("async/@cache.cached", await timed(lambda: square(7), args.ops))
                for name, lc_cache in caches.items():
                    record(
                        f"langchain/{name} alookup",
                        await timed(
                            lambda c=lc_cache: c.alookup(prompt, llm_string),  # type: ignore[misc]
                            args.ops,
                        ),
                    )
                for name, model in models.items():
                    record(
                        f"langchain/ChatOpenAI.ainvoke hit, {name}",
                        await timed(lambda m=model: m.ainvoke(prompt), args.ops),  # type: ignore[misc]
                    )
                await loop.run_in_executor(None, sync_round)
            calls = {"openai": dict(openai_server.state.calls)}
            calls["anthropic"] = dict(anthropic_server.state.calls)
            await asyncio.to_thread(sync.close)
    finally:
        await openai_async.close()
        await anthropic_async.close()
        await redis.aclose()
        await openai_server.stop()
        await anthropic_server.stop()

    table = {name: best(runs) for name, runs in results.items()}
    base_async = table["async/Cache.get"]["p50_us"]
    base_sync = table["sync/SyncCache.get"]["p50_us"]
    overhead: dict[str, Any] = {}
    for name, value in table.items():
        if name.startswith("async/"):
            overhead[name] = value["p50_us"] - base_async
        elif name.startswith("sync/"):
            overhead[name] = value["p50_us"] - base_sync
    report = {
        "ops": args.ops,
        "rounds": args.rounds,
        "hits": table,
        "overhead_p50_us": {
            "note": "over Cache.get (async rows) or SyncCache.get (sync rows), same run",
            **overhead,
            "sync/SyncCache.get over async Cache.get": base_sync - base_async,
        },
        "upstream_calls": calls,  # each entry once: every measured call was a hit
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "adapters.json").write_text(json.dumps(report, indent=2) + "\n")
    plot(table)
    print(json.dumps(report, indent=2))


def plot(table: dict[str, dict[str, float]]) -> None:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    names = list(table)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(names) + 1))
    ys = range(len(names))
    ax.barh(ys, [table[n]["p50_us"] for n in names], label="p50")
    ax.scatter([table[n]["p99_us"] for n in names], ys, color="black", marker="|", label="p99")
    ax.set_yticks(list(ys), names)
    ax.invert_yaxis()
    ax.set_xlabel("exact hit, microseconds (1 in flight)")
    ax.set_title("Hits through each adapter, same server and run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "adapters.png", dpi=110)


if __name__ == "__main__":
    asyncio.run(main())
