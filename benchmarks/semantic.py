"""Semantic lookup latency and recall@1 of `Cache.get` against raw pgvector, same server.

    python benchmarks/semantic.py --rows 100000 --dim 1536     # one configuration
    python benchmarks/semantic.py --rows 100000 --dim 384 --method hnsw --reuse
    python benchmarks/semantic.py --plot                        # plot every saved result

Data: `rows` unit vectors in clusters (2,000 random centres; each row at cosine ~0.86 from
its centre), one namespace and one scope, as in an app with one system prompt. Queries are
stored rows plus noise (cosine ~0.96 to their source): the paraphrases a cache must find.
Ground truth is an exact scan in numpy. After `Cache.reindex(method=...)` (ivfflat with
lists from the row count, or HNSW with pgvector's defaults m 16, ef_construction 64):

- raw pgvector: `SELECT id FROM llm_cache ORDER BY embedding <=> $1 LIMIT 1` with the same
  `ivfflat.probes` / `hnsw.ef_search`, on a dedicated connection: the physical limit of one
  ANN query.
- `Cache.get` (`cache_get`): a full semantic hit (exact-key miss, then the scoped,
  filtered, re-ranked nearest row, decoded) through an embedder of precomputed vectors, so
  that embedding time is excluded; the offline embedder's time is reported separately.
- `Cache.get(..., embedding=v)` (`cache_get_given`): the same hit given its vector, one
  statement while the semantic path is idle (the exact row, else the nearest).

Uses LLM_PGCACHE_DSN when set, else an embedded PostgreSQL under --data-dir (kept, so a
later run can reuse the loaded table with --reuse). Writes docs/benchmarks/semantic_*.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import asyncpg
import numpy as np

from llm_pgcache import Cache, HashingEmbedder, SearchOptions, request_keys
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate
from llm_pgcache.postgres.driver import init_connection, keep_session
from llm_pgcache.postgres.reindex import probes_for

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
NAMESPACE = "bench"
T = TypeVar("T")
CENTRES = 2000
MIXED_TAG = "mixed-stream"  # rows the mixed stream stores, deleted after it
EF_SEARCH = 40  # the cache's default (SearchOptions.ef_search: max(40, candidates))


def unit(x: np.ndarray) -> np.ndarray:
    normed: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return normed


def make_rows(rows: int, dim: int, rng: np.random.Generator) -> np.ndarray:
    centres = unit(rng.standard_normal((CENTRES, dim)))
    out = np.empty((rows, dim), dtype=np.float32)
    for start in range(0, rows, 100_000):
        n = min(100_000, rows - start)
        noise = rng.standard_normal((n, dim)).astype(np.float32) * (0.6 / np.sqrt(dim))
        out[start : start + n] = unit(centres[rng.integers(0, CENTRES, n)] + noise)
    return out


def request(text: str) -> dict[str, object]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": text},
        ],
    }


class TableEmbedder:
    """Precomputed embeddings: the lookup measures the database, not an embedding API."""

    def __init__(self, dim: int) -> None:
        self.name = f"bench:{dim}"
        self.dim = dim
        self.vectors: dict[str, np.ndarray] = {}

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vectors[t] for t in texts])


def summary(latencies: list[float]) -> dict[str, float]:
    q = statistics.quantiles(latencies, n=100)
    return {"p50_ms": q[49] * 1000, "p99_ms": q[98] * 1000}


async def load(dsn: str, vectors: np.ndarray, embedder_name: str) -> None:
    scope_key = request_keys(request("x")).scope_key
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    await init_connection(connection)
    await connection.execute("SET synchronous_commit = off")
    started = time.perf_counter()
    for start in range(0, len(vectors), 20_000):
        await connection.copy_records_to_table(
            "llm_cache",
            columns=[
                "namespace",
                "cache_key",
                "scope_key",
                "model",
                "prompt",
                "response",
                "embedding",
                "embedder",
            ],
            records=[
                (
                    NAMESPACE,
                    i.to_bytes(32, "big"),
                    scope_key,
                    "gpt-4o-mini",
                    f"question {i}",
                    json.dumps(
                        {"id": f"chatcmpl-{i}", "choices": [{"message": {"content": "x" * 200}}]}
                    ),
                    vectors[i],
                    embedder_name,
                )
                for i in range(start, min(start + 20_000, len(vectors)))
            ],
        )
        print(f"  loaded {min(start + 20_000, len(vectors))} rows", flush=True)
    await connection.close()
    print(f"load: {time.perf_counter() - started:.0f} s", flush=True)


async def prepare_database(args: argparse.Namespace) -> tuple[str, bool]:
    """The benchmark's database (created, or kept with --reuse); whether it is loaded."""
    server_dsn = os.environ.get("LLM_PGCACHE_DSN") or await embedded.start(args.data_dir)
    database = f"bench_semantic_{args.rows}_{args.dim}"
    admin = await asyncpg.connect(asyncpg_dsn(server_dsn))
    exists = bool(await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    if exists and not args.reuse:
        await admin.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    if not (exists and args.reuse):
        await admin.execute(f'CREATE DATABASE "{database}"')
    await admin.close()
    base, _, query = asyncpg_dsn(server_dsn).partition("?")
    dsn = base.rsplit("/", 1)[0] + "/" + database + (f"?{query}" if query else "")
    return dsn, exists and args.reuse


async def measure(
    dsn: str, cache: Cache, embedder: TableEmbedder, queries: np.ndarray, probes: int
) -> dict[str, tuple[list[float], list[int | None]]]:
    """Per query, the bare ANN query, a full semantic `Cache.get` through the embedder and
    one given the embedding, in an order drawn afresh for each query: whichever runs
    after another is slower (it finds the process and the server busy with what the
    other left), and a fixed order would charge that to one side. Returns the
    latencies and the rows (by number) found."""
    raw = await asyncpg.connect(asyncpg_dsn(dsn))
    await init_connection(raw)
    await raw.execute(f"SET ivfflat.probes = {int(probes)}")
    await raw.execute(f"SET hnsw.ef_search = {EF_SEARCH}")
    kinds = ("raw_pgvector", "cache_get", "cache_get_given")
    latency: dict[str, list[float]] = {kind: [] for kind in kinds}
    found: dict[str, list[int | None]] = {kind: [] for kind in kinds}
    order = np.random.default_rng(7)
    for n, q in enumerate(queries):
        for kind in order.permutation(kinds):
            started = time.perf_counter()
            if kind == "raw_pgvector":
                found[kind].append(
                    await raw.fetchval(
                        "SELECT id FROM llm_cache ORDER BY embedding <=> $1 LIMIT 1", q
                    )
                )
            else:
                text = f"{kind} {n}"  # an exact miss, then the semantic hit
                embedder.vectors[text] = q
                given = q if kind == "cache_get_given" else None
                hit = await cache.get(request(text), embedding=given)
                found[kind].append(None if hit is None else int.from_bytes(hit.key, "big"))
            latency[kind].append(time.perf_counter() - started)
    keys = await raw.fetch(
        "SELECT id, cache_key FROM llm_cache WHERE id = ANY($1::bigint[])",
        found["raw_pgvector"],
    )
    await raw.close()
    row_of_id = {r["id"]: int.from_bytes(r["cache_key"], "big") for r in keys}
    found["raw_pgvector"] = [row_of_id.get(i) for i in found["raw_pgvector"]]
    return {kind: (latency[kind], found[kind]) for kind in kinds}


async def run(args: argparse.Namespace) -> dict[str, object]:
    rng = np.random.default_rng(42)
    vectors = make_rows(args.rows, args.dim, rng)
    dsn, loaded = await prepare_database(args)
    embedder = TableEmbedder(args.dim)
    report: dict[str, object] = {"rows": args.rows, "dim": args.dim}
    await migrate.upgrade(dsn, embedding_dim=args.dim)  # a reused table may be older
    if not loaded:
        await load(dsn, vectors, embedder.name)
    sources = rng.integers(0, args.rows, args.queries)
    noise = rng.standard_normal((args.queries, args.dim)).astype(np.float32)
    queries = unit(vectors[sources] + noise * (0.3 / np.sqrt(args.dim)))
    truth = [int(np.argmax(vectors @ q)) for q in queries]  # exact scan (unit vectors)

    cache = await Cache.connect(
        dsn,
        namespace=NAMESPACE,
        embedder=embedder,
        similarity_threshold=0.5,
        guard=None,  # the texts here are labels ("row 12"): the guard would refuse them
        search=SearchOptions(probes=args.probes),
        min_size=1,
        max_size=2,
    )
    try:
        if not loaded or (await last_build(dsn))[0] != args.method:
            rebuilt = await cache.reindex(method=args.method, maintenance_work_mem="4GB")
            print(rebuilt.summary(), flush=True)
            report["reindex_seconds"] = rebuilt.seconds
        # Rows a run stopped midway left, and dead row versions of earlier runs' hit
        # counts, would change both sides' results and slow their scans.
        await vacuum(dsn)
        _, lists = await last_build(dsn)
        probes = args.probes or (probes_for(lists) if lists else 1)
        report.update(
            {"method": args.method, "lists": lists, "probes": probes, "ef_search": EF_SEARCH}
        )
        report.update(await sizes(dsn))
        measured = await measure(dsn, cache, embedder, queries, probes)
    finally:
        await cache.close()
    report["concurrent"] = await measure_concurrent(
        dsn,
        embedder,
        queries,
        probes,
        args.concurrency,
        search=SearchOptions(probes=args.probes),
        upstream=args.upstream,
    )

    hashing = HashingEmbedder(args.dim)
    embed_latency = []
    for n in range(200):
        started = time.perf_counter()
        await hashing.embed([f"What is the capital of country number {n}, in one word?"])
        embed_latency.append(time.perf_counter() - started)

    stats = {
        kind: {**summary(latency), "recall_at_1": recall(found, truth)}
        for kind, (latency, found) in measured.items()
    }
    raw_p50 = stats["raw_pgvector"]["p50_ms"]
    report.update(
        {
            "queries": args.queries,
            **stats,
            # through the embedder: the exact-key miss, then the embedding, then the query
            "p50_ratio": stats["cache_get"]["p50_ms"] / raw_p50,
            # given the embedding: the exact and the semantic query at once
            "p50_ratio_given": stats["cache_get_given"]["p50_ms"] / raw_p50,
            "hashing_embedder": summary(embed_latency),
        }
    )
    return report


async def last_build(dsn: str) -> tuple[str | None, int | None]:
    """The method and ivfflat lists of the last index build (None, None: never built)."""
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        row = await connection.fetchrow(
            "SELECT method, lists FROM llm_cache_index_builds ORDER BY id DESC LIMIT 1"
        )
    finally:
        await connection.close()
    return (row["method"], row["lists"]) if row else (None, None)


async def vacuum(dsn: str) -> None:
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await connection.execute("DELETE FROM llm_cache WHERE prompt NOT LIKE 'question %'")
        await connection.execute("VACUUM ANALYZE llm_cache")
    finally:
        await connection.close()


async def sizes(dsn: str) -> dict[str, int]:
    """Bytes of the table (with its TOAST) and of the ANN index."""
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        table = await connection.fetchval("SELECT pg_table_size('llm_cache')")
        index = await connection.fetchval(
            "SELECT sum(pg_relation_size(indexrelid))::bigint FROM pg_index "
            "WHERE indrelid = 'llm_cache'::regclass AND indexrelid::regclass::text "
            "LIKE 'llm_cache_embedding_%'"
        )
    finally:
        await connection.close()
    return {"table_bytes": int(table), "ann_index_bytes": int(index or 0)}


async def measure_concurrent(
    dsn: str,
    embedder: TableEmbedder,
    queries: np.ndarray,
    probes: int,
    concurrency: int,
    *,
    search: SearchOptions,
    rounds: int = 5,
    upstream: float = 0.0,
) -> dict[str, object]:
    """At `concurrency` in flight, with the default budgets and a pool of 10 on both sides,
    taking turns (a round of the queries each): raw pgvector queries/s, `Cache.get`
    semantic hits/s (the ratio: hits served, not lookups answered), lookups over budget
    and those answered late-at-once (a miss: the rounds ahead would have taken longer
    than the budget), and a mixed stream (3 exact hits to 1 semantic lookup) with the
    exact hits it lost. With `upstream` (seconds), a caller whose lookup missed waits
    that long before its next one, as its LLM call would; without, a missed lookup is
    followed at once by the next (more load on the cache than an application whose
    misses go upstream would bring)."""

    async def set_probes(connection: asyncpg.Connection) -> None:
        await init_connection(connection)
        await connection.execute(f"SET ivfflat.probes = {int(probes)}")
        await connection.execute(f"SET hnsw.ef_search = {EF_SEARCH}")

    # keep_session: asyncpg's default reset (RESET ALL) on release would put probes back
    # to 1 after each connection's first query, and compare a cheaper search.
    pool = await asyncpg.create_pool(
        asyncpg_dsn(dsn), min_size=10, max_size=10, init=set_probes, reset=keep_session
    )

    raw_latency: list[float] = []

    async def raw_one(q: np.ndarray) -> None:
        started = time.perf_counter()
        await pool.fetchval("SELECT id FROM llm_cache ORDER BY embedding <=> $1 LIMIT 1", q)
        raw_latency.append(time.perf_counter() - started)

    cache = await Cache.connect(
        dsn,
        namespace=NAMESPACE,
        embedder=embedder,
        similarity_threshold=0.5,
        guard=None,  # as above
        search=search,
    )
    try:

        async def cached_one(text: str, given: np.ndarray | None) -> bool:
            hit = await cache.get(request(text), embedding=given) is not None
            if not hit and upstream:  # the LLM call a miss makes, before the next request
                await asyncio.sleep(upstream)
            return hit

        # Raw and cache take turns, a round of the queries each: this machine's speed
        # moves between minutes, and a ratio of rates measured minutes apart moves with it.
        # The cache's lookups through the embedder, then given their vectors.
        raw_seconds = cache_seconds = given_seconds = 0.0
        hits: list[bool] = []
        given_hits: list[bool] = []
        texts: list[str] = []
        before = cache.counters
        for r in range(rounds):
            started = time.perf_counter()
            await in_flight([partial(raw_one, q) for q in queries], concurrency)
            raw_seconds += time.perf_counter() - started
            batch = []
            for n, q in enumerate(queries):
                text = f"concurrent {r} {n}"  # distinct: an exact miss, then semantic
                embedder.vectors[text] = q
                batch.append(text)
            texts += batch
            started = time.perf_counter()
            hits += await in_flight([partial(cached_one, t, None) for t in batch], concurrency)
            cache_seconds += time.perf_counter() - started
            started = time.perf_counter()
            given_hits += await in_flight(
                [partial(cached_one, f"given {t}", q) for t, q in zip(batch, queries, strict=True)],
                concurrency,
            )
            given_seconds += time.perf_counter() - started
        raw_qps = rounds * len(queries) / raw_seconds
        elapsed = cache_seconds
        over_budget = cache.counters.backend_errors - before.backend_errors
        late = cache.counters.semantic_late - before.semantic_late

        exact_results = await mixed_stream(cache, embedder, queries, texts, concurrency)
    finally:
        await cache.invalidate(tag=MIXED_TAG)  # a later --reuse run measures the loaded rows
        await cache.close()
        await pool.close()
    return {
        "concurrency": concurrency,
        "upstream_seconds_after_a_miss": upstream,
        "raw_pgvector_qps": raw_qps,
        # raw's own latency at this concurrency, against the cache's lookup budget
        "raw_pgvector_latency": summary(raw_latency),
        "raw_pgvector_over_budget": sum(t > search.timeout for t in raw_latency)
        if search.timeout
        else 0,
        "cache_get_qps": len(texts) / elapsed,  # lookups answered, hits or misses
        "cache_hits_qps": sum(hits) / elapsed,
        "qps_ratio": sum(hits) / elapsed / raw_qps,  # semantic hits served, against raw
        "qps_ratio_given": sum(given_hits) / given_seconds / raw_qps,  # vectors passed in
        "semantic_hits_given": sum(given_hits) / len(given_hits),
        "semantic_hits": sum(hits) / len(hits),
        "over_budget": over_budget,  # both ways
        "late": late,  # misses at once: the rounds ahead would have taken over budget
        "mixed_exact_lookups": len(exact_results),
        "mixed_exact_hits_lost": exact_results.count(False),
    }


async def mixed_stream(
    cache: Cache,
    embedder: TableEmbedder,
    queries: np.ndarray,
    texts: list[str],
    concurrency: int,
) -> list[bool]:
    """3 exact hits (of 200 rows stored here, tagged `MIXED_TAG`) to 1 semantic lookup
    (of `texts`), at `concurrency` in flight: whether each exact hit was served."""
    stored = [f"stored {i}" for i in range(200)]
    for i, text in enumerate(stored):
        embedder.vectors[text] = queries[i % len(queries)]
        await cache.set(
            request(text), {"choices": [{"message": {"content": "x"}}]}, tags=[MIXED_TAG]
        )

    async def exact_one(i: int) -> bool:
        return await cache.get(request(stored[i % len(stored)])) is not None

    async def semantic_one(i: int) -> bool:
        await cache.get(request(texts[i % len(texts)]))
        return True

    mixed = await in_flight(
        [partial(exact_one if i % 4 else semantic_one, i) for i in range(4 * len(queries))],
        concurrency,
    )
    return [ok for i, ok in enumerate(mixed) if i % 4]


async def in_flight(calls: Sequence[Callable[[], Awaitable[T]]], concurrency: int) -> list[T]:
    """Every call, `concurrency` at a time: as many callers, each taking the next call
    when its last returns (not a task per call waiting on a semaphore: a thousand tasks
    started at once would run their first steps in one turn of the event loop, and hold
    back the cache's own work by tens of ms). Results in the calls' order."""
    results: list[T | None] = [None] * len(calls)
    next_call = iter(range(len(calls)))

    async def caller() -> None:
        for n in next_call:
            results[n] = await calls[n]()

    await asyncio.gather(*(caller() for _ in range(concurrency)))
    return results  # type: ignore[return-value]  # every slot filled


def recall(found: list[int | None], truth: list[int]) -> float:
    return sum(f == t for f, t in zip(found, truth, strict=True)) / len(truth)


def upstream_of(report: dict[str, object]) -> float:
    """Seconds a caller waited after a miss in the run's 32-in-flight part (0: none)."""
    concurrent = report.get("concurrent")
    return (
        float(concurrent.get("upstream_seconds_after_a_miss", 0.0))
        if isinstance(concurrent, dict)
        else 0.0
    )


def plot() -> None:
    import matplotlib  # noqa: PLC0415 - only for the report

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    results = sorted(
        (json.loads(p.read_text()) for p in OUT.glob("semantic_*.json")),
        key=lambda r: (
            r["dim"],
            r["rows"],
            r.get("method", "ivfflat"),
            -r["probes"],
            upstream_of(r),
        ),
    )

    def size(rows: int) -> str:
        return f"{rows // 1_000_000}M" if rows >= 1_000_000 else f"{rows // 1000}k"

    labels = [
        f"{size(r['rows'])}x{r['dim']}\n"
        + ("hnsw" if r.get("method") == "hnsw" else f"p={r['probes']}")
        + (f"\n+{up:g} s/miss" if (up := upstream_of(r)) else "")
        for r in results
    ]
    xs = np.arange(len(results))
    fig, (ax_lat, ax_rec, ax_c32) = plt.subplots(1, 3, figsize=(20, 4.5))
    kinds = ("raw_pgvector", "cache_get", "cache_get_given")
    for k, name in enumerate(kinds):
        offsets = xs + (k - 1) * 0.27
        measured = [r.get(name, {}) for r in results]  # runs before 2026-12-03: no "given"
        ax_lat.bar(offsets, [m.get("p50_ms", 0.0) for m in measured], 0.27, label=f"{name} p50")
        ax_rec.bar(offsets, [m.get("recall_at_1", 0.0) for m in measured], 0.27, label=name)
    ax_lat.set_title("semantic hit p50 (ms), embedding excluded (given: vector passed in)")
    ax_rec.set_title("recall@1 vs exact scan")
    ax_rec.set_ylim(0.75, 1.02)
    for k, (key, label) in enumerate((("qps_ratio", "embedder"), ("qps_ratio_given", "given"))):
        ratios = [r.get("concurrent", {}).get(key, 0.0) for r in results]
        ax_c32.bar(xs + (k - 0.5) * 0.38, ratios, 0.38, label=f"semantic hits/s / raw q/s, {label}")
    ax_c32.axhline(0.8, color="grey", linestyle="--", label="target 0.8x")
    ax_c32.set_title("throughput at 32 in flight (0: not measured in that run)")
    for ax in (ax_lat, ax_rec, ax_c32):
        ax.set_xticks(xs, labels, fontsize=8)
        ax.legend()
    fig.tight_layout()
    fig.savefig(OUT / "semantic.png", dpi=110)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=1536)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument(
        "--probes", type=int, help="ivfflat probes (default: the cache's, about sqrt(lists))"
    )
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--method", choices=("ivfflat", "hnsw"), default="ivfflat")
    parser.add_argument(
        "--upstream",
        type=float,
        default=0.0,
        help="at 32 in flight, seconds a caller waits after a miss (its LLM call)",
    )
    parser.add_argument(
        "--data-dir", default=str(Path(tempfile.gettempdir()) / "llm-pgcache-bench")
    )
    parser.add_argument("--reuse", action="store_true", help="reuse a table loaded before")
    parser.add_argument("--plot", action="store_true", help="only plot the saved results")
    args = parser.parse_args()
    if args.plot:
        plot()
        return
    report = await run(args)
    OUT.mkdir(parents=True, exist_ok=True)
    suffix = f"p{report['probes']}" if args.method == "ivfflat" else "hnsw"
    if args.upstream:
        suffix += f"_upstream{args.upstream:g}s"
    name = f"semantic_{args.rows}_{args.dim}_{suffix}.json"
    (OUT / name).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    asyncio.run(main())
