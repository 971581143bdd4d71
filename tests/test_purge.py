"""The expiry purge: only expired rows go, in batches, alone, and safely interrupted."""

from __future__ import annotations

import asyncio
import os
import pty
import signal
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from llm_pgcache import request_keys
from llm_pgcache.cli import cli, parse_size
from llm_pgcache.config import asyncpg_dsn

from .conftest import MigratedDatabase, connect_cache

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def purge_dsn(create_migrated: MigratedDatabase) -> str:
    """A database of the test's own: the purge works across namespaces."""
    return await create_migrated()


@pytest.fixture
async def pg(purge_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(asyncpg_dsn(purge_dsn))
    yield connection
    await connection.close()


async def bulk_insert(pg: asyncpg.Connection, count: int, *, expired: bool, start: int = 0) -> None:
    """Rows straight into the table (COPY), expired an hour ago or live for a day."""
    when = datetime.now(UTC) + (timedelta(hours=-1) if expired else timedelta(days=1))
    await pg.copy_records_to_table(
        "llm_cache",
        columns=["namespace", "cache_key", "scope_key", "model", "response", "expires_at"],
        records=[
            ("bulk", (start + i).to_bytes(32, "big"), bytes(32), "m", f'{{"n": {i}}}', when)
            for i in range(count)
        ],
    )


async def counts(pg: asyncpg.Connection) -> tuple[int, int]:
    """(expired rows, live rows)."""
    row = await pg.fetchrow(
        "SELECT count(*) FILTER (WHERE expires_at <= now()) AS expired, "
        "count(*) FILTER (WHERE expires_at IS NULL OR expires_at > now()) AS live FROM llm_cache"
    )
    return row["expired"], row["live"]


async def test_purges_200k_expired_rows_while_lookups_go_on(
    purge_dsn: str,
    pg: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
    record_property: Callable[[str, object], None],
) -> None:
    await bulk_insert(pg, 200_000, expired=True)
    await bulk_insert(pg, 5_000, expired=False, start=1_000_000)
    async with connect_cache(purge_dsn, namespace="live") as cache:
        for i in range(50):
            await cache.set(make_request(f"live {i}"), make_response())
        stop = asyncio.Event()
        latencies: list[float] = []

        async def lookups() -> None:
            i = 0
            while not stop.is_set():
                started = time.perf_counter()
                hit = await cache.get(make_request(f"live {i % 50}"))
                latencies.append(time.perf_counter() - started)
                assert hit is not None  # live entries are served throughout
                i += 1

        readers = [asyncio.create_task(lookups()) for _ in range(4)]
        report = await cache.purge(batch_size=5000)
        stop.set()
        await asyncio.gather(*readers)
    assert report.action == "purged"
    assert (report.expired, report.evicted) == (200_000, 0)
    assert await counts(pg) == (0, 5_050)
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    record_property("lookup_p99_ms_during_purge", round(p99, 2))
    print(f"\n{len(latencies)} lookups during the purge, p99 {p99:.2f} ms")
    assert len(latencies) > 100


async def test_two_purges_at_once(purge_dsn: str, pg: asyncpg.Connection) -> None:
    await bulk_insert(pg, 30_000, expired=True)
    async with connect_cache(purge_dsn) as a, connect_cache(purge_dsn) as b:
        first, second = await asyncio.gather(a.purge(batch_size=500), b.purge(batch_size=500))
    assert sorted([first.action, second.action]) == ["locked", "purged"]
    assert first.expired + second.expired == 30_000
    assert await counts(pg) == (0, 0)


async def test_a_purge_killed_midway_leaves_a_consistent_table(
    purge_dsn: str, pg: asyncpg.Connection
) -> None:
    await bulk_insert(pg, 100_000, expired=True)
    await bulk_insert(pg, 1_000, expired=False, start=1_000_000)
    script = Path(sys.executable).parent / "llm-pgcache"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "purge",
        "--dsn",
        purge_dsn,
        "--batch-size",
        "200",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    while (await counts(pg))[0] > 90_000:  # noqa: ASYNC110 - polls the database
        # let it delete a few batches
        await asyncio.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    await process.wait()
    while await pg.fetchval(  # noqa: ASYNC110 - polls the database
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND pid <> "
        "pg_backend_pid() AND query LIKE '%DELETE FROM llm_cache%'"
    ):
        await asyncio.sleep(0.01)  # the batch the kill interrupted commits or not, alone
    expired, live = await counts(pg)
    assert 0 < expired < 100_000
    assert expired % 200 == 0  # whole batches only: each one is atomic
    assert live == 1_000
    async with connect_cache(purge_dsn) as cache:
        # The killed run's lease holds until it expires (a minute after its last renewal)
        assert (await cache.purge()).action == "locked"
        await pg.execute("UPDATE llm_pgcache_leases SET expires_at = now() - interval '1 s'")
        report = await cache.purge()  # as if that minute had passed
    assert report.expired == expired
    assert await counts(pg) == (0, 1_000)


async def test_size_cap_evicts_the_least_recently_hit(
    purge_dsn: str, pg: asyncpg.Connection, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(purge_dsn, namespace="cap") as cache:
        for i in range(10):
            await cache.set(make_request(f"q{i}"), make_response())
        for i in (2, 5, 7):
            assert await cache.get(make_request(f"q{i}")) is not None
        dry = await cache.purge(max_rows=3, dry_run=True)
        assert (dry.action, dry.evicted) == ("dry-run", 7)
        assert await counts(pg) == (0, 10)
        report = await cache.purge(max_rows=3)
        assert report.evicted == 7
        kept = {i for i in range(10) if await cache.get(make_request(f"q{i}")) is not None}
    assert kept == {2, 5, 7}
    hit_counts = await pg.fetch("SELECT hit_count, last_hit_at FROM llm_cache")
    assert all(r["hit_count"] >= 1 and r["last_hit_at"] is not None for r in hit_counts)


async def test_hit_counts_are_written_behind(
    purge_dsn: str, pg: asyncpg.Connection, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(purge_dsn, namespace="counts") as cache:
        await cache.set(make_request(), make_response())
        for _ in range(25):
            await cache.get(make_request())
        # Not one UPDATE per hit: nothing is written until the flush.
        assert await pg.fetchval("SELECT hit_count FROM llm_cache") == 0
    key = request_keys(make_request()).exact_key
    assert await pg.fetchval("SELECT hit_count FROM llm_cache WHERE cache_key = $1", key) == 25


async def test_purge_cli(
    purge_dsn: str, pg: asyncpg.Connection, capsys: pytest.CaptureFixture[str]
) -> None:
    await bulk_insert(pg, 1_234, expired=True)
    assert await cli(["purge", "--dsn", purge_dsn, "--dry-run"]) == 0
    assert capsys.readouterr().out.startswith("would delete 1234 expired rows")
    assert await cli(["purge", "--dsn", purge_dsn, "--batch-size", "100"]) == 0
    out, err = capsys.readouterr()
    assert out.startswith("deleted 1234 expired rows and evicted 0")
    assert out.count("\n") == 1
    assert err == ""  # no progress bar without a terminal
    assert await counts(pg) == (0, 0)
    assert await cli(["purge", "--dsn", purge_dsn, "--batch-size", "0"]) == 1


async def test_purge_every(purge_dsn: str, pg: asyncpg.Connection) -> None:
    script = Path(sys.executable).parent / "llm-pgcache"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "purge",
        "--dsn",
        purge_dsn,
        "--every",
        "0.1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    first = await asyncio.wait_for(process.stdout.readline(), 30)
    await bulk_insert(pg, 10, expired=True)
    while (await counts(pg))[0]:  # noqa: ASYNC110 - polls the database
        await asyncio.sleep(0.05)
    process.terminate()
    await process.wait()
    assert first.startswith(b"deleted 0 expired rows")


async def test_purging_in_the_background(purge_dsn: str, pg: asyncpg.Connection) -> None:
    async with connect_cache(purge_dsn) as cache:
        cache.start_purging(every=0.05)
        await bulk_insert(pg, 100, expired=True)
        for _ in range(200):
            if (await counts(pg))[0] == 0:
                break
            await asyncio.sleep(0.05)
    assert await counts(pg) == (0, 0)


def test_parse_size() -> None:
    assert [parse_size(s) for s in ("123", "1KB", "500MB", "2GiB", "1.5 GB")] == [
        123,
        1024,
        500 * 1024**2,
        2 * 1024**3,
        int(1.5 * 1024**3),
    ]


async def test_progress_bar_on_a_terminal(purge_dsn: str, pg: asyncpg.Connection) -> None:
    """stderr on a pseudo-terminal: the purge draws a bar; the summary stays on stdout."""
    await bulk_insert(pg, 3_000, expired=True)
    controller, terminal = pty.openpty()
    script = Path(sys.executable).parent / "llm-pgcache"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "purge",
        "--dsn",
        purge_dsn,
        "--batch-size",
        "500",
        stdout=asyncio.subprocess.PIPE,
        stderr=terminal,
    )
    stdout, _ = await process.communicate()
    os.close(terminal)
    drawn = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # the terminal is gone: all was read
            break
        if not chunk:
            break
        drawn += chunk
    os.close(controller)
    assert process.returncode == 0
    assert b"[" + b"#" * 30 + b"] 3000/3000 rows" in drawn
    assert stdout.startswith(b"deleted 3000 expired rows")
