"""What the `llm-pgcache` subcommands do (`cli` parses their arguments and imports this
module only to run one, so that `--help` stays fast). Alembic and the demo (the openai
client) are imported by the commands that use them; `purge` and `healthcheck` are in
`jobs`, which does without the façade."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Unpack

from llm_pgcache.cache.facade import Cache
from llm_pgcache.cache.metrics import REFUSED
from llm_pgcache.cache.opening import Opening
from llm_pgcache.cache.options import CacheOptions
from llm_pgcache.cache.warming import read_warm_file
from llm_pgcache.config import Settings, redact_dsn
from llm_pgcache.errors import EXIT_OK
from llm_pgcache.jobs import ProgressBar
from llm_pgcache.postgres import embedded
from llm_pgcache.pricing import DEFAULT_PRICES, cost
from llm_pgcache.semantic.embedders import BUNDLED_LOCAL_DIM, default_embedder
from llm_pgcache.semantic.search import SearchOptions


def connect(dsn: str | None, **options: Unpack[CacheOptions]) -> Opening[Cache]:
    """A strict cache for a command, which runs one thing at a time: one connection,
    opened at once (a cache opens ten up front, for lookups that overlap)."""
    options.setdefault("strict", True)
    return Cache.connect(dsn, min_size=1, max_size=2, **options)


async def run_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from llm_pgcache.postgres import migrate  # noqa: PLC0415 - alembic: this command only

    dsn = args.dsn or await embedded.start()
    await migrate.upgrade(
        dsn,
        revision=args.revision,
        embedding_dim=args.embedding_dim,
        embedding_type=args.embedding_type,
    )
    print(f"migrated {redact_dsn(dsn)} to {args.revision}")
    return EXIT_OK


async def run_reindex(args: argparse.Namespace, settings: Settings) -> int:
    async with connect(args.dsn) as cache:
        report = await cache.reindex(
            if_needed=args.if_needed,
            method=args.method,
            lists=args.lists,
            m=args.m,
            ef_construction=args.ef_construction,
            maintenance_work_mem=args.maintenance_work_mem,
        )
    print(report.summary())
    return EXIT_OK


async def run_demo_command(args: argparse.Namespace, settings: Settings) -> int:
    from llm_pgcache.demo import (  # noqa: PLC0415 - the openai client: this command only
        DEMO_DATABASE,
        choose_upstream,
        demo_wants_local_model,
        run_demo,
    )

    dsn = args.dsn or settings.dsn
    if dsn is None and demo_wants_local_model():
        # The local model's vectors have 384 dimensions, the default table 1536: the demo
        # gets a database of its own on the embedded server.
        dsn = await embedded.start_database(DEMO_DATABASE, embedding_dim=BUNDLED_LOCAL_DIM)
    async with connect(dsn) as cache:
        embedding_dim = cache.embedding_dim  # the embedder must match the table
    embedder = default_embedder(embedding_dim)
    # Strict, so that a failure shows; with budgets of seconds, not 50 / 250 ms: a cold
    # embedded server on a busy machine is slow at first (a new database's first
    # semantic lookup plans and compiles its function), and a demo is not a hot path.
    async with Cache.connect(
        dsn,
        strict=True,
        embedder=embedder,
        lookup_timeout=1.0,
        search=SearchOptions(timeout=5.0),
    ) as cache:
        label, upstream = choose_upstream()
        await run_demo(cache, upstream, f"{label}\nembedder: {embedder.name}", sys.stdout)
    return EXIT_OK


def _count_lines(path: Path) -> int:
    """Non-empty lines of a file (for a progress bar's total); 0 if it cannot be read."""
    try:
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    except OSError:
        return 0


async def run_warm(args: argparse.Namespace, settings: Settings) -> int:
    embedder = None
    if args.embed:
        async with connect(args.dsn) as probe:
            embedder = default_embedder(probe.embedding_dim)
    async with connect(args.dsn, namespace=args.namespace, embedder=embedder) as cache:
        bar = ProgressBar(sys.stderr) if sys.stderr.isatty() else None
        total = _count_lines(args.file) if bar is not None else 0
        started = time.monotonic()
        written = await cache.load(
            read_warm_file(args.file),
            batch_size=args.batch_size,
            embed=args.embed,
            progress=(lambda done: bar.update(done, total)) if bar is not None else None,
        )
        if bar is not None:
            bar.finish()
        seconds = time.monotonic() - started
    rate = written / seconds if seconds else 0.0
    print(f"loaded {written} rows in {seconds:.1f} s ({rate:.0f} rows/s)")
    return EXIT_OK


async def run_stats(args: argparse.Namespace, settings: Settings) -> int:
    namespace: str | None = args.namespace
    async with connect(args.dsn, similarity_threshold=args.similarity_threshold) as cache:
        stats = await cache.stats(
            namespace=namespace,
            all_namespaces=namespace is None,
            max_false_hit_rate=args.max_false_hit_rate,
        )
    table = stats.table
    if args.json:
        thresholds = [
            {"namespace": ns, "embedder": embedder, **asdict(threshold)}
            for ns, embedder, threshold in stats.serve_thresholds
        ]
        print(json.dumps({**asdict(table), "serve_thresholds": thresholds}))
        return EXIT_OK
    print(f"namespace:       {namespace or '(all)'}")
    print(f"entries:         {table.entries}")
    print(f"expired:         {table.expired} (not yet purged)")
    print(f"embedded:        {table.embedded} (semantic candidates)")
    print(f"hits recorded:   {table.hits}")
    print(f"stored tokens:   {table.stored_tokens}")
    print(f"table size:      {_size(table.table_bytes)}")
    print(f"index size:      {_size(table.index_bytes)}")
    print("top models:      " + (", ".join(f"{m} ({n})" for m, n in table.top_models) or "-"))
    lookups = {tier: (n, ms) for tier, n, ms in table.lookups_by_tier}
    refused = {
        tier.removeprefix(REFUSED): lookups.pop(tier)[0]
        for tier in list(lookups)
        if tier.startswith(REFUSED)
    }
    misses = lookups.pop("miss", (0, 0.0))[0]
    hits = sum(n for n, _ in lookups.values())
    rate = f"{hits / (hits + misses):.1%}" if hits + misses else "-"
    print(f"lookups:         {hits} hits, {misses} misses, hit rate {rate} (all processes)")
    for tier, (n, ms) in sorted(lookups.items()):
        print(f"  {tier + ':':<16}{n} hits, {ms / n if n else 0.0:.2f} ms average")
    print(
        "semantic refused: "
        + (", ".join(f"{reason} {n}" for reason, n in sorted(refused.items())) or "-")
    )
    for ns, embedder, threshold in stats.serve_thresholds:
        print(f"serve threshold: {ns} / {embedder}: {threshold.summary()}")
    tokens = sum(p + c for _, _, p, c in table.saved_by_model)
    money = sum(cost(m, p, c, DEFAULT_PRICES) or 0.0 for m, _, p, c in table.saved_by_model)
    print(f"saved by hits:   {tokens} tokens, ${money:.4f} at list prices (rows present)")
    return EXIT_OK


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    if n_bytes < 1024**2:
        return f"{n_bytes / 1024:.1f} KiB"
    if n_bytes < 1024**3:
        return f"{n_bytes / 1024**2:.1f} MiB"
    return f"{n_bytes / 1024**3:.1f} GiB"
