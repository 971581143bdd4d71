"""How long the `llm-pgcache` command takes to start and finish: `--help`, and
`healthcheck` and `purge` against an empty, migrated table.

    python benchmarks/cli_start.py [--runs 10]

The physical limit, measured in the same run: the Python interpreter starting and exiting
(`python -c pass`), and for the commands that reach PostgreSQL, that plus one connection
that runs one query (`python -c` with asyncpg). Medians of `--runs` runs each. Uses
LLM_PGCACHE_DSN when set, else a fresh embedded PostgreSQL in a temporary directory.
Writes docs/benchmarks/cli_start.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

OUT = Path(__file__).resolve().parents[1] / "docs" / "benchmarks"
SCRIPT = Path(sys.executable).with_name("llm-pgcache")
ONE_QUERY = (
    "import asyncio, asyncpg, sys\n"
    "async def main():\n"
    "    c = await asyncpg.connect(sys.argv[1])\n"
    "    await c.fetchval('SELECT count(*) FROM llm_cache')\n"
    "    await c.close()\n"
    "asyncio.run(main())\n"
)


def seconds(argv: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)  # noqa: S603 - our own argv
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as data_dir:
        dsn = os.environ.get("LLM_PGCACHE_DSN") or embedded.start_sync(Path(data_dir) / "pg")
        asyncio.run(migrate.upgrade(dsn))
        raw = asyncpg_dsn(dsn)
        limits = {
            "interpreter": seconds([sys.executable, "-c", "pass"], args.runs),
            "one_query": seconds([sys.executable, "-c", ONE_QUERY, raw], args.runs),
        }
        figures = {
            "--help": (seconds([str(SCRIPT), "--help"], args.runs), "interpreter"),
            "healthcheck": (
                seconds([str(SCRIPT), "healthcheck", "--dsn", dsn], args.runs),
                "one_query",
            ),
            "purge": (seconds([str(SCRIPT), "purge", "--dsn", dsn], args.runs), "one_query"),
        }
    results = {
        "runs": args.runs,
        "limits_s": limits,
        "commands": {
            name: {"seconds": took, "limit": limit, "limit_s": limits[limit]}
            for name, (took, limit) in figures.items()
        },
    }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "cli_start.json").write_text(json.dumps(results, indent=2) + "\n")
    for name, figure in results["commands"].items():
        print(
            f"{name:<12} {figure['seconds'] * 1000:6.0f} ms   limit ({figure['limit']}) "
            f"{figure['limit_s'] * 1000:5.0f} ms"
        )


if __name__ == "__main__":
    main()
