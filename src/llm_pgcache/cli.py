"""The `llm-pgcache` command: thin subcommands over the library.

Errors print one line to stderr and exit 1 (2 for usage errors); no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TextIO

from llm_pgcache import evaluation
from llm_pgcache.cache.facade import Cache
from llm_pgcache.cache.metrics import REFUSED
from llm_pgcache.cache.warming import read_warm_file
from llm_pgcache.config import (
    ENV_DSN,
    ENV_DSN_FALLBACK,
    ENV_EMBEDDED_DIR,
    ENV_EMBEDDING_DIM,
    ENV_EMBEDDING_TYPE,
    Settings,
    parse_embedding_dim,
    parse_embedding_type,
    redact_dsn,
)
from llm_pgcache.demo import DEMO_DATABASE, choose_upstream, demo_wants_local_model, run_demo
from llm_pgcache.errors import EXIT_ERROR, EXIT_OK, LLMPgCacheError
from llm_pgcache.postgres import embedded, migrate
from llm_pgcache.postgres.driver import SCHEMA_REVISION
from llm_pgcache.postgres.purge import DEFAULT_BATCH_SIZE
from llm_pgcache.pricing import DEFAULT_PRICES, cost
from llm_pgcache.semantic.embedders import BUNDLED_LOCAL_DIM, default_embedder
from llm_pgcache.semantic.search import SearchOptions


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llm-pgcache",
        description="A durable, shared cache for LLM responses on PostgreSQL + pgvector.",
        epilog=(
            f"Environment: {ENV_DSN} (falling back to {ENV_DSN_FALLBACK}) names the database; "
            f"without one, an embedded PostgreSQL is started under {ENV_EMBEDDED_DIR} "
            f"(default: a per-user data directory). Exit codes: 0 ok, 1 error, 2 usage."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.add_argument(
            "--dsn",
            help=f"PostgreSQL DSN (default: ${ENV_DSN}, then ${ENV_DSN_FALLBACK}, "
            "then the embedded server)",
        )
        return sub

    migrate_cmd = command("migrate", "Create or upgrade the llm_cache schema (alembic upgrade).")
    migrate_cmd.add_argument(
        "--embedding-dim",
        type=parse_embedding_dim,
        help=f"dimension of the embedding column, fixed when the table is created "
        f"(default: ${ENV_EMBEDDING_DIM}, else 1536)",
    )
    migrate_cmd.add_argument(
        "--embedding-type",
        type=parse_embedding_type,
        help="how the embedding column stores vectors, fixed when the table is created: "
        "vector (4-byte floats) or halfvec (2-byte floats, half the space; "
        f"default: ${ENV_EMBEDDING_TYPE}, else vector)",
    )
    migrate_cmd.add_argument("--revision", default="head", help="target revision (default: head)")

    stats_cmd = command(
        "stats",
        "Report entries, expired rows, sizes, top models, lookups and refusals of every "
        "process, and the serve threshold of each judged namespace with its evidence.",
    )
    stats_cmd.add_argument("--namespace", help="only this namespace (default: all)")
    stats_cmd.add_argument(
        "--max-false-hit-rate",
        type=float,
        default=None,
        help="the bound the serve thresholds are computed for (default: 0.01)",
    )
    stats_cmd.add_argument(
        "--similarity-threshold",
        type=float,
        default=None,
        help="the lowest similarity the caches consider (default: 0.9)",
    )
    stats_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    reindex_cmd = command(
        "reindex",
        "Rebuild the ANN index concurrently: ivfflat (lists sized from the row count) or "
        "HNSW; lookups go on meanwhile.",
    )
    reindex_cmd.add_argument(
        "--if-needed",
        action="store_true",
        help="only rebuild when needed: ivfflat once the embedded rows doubled or halved "
        "since the last build, HNSW never (it takes new rows as they come)",
    )
    reindex_cmd.add_argument(
        "--method",
        choices=("ivfflat", "hnsw"),
        help="index method (default: the current index's, else ivfflat)",
    )
    reindex_cmd.add_argument("--lists", type=int, help="ivfflat lists (default: from rows)")
    reindex_cmd.add_argument("--m", type=int, help="HNSW links per node (default: 16)")
    reindex_cmd.add_argument(
        "--ef-construction", type=int, help="HNSW build candidate list (default: 64)"
    )
    reindex_cmd.add_argument(
        "--maintenance-work-mem", default="1GB", help="memory for the build (default: 1GB)"
    )

    purge_cmd = command(
        "purge",
        "Delete expired rows in short batches (for cron; overlapping runs skip), and "
        "optionally evict the least recently used rows above a size cap. Exit codes: "
        "0 done, nothing to do, or another purge running; 1 error.",
    )
    purge_cmd.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help=f"rows per batch (default: {DEFAULT_BATCH_SIZE})",
    )
    purge_cmd.add_argument("--max-rows", type=int, help="keep at most this many rows")
    purge_cmd.add_argument(
        "--max-bytes", type=parse_size, help="keep the table near this size, e.g. 20GB"
    )
    purge_cmd.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    purge_cmd.add_argument(
        "--every", type=float, metavar="SECONDS", help="run again every SECONDS until stopped"
    )

    warm_cmd = command(
        "warm",
        'Bulk-load request/response pairs from a JSONL file of {"request": {...}, '
        '"response": {...}, "ttl"?: seconds, "tags"?: [...], "namespace"?: "..."} lines.',
    )
    warm_cmd.add_argument("file", type=Path, help="the JSONL file")
    warm_cmd.add_argument("--namespace", default="default", help="default namespace")
    warm_cmd.add_argument("--batch-size", type=int, default=2000, help="rows per COPY")
    warm_cmd.add_argument(
        "--embed",
        action="store_true",
        help="embed the prompts for semantic lookups (the configured embedder: OpenAI when "
        "OPENAI_API_KEY or OPENAI_BASE_URL is set, else the offline one)",
    )

    evaluation.add_commands(command)

    command("healthcheck", "Exit 0 when the database answers and its schema is current.")
    command("demo", "Run a short scripted session through the cache and print what answered.")
    return parser


async def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`; returns the exit code."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    args.dsn = args.dsn or settings.dsn
    try:
        return await COMMANDS[args.command](args, settings)
    except LLMPgCacheError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"llm-pgcache {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


async def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    dsn = args.dsn or await embedded.start()
    await migrate.upgrade(
        dsn,
        revision=args.revision,
        embedding_dim=args.embedding_dim,
        embedding_type=args.embedding_type,
    )
    print(f"migrated {redact_dsn(dsn)} to {args.revision}")
    return EXIT_OK


async def _healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    async with Cache.connect(args.dsn, strict=True):
        print(f"ok: schema at revision {SCHEMA_REVISION}")
    return EXIT_OK


async def _reindex(args: argparse.Namespace, settings: Settings) -> int:
    async with Cache.connect(args.dsn, strict=True) as cache:
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


async def _demo(args: argparse.Namespace, settings: Settings) -> int:
    dsn = args.dsn or settings.dsn
    if dsn is None and demo_wants_local_model():
        # The local model's vectors have 384 dimensions, the default table 1536: the demo
        # gets a database of its own on the embedded server.
        dsn = await embedded.start_database(DEMO_DATABASE, embedding_dim=BUNDLED_LOCAL_DIM)
    async with Cache.connect(dsn, strict=True) as cache:
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


async def _purge(args: argparse.Namespace, settings: Settings) -> int:
    async with Cache.connect(args.dsn, strict=True) as cache:
        while True:
            bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.dry_run else None
            report = await cache.purge(
                batch_size=args.batch_size,
                max_rows=args.max_rows,
                max_bytes=args.max_bytes,
                dry_run=args.dry_run,
                progress=bar.update if bar else None,
            )
            if bar is not None:
                bar.finish()
            print(report.summary(), flush=True)
            if args.every is None:
                return EXIT_OK
            await asyncio.sleep(args.every)


class ProgressBar:
    """A one-line progress bar, redrawn in place on a terminal."""

    def __init__(self, out: TextIO, width: int = 30) -> None:
        self._out = out
        self._width = width
        self._drawn = False

    def update(self, done: int, total: int) -> None:
        filled = self._width * done // total if total else self._width
        bar = "#" * filled + "-" * (self._width - filled)
        self._out.write(f"\r[{bar}] {done}/{total} rows")
        self._out.flush()
        self._drawn = True

    def finish(self) -> None:
        if self._drawn:
            self._out.write("\n")


def _count_lines(path: Path) -> int:
    """Non-empty lines of a file (for a progress bar's total); 0 if it cannot be read."""
    try:
        with path.open("rb") as lines:
            return sum(1 for line in lines if line.strip())
    except OSError:
        return 0


def parse_size(text: str) -> int:
    """Bytes from '123', '500MB', '2GiB', '1.5 GB' (powers of 1024)."""
    number = text.strip().upper().replace(" ", "").removesuffix("B").removesuffix("I")
    units = {"K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}
    factor = units.get(number[-1:], 1)
    try:
        value = float(number[:-1] if factor != 1 else number)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (e.g. 500MB, 20GB)") from None
    return int(value * factor)


async def _warm(args: argparse.Namespace, settings: Settings) -> int:
    embedder = None
    if args.embed:
        async with Cache.connect(args.dsn, strict=True) as probe:
            embedder = default_embedder(probe.embedding_dim)
    async with Cache.connect(
        args.dsn, strict=True, namespace=args.namespace, embedder=embedder
    ) as cache:
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


async def _stats(args: argparse.Namespace, settings: Settings) -> int:
    namespace: str | None = args.namespace
    async with Cache.connect(
        args.dsn, strict=True, similarity_threshold=args.similarity_threshold
    ) as cache:
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


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Awaitable[int]]] = {
    "migrate": _migrate,
    "stats": _stats,
    "healthcheck": _healthcheck,
    "reindex": _reindex,
    "tune-threshold": evaluation.tune,
    "eval": evaluation.evaluate_pairs,
    "purge": _purge,
    "warm": _warm,
    "demo": _demo,
}


def main() -> None:
    """Entry point of the `llm-pgcache` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(cli()))
