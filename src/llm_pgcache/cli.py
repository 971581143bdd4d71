"""The `llm-pgcache` command: thin subcommands over the library.

Errors print one line to stderr and exit 1 (2 for usage errors); no tracebacks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Sequence
from dataclasses import asdict

from llm_pgcache import embedded, migrate
from llm_pgcache.cache import Cache
from llm_pgcache.config import (
    ENV_DSN,
    ENV_DSN_FALLBACK,
    ENV_EMBEDDED_DIR,
    ENV_EMBEDDING_DIM,
    Settings,
    parse_embedding_dim,
    redact_dsn,
)
from llm_pgcache.demo import choose_upstream, run_demo
from llm_pgcache.errors import LLMPgCacheError
from llm_pgcache.store.postgres import SCHEMA_REVISION

EXIT_OK = 0
EXIT_ERROR = 1


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
    migrate_cmd.add_argument("--revision", default="head", help="target revision (default: head)")

    stats_cmd = command("stats", "Report entries, expired rows, sizes and top models.")
    stats_cmd.add_argument("--namespace", help="only this namespace (default: all)")
    stats_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    command("healthcheck", "Exit 0 when the database answers and its schema is current.")
    command("demo", "Run a short scripted session through the cache and print what answered.")
    return parser


async def cli(argv: Sequence[str] | None = None) -> int:
    """Run the command line `argv`; returns the exit code."""
    args = build_parser().parse_args(argv)
    settings = Settings.from_env()
    dsn: str | None = args.dsn or settings.dsn
    try:
        if args.command == "migrate":
            return await _migrate(dsn, args.revision, args.embedding_dim)
        async with Cache.connect(dsn, namespace="default", strict=True) as cache:
            if args.command == "stats":
                return await _stats(cache, args.namespace, as_json=args.json)
            if args.command == "healthcheck":
                print(f"ok: schema at revision {SCHEMA_REVISION}")
                return EXIT_OK
            label, upstream = choose_upstream()
            await run_demo(cache, upstream, label, sys.stdout)
            return EXIT_OK
    except LLMPgCacheError as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"llm-pgcache {args.command}: error: {message}", file=sys.stderr)
        return EXIT_ERROR


async def _migrate(dsn: str | None, revision: str, embedding_dim: int | None) -> int:
    if dsn is None:
        dsn = await embedded.start()
    await migrate.upgrade(dsn, revision=revision, embedding_dim=embedding_dim)
    print(f"migrated {redact_dsn(dsn)} to {revision}")
    return EXIT_OK


async def _stats(cache: Cache, namespace: str | None, *, as_json: bool) -> int:
    table = (await cache.stats(namespace=namespace, all_namespaces=namespace is None)).table
    if as_json:
        print(json.dumps(asdict(table)))
        return EXIT_OK
    print(f"namespace:       {namespace or '(all)'}")
    print(f"entries:         {table.entries}")
    print(f"expired:         {table.expired} (not yet purged)")
    print(f"stored tokens:   {table.stored_tokens}")
    print(f"table size:      {_size(table.table_bytes)}")
    print(f"index size:      {_size(table.index_bytes)}")
    print("top models:      " + (", ".join(f"{m} ({n})" for m, n in table.top_models) or "-"))
    return EXIT_OK


def _size(n_bytes: int) -> str:
    if n_bytes < 1024:
        return f"{n_bytes} B"
    if n_bytes < 1024**2:
        return f"{n_bytes / 1024:.1f} KiB"
    if n_bytes < 1024**3:
        return f"{n_bytes / 1024**2:.1f} MiB"
    return f"{n_bytes / 1024**3:.1f} GiB"


def main() -> None:
    """Entry point of the `llm-pgcache` console script."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    sys.exit(asyncio.run(cli()))
