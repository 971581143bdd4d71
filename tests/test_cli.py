"""The command line: subcommands through `cli(argv)`, one run of the installed script."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from llm_pgcache import HashingEmbedder
from llm_pgcache.cli import cli
from llm_pgcache.demo import DEMO_NAMESPACE

from .conftest import FreshDatabase, connect_cache

Factory = Callable[..., dict[str, object]]


async def test_migrate_then_healthcheck(
    create_database: FreshDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = await create_database()
    assert await cli(["healthcheck", "--dsn", dsn]) == 1
    assert "llm-pgcache migrate" in capsys.readouterr().err
    assert await cli(["migrate", "--dsn", dsn, "--embedding-dim", "384"]) == 0
    assert "migrated" in capsys.readouterr().out
    assert await cli(["healthcheck", "--dsn", dsn]) == 0
    assert "ok" in capsys.readouterr().out


async def test_stats(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with connect_cache(dsn, namespace=namespace) as cache:
        await cache.set(make_request("a"), make_response())
        await cache.set(make_request("b", model="gpt-4o"), make_response())
    assert await cli(["stats", "--dsn", dsn, "--namespace", namespace, "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["entries"] == 2
    assert stats["expired"] == 0
    assert sorted(map(tuple, stats["top_models"])) == [("gpt-4o", 1), ("gpt-4o-mini", 1)]

    assert await cli(["stats", "--dsn", dsn, "--namespace", namespace]) == 0
    text = capsys.readouterr().out
    assert "entries:         2" in text
    assert "gpt-4o (1)" in text


async def test_stats_reads_the_dsn_from_the_environment(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("LLM_PGCACHE_DSN", raising=False)
    monkeypatch.setenv("DATABASE_URL", dsn)
    assert await cli(["stats", "--json"]) == 0
    assert "entries" in json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(
    ("dsn", "message"),
    [
        ("mysql://root@localhost/db", "not a PostgreSQL DSN"),
        ("postgresql://nobody@127.0.0.1:1/nothing", "cannot connect|Connect call failed"),
    ],
)
@pytest.mark.parametrize("command", ["stats", "healthcheck", "migrate"])
async def test_errors_are_one_line_and_exit_1(
    command: str, dsn: str, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await cli([command, "--dsn", dsn]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.count("\n") == 1
    assert re.search(message, captured.err)
    assert "Traceback" not in captured.err


async def test_demo_runs_offline(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert await cli(["demo", "--dsn", dsn]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "OFFLINE STAND-IN" in lines[0]
    assert lines[1] == "embedder: hashing:v1:1536"
    tiers = [line[:18].strip() for line in lines[3:12]]
    assert tiers == [
        *["miss -> upstream"] * 3,
        *["postgres-exact"] * 3,
        *["postgres-semantic"] * 2,
        "miss -> upstream",  # the near miss: "capital of Spain" is not "capital of France"
    ]
    assert "hits 5, misses 4" in lines[-1]
    assert f"4 entries in namespace {DEMO_NAMESPACE!r}" in lines[-1]


async def test_installed_entry_point(dsn: str) -> None:
    script = Path(sys.executable).parent / "llm-pgcache"
    process = await asyncio.create_subprocess_exec(
        str(script),
        "healthcheck",
        "--dsn",
        dsn,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    assert stdout.decode().startswith("ok")

    process = await asyncio.create_subprocess_exec(
        str(script), "--help", stdout=asyncio.subprocess.PIPE
    )
    stdout, _ = await process.communicate()
    assert process.returncode == 0
    assert "LLM_PGCACHE_DSN" in stdout.decode()


async def test_reindex(
    create_database: FreshDatabase,
    make_request: Factory,
    make_response: Factory,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = await create_database()
    assert await cli(["migrate", "--dsn", dsn]) == 0
    assert await cli(["reindex", "--dsn", dsn, "--if-needed"]) == 0
    assert "no rebuild needed: 0 rows" in capsys.readouterr().out.splitlines()[-1]
    async with connect_cache(dsn, embedder=HashingEmbedder(1536)) as cache:
        for i in range(30):
            await cache.set(make_request(f"question {i}"), make_response())
    assert await cli(["reindex", "--dsn", dsn, "--if-needed"]) == 0
    assert (
        "rebuilt the index: 30 rows, ivfflat, lists 1 (was never built)" in capsys.readouterr().out
    )
    assert await cli(["reindex", "--dsn", dsn, "--if-needed"]) == 0
    assert "no rebuild needed: 30 rows" in capsys.readouterr().out
    assert await cli(["reindex", "--dsn", dsn, "--lists", "3"]) == 0
    assert "ivfflat, lists 3 (was ivfflat, lists 1 (30 rows))" in capsys.readouterr().out


async def test_tune_threshold_reproduces_the_documented_default(
    repo_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PGCACHE_EMBEDDING_DIM"):
        monkeypatch.delenv(name, raising=False)
    pairs = repo_root / "benchmarks" / "data" / "paraphrase_pairs.jsonl"
    assert await cli(["tune-threshold", str(pairs), "--precision", "0.95"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "62 pairs (30 matching), embedder hashing:v1:1536"
    assert len(out) == 2 + 50 + 1  # header lines, thresholds 0.50..0.99, the answer
    assert out[-1].startswith(
        f"threshold for precision >= 0.95: {HashingEmbedder.suggested_threshold:.2f} "
    )


async def test_tune_threshold_with_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "pairs.jsonl"
    bad.write_text('{"a": "x", "b": "y", "match": true}\n{"a": "x"}\n')
    assert await cli(["tune-threshold", str(bad)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert "pairs.jsonl:2" in err
    assert await cli(["tune-threshold", str(tmp_path / "missing.jsonl")]) == 1
    assert "cannot read" in capsys.readouterr().err


LOOKALIKES = Path(__file__).resolve().parents[1] / "benchmarks" / "data" / "lookalike_pairs.jsonl"


@pytest.mark.parametrize("mode", [[], ["--stream"]])
async def test_eval_measures_the_guard_on_labelled_pairs(
    dsn: str,
    mode: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Pair mode and stream mode (through the cache, in a scratch namespace that is
    deleted after): the look-alike guard serves fewer false hits than the threshold
    alone, and every rate comes with its interval."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PGCACHE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    reports = {}
    for guard in ([], ["--no-guard"]):
        args = ["eval", str(LOOKALIKES), "--dsn", dsn, "--threshold", "0.5", "--json"]
        assert await cli([*args, *mode, *guard]) == 0
        reports[bool(guard)] = json.loads(capsys.readouterr().out)
    guarded, plain = reports[False], reports[True]
    assert (guarded["guard"], plain["guard"]) == (True, False)
    assert guarded["mode"] == ("stream" if mode else "pair")
    rate, low, high = guarded["all"]["false_hit_rate"]
    assert low <= rate <= high
    assert guarded["all"]["false_hit_rate"][0] < plain["all"]["false_hit_rate"][0]
    if not mode:  # each pair alone: no antonym is served (in a stream, a neighbour may be)
        assert guarded["by_kind"]["antonym"]["false_hit_rate"][0] == 0.0
    assert guarded["all"]["lookups"] == 50


async def test_eval_refuses_a_bad_label(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"text_a": "a", "text_b": "b", "label": 2}\n')
    assert await cli(["eval", str(path)]) == 1
    assert "a and b must be text, match a boolean" in capsys.readouterr().err


async def test_eval_with_a_judge_inline_and_in_the_background(
    dsn: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A judge that knows the labels: inline it serves no false hit (each pair alone and
    in a stream); in the background the serve threshold is reported with its evidence."""
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "LLM_PGCACHE_LOCAL_MODEL"):
        monkeypatch.delenv(name, raising=False)
    base = ["eval", str(LOOKALIKES), "--dsn", dsn, "--threshold", "0.5", "--json"]
    for mode in ([], ["--stream"]):
        assert await cli([*base, *mode, "--no-guard", "--judge", "labels"]) == 0
        judged = json.loads(capsys.readouterr().out)
        assert (judged["judge"], judged["verify"]) == ("labels", "inline")
        assert judged["all"]["false_hit_rate"][0] == 0.0
        assert judged["all"]["recall"][0] > 0.0
        assert await cli([*base, *mode, "--no-guard", "--judge", "labels:0"]) == 0
        wrong = json.loads(capsys.readouterr().out)  # always wrong: serves only look-alikes
        assert wrong["all"]["recall"][0] == 0.0
        assert wrong["all"]["false_hit_rate"][0] > 0.0

    background = [*base, "--stream", "--judge", "labels", "--verify", "background"]
    assert await cli([*background, "--max-false-hit-rate", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["verify"] == "background"
    evidence = report["serve_threshold"]
    assert evidence[0]["threshold"] is None  # nothing judged yet
    assert evidence[-1]["judged"] > 0
    assert await cli(["eval", str(LOOKALIKES), "--verify", "background", "--judge", "labels"]) == 1
    assert "--verify background needs --judge and --stream" in capsys.readouterr().err
    assert await cli(["eval", str(LOOKALIKES), "--judge", "oracle"]) == 1
    assert "--judge takes" in capsys.readouterr().err


async def test_the_command_line_defers_its_heavy_imports(dsn: str) -> None:
    """`--help` loads no database driver, numpy, alembic or openai; running `healthcheck`
    and `purge` loads no numpy, alembic, SQLAlchemy or openai (benchmarks/cli_start.py
    times them)."""
    probe = (
        "import asyncio, sys\n"
        "from llm_pgcache.cli import build_parser, cli\n"
        "build_parser().format_help()\n"
        "help_loaded = set(sys.modules)\n"
        "assert asyncio.run(cli(['healthcheck', '--dsn', sys.argv[1]])) == 0\n"
        "assert asyncio.run(cli(['purge', '--dsn', sys.argv[1], '--dry-run'])) == 0\n"
        "print(' '.join(sorted(help_loaded)))\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-c", probe, dsn, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    assert process.returncode == 0
    help_line, jobs_line = out.decode().splitlines()[-2:]
    roots = [{name.split(".")[0] for name in line.split()} for line in (help_line, jobs_line)]
    assert not roots[0] & {"asyncpg", "numpy", "alembic", "sqlalchemy", "openai", "redis"}
    assert not roots[1] & {"numpy", "alembic", "sqlalchemy", "openai"}
    assert "llm_pgcache.cache.facade" not in jobs_line.split()
