"""The `llm-pgcache` command: thin subcommands over the library.

Errors print one line to stderr and exit 1 (2 for usage errors); no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from llm_pgcache.config import (
    ENV_DSN,
    ENV_DSN_FALLBACK,
    ENV_EMBEDDED_DIR,
    ENV_EMBEDDING_DIM,
    ENV_EMBEDDING_TYPE,
    Settings,
    parse_embedding_dim,
    parse_embedding_type,
)
from llm_pgcache.errors import EXIT_ERROR, LLMPgCacheError
from llm_pgcache.postgres.purge import DEFAULT_BATCH_SIZE


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

    partition_cmd = command(
        "partition",
        "Partition llm_cache by hash of namespace (each namespace's rows in one partition, "
        "as on one shard of a distributed PostgreSQL); copies the rows in one transaction, "
        "the table locked meanwhile. Then run `reindex`: one ANN index per partition.",
    )
    partition_cmd.add_argument(
        "--partitions", type=int, required=True, help="how many partitions (2 to 1024)"
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

    add_evaluation_commands(command)

    command("healthcheck", "Exit 0 when the database answers and its schema is current.")
    command("demo", "Run a short scripted session through the cache and print what answered.")
    add_serve_command(command)
    return parser


def add_serve_command(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    serve = command("serve", "Run an OpenAI-compatible caching proxy in front of an upstream API.")
    serve.add_argument("--upstream", required=True, help="the API's base URL, with its /v1")
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on")
    serve.add_argument("--port", type=int, default=8080)
    serve.add_argument("--workers", type=int, default=1, help="processes sharing the port")
    serve.add_argument(
        "--upstream-key-env",
        metavar="NAME",
        help="environment variable with the key sent upstream instead of the caller's",
    )
    serve.add_argument(
        "--admin-token-env",
        metavar="NAME",
        help="environment variable with the admin API's bearer token (no admin API without)",
    )
    serve.add_argument(
        "--tenant-map",
        type=Path,
        metavar="FILE",
        help="JSON object of sha256 hex of an API key -> namespace: namespaces by key only",
    )
    serve.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    serve.add_argument("--upstream-timeout", type=float, default=600.0, help="seconds")
    serve.add_argument("--max-upstream-in-flight", type=int, default=64, help="per worker")
    serve.add_argument("--namespace", help="the namespace of callers that name none")
    serve.add_argument(
        "--embedder",
        help="semantic lookups with this embedder: hashing, local, openai[:MODEL] or a model "
        "directory (default: exact lookups only)",
    )
    serve.add_argument(
        "--memory-entries",
        type=int,
        default=0,
        help="entries of each worker's in-process tier (default 0: none)",
    )
    serve.add_argument("--redis", metavar="URL", help="a Redis tier shared by the workers")


Command = Callable[[argparse.Namespace, Settings], Awaitable[int]]

# Each subcommand's implementation, imported only to run it.
COMMANDS: dict[str, str] = {
    "migrate": "llm_pgcache.commands:run_migrate",
    "stats": "llm_pgcache.commands:run_stats",
    "healthcheck": "llm_pgcache.jobs:run_healthcheck",
    "reindex": "llm_pgcache.commands:run_reindex",
    "tune-threshold": "llm_pgcache.evaluation:tune",
    "eval": "llm_pgcache.evaluation:evaluate_pairs",
    "purge": "llm_pgcache.jobs:run_purge",
    "partition": "llm_pgcache.jobs:run_partition",
    "warm": "llm_pgcache.commands:run_warm",
    "demo": "llm_pgcache.commands:run_demo_command",
    "serve": "llm_pgcache.server.run:run_serve",
}


async def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`; returns the exit code."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    args.dsn = args.dsn or settings.dsn
    try:
        module, _, function = COMMANDS[args.command].partition(":")
        run: Command = getattr(importlib.import_module(module), function)
        return await run(args, settings)
    except LLMPgCacheError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"llm-pgcache {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


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


def add_evaluation_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The `eval` and `tune-threshold` subcommands, made with the CLI's `command`."""
    eval_cmd = command(
        "eval",
        "Measure the cache's semantic decisions (threshold, look-alike guard, judge) on "
        "labelled pairs: false hits, recall and precision with 95-percent intervals, per kind.",
    )
    eval_cmd.add_argument(
        "pairs",
        type=Path,
        help='JSONL of {"a", "b", "match"} or {"text_a", "text_b", "label", "kind"} lines',
    )
    eval_cmd.add_argument(
        "--threshold", type=float, help="similarity threshold (default: the embedder's)"
    )
    guard = eval_cmd.add_mutually_exclusive_group()
    guard.add_argument("--no-guard", action="store_true", help="without the look-alike guard")
    guard.add_argument(
        "--guard",
        action="store_true",
        help="with the look-alike guard, also with a judge (the cache's default: the guard "
        "without a judge, none with one)",
    )
    eval_cmd.add_argument(
        "--stream",
        action="store_true",
        help="store every a in a scratch namespace and look every b up through the cache "
        "(a wrong neighbour can win), instead of each pair alone",
    )
    add_embedder_argument(eval_cmd)
    eval_cmd.add_argument(
        "--judge",
        help="labels[:ACCURACY] (the set's labels, right with that probability), llm:MODEL "
        "(OPENAI_BASE_URL's server) or cross-encoder:PATH",
    )
    eval_cmd.add_argument(
        "--verify",
        choices=("inline", "background"),
        default="inline",
        help="when the judge is asked (background: stream mode only)",
    )
    eval_cmd.add_argument(
        "--max-false-hit-rate",
        type=float,
        help="stream mode: serve on similarity alone only under this bound, from the "
        "verdicts so far (default with --verify background: 0.01)",
    )
    eval_cmd.add_argument("--limit", type=int, help="the first N pairs only")
    eval_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    tune_cmd = command(
        "tune-threshold",
        "Print precision, recall, F1 and false-hit rate per similarity threshold for "
        "labelled pairs, embedded with the configured embedder; --load records them as "
        "judgments, the evidence of a cache's max_false_hit_rate.",
    )
    tune_cmd.add_argument(
        "pairs", type=Path, help='JSONL file of {"a": text, "b": text, "match": bool} lines'
    )
    tune_cmd.add_argument(
        "--precision",
        type=float,
        default=0.95,
        help="report the lowest threshold reaching this precision (default: 0.95)",
    )
    add_embedder_argument(tune_cmd)
    tune_cmd.add_argument(
        "--load",
        action="store_true",
        help="record every pair (its similarity and label) as a judgment of --namespace",
    )
    tune_cmd.add_argument(
        "--namespace", default="default", help="the namespace --load records for (default)"
    )


def add_embedder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--embedder",
        help="hashing, local (all-MiniLM-L6-v2), openai[:MODEL] or a model directory "
        "(default: the configured one)",
    )


def main() -> None:
    """Entry point of the `llm-pgcache` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(cli()))
