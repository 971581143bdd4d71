"""What cron and health probes run, `llm-pgcache purge` and `llm-pgcache healthcheck`, on
the PostgreSQL store alone: no façade, no embedder, no numpy, so that they start in
about the time of one connection (`docs/benchmarks.md`); and `llm-pgcache partition`."""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from llm_pgcache.cache.opening import open_store
from llm_pgcache.config import Settings
from llm_pgcache.errors import EXIT_OK
from llm_pgcache.postgres.driver import SCHEMA_REVISION
from llm_pgcache.postgres.pool import DEFAULT_STATEMENT_TIMEOUT
from llm_pgcache.postgres.purge import PurgeLimits, purge
from llm_pgcache.postgres.store import PostgresStore


async def connect_store(dsn: str | None) -> PostgresStore:
    """The store of `dsn` (the embedded server without one), schema checked, on one
    connection: a job runs one thing at a time."""
    return await open_store(
        dsn,
        min_size=1,
        max_size=2,
        embedded_dir=None,
        statement_timeout=DEFAULT_STATEMENT_TIMEOUT,
        listen_dsn=None,
        pooler=None,
        read_dsn=None,
    )


async def run_healthcheck(args: argparse.Namespace, settings: Settings) -> int:
    store = await connect_store(args.dsn)
    await store.close()
    print(f"ok: schema at revision {SCHEMA_REVISION}")
    return EXIT_OK


async def run_purge(args: argparse.Namespace, settings: Settings) -> int:
    limits = PurgeLimits(
        batch_size=args.batch_size, max_rows=args.max_rows, max_bytes=args.max_bytes
    )
    store = await connect_store(args.dsn)
    try:
        while True:
            bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not args.dry_run else None
            report = await purge(
                store, limits, dry_run=args.dry_run, progress=bar.update if bar else None
            )
            if bar is not None:
                bar.finish()
            print(report.summary(), flush=True)
            if args.every is None:
                return EXIT_OK
            await asyncio.sleep(args.every)
    finally:
        await store.close()


async def run_partition(args: argparse.Namespace, settings: Settings) -> int:
    from llm_pgcache.postgres.partitions import partition_table  # noqa: PLC0415 - SQLAlchemy

    store = await connect_store(args.dsn)
    try:
        report = await partition_table(
            store.primary,
            args.partitions,
            embedding_dim=store.embedding_dim,
            embedding_type=store.embedding_type,
        )
    finally:
        await store.close()
    print(report.summary())
    return EXIT_OK


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
