"""Migrations: round trip, no drift from schema.py, one head, dimension from the environment."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from llm_pgcache import Cache, SchemaError
from llm_pgcache.config import asyncpg_dsn, sqlalchemy_url
from llm_pgcache.postgres import migrate
from llm_pgcache.postgres.driver import SCHEMA_REVISION
from llm_pgcache.postgres.schema import TABLE_NAME, VERSION_TABLE, build_metadata

from .conftest import FreshDatabase

# The catalog facts that define our schema: columns with types, defaults and nullability,
# and every index's full definition (method, opclass, WITH options).
CATALOG = """
SELECT 'column' AS kind, c.table_name || '.' || column_name || ' '
       || format_type(a.atttypid, a.atttypmod)
       || ' null=' || is_nullable || ' default=' || coalesce(column_default, '')
       || ' identity=' || is_identity AS fact
FROM information_schema.columns c
JOIN pg_attribute a ON a.attrelid = c.table_name::regclass AND a.attname = c.column_name
WHERE c.table_name = ANY($1::text[])
UNION ALL
SELECT 'index', indexdef FROM pg_indexes WHERE tablename = ANY($1::text[])
UNION ALL
SELECT 'constraint', conname || ' ' || pg_get_constraintdef(oid)
FROM pg_constraint WHERE conrelid::regclass::text = ANY($1::text[])
UNION ALL
SELECT 'comment', relname || ': ' || coalesce(obj_description(oid, 'pg_class'), '')
FROM pg_class WHERE relname = ANY($1::text[])
ORDER BY 1, 2
"""
OWN_TABLES = sorted(build_metadata().tables)


async def catalog(dsn: str) -> list[tuple[str, str]]:
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        return [(row["kind"], row["fact"]) for row in await connection.fetch(CATALOG, OWN_TABLES)]
    finally:
        await connection.close()


async def table_exists(dsn: str) -> bool:
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        return bool(await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", TABLE_NAME))
    finally:
        await connection.close()


async def test_upgrade_downgrade_upgrade(create_database: FreshDatabase) -> None:
    dsn = await create_database()
    await migrate.upgrade(dsn)
    assert await table_exists(dsn)
    first = await catalog(dsn)
    await migrate.downgrade(dsn)
    assert not await table_exists(dsn)
    await migrate.upgrade(dsn)
    assert await catalog(dsn) == first


async def test_migrations_build_exactly_the_metadata(create_database: FreshDatabase) -> None:
    migrated, from_metadata = await create_database(), await create_database()
    await migrate.upgrade(migrated)

    engine = create_async_engine(sqlalchemy_url(from_metadata))
    try:
        async with engine.begin() as connection:
            await connection.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
            await connection.run_sync(build_metadata().create_all)
    finally:
        await engine.dispose()

    migrated_catalog = await catalog(migrated)
    assert any("ivfflat" in fact and "vector_cosine_ops" in fact for _, fact in migrated_catalog)
    assert migrated_catalog == await catalog(from_metadata)


async def test_autogenerate_finds_no_drift(dsn: str) -> None:
    def diff(connection: Connection) -> list[object]:
        context = MigrationContext.configure(
            connection,
            opts={
                "version_table": VERSION_TABLE,
                "include_name": lambda name, type_, _: type_ != "table" or name in OWN_TABLES,
            },
        )
        return list(compare_metadata(context, build_metadata()))

    engine = create_async_engine(sqlalchemy_url(dsn))
    try:
        async with engine.connect() as connection:
            assert await connection.run_sync(diff) == []
    finally:
        await engine.dispose()


def test_one_head_which_the_code_expects() -> None:
    script = ScriptDirectory(str(migrate.script_location()))
    assert script.get_heads() == [SCHEMA_REVISION]


async def run_alembic(repo_root: Path, env: dict[str, str], *args: str) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "alembic",
        *args,
        cwd=repo_root,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, stderr = await process.communicate()
    assert process.returncode is not None
    return process.returncode, stderr.decode()


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LLM_PGCACHE_")}
    env.pop("DATABASE_URL", None)
    return env


@pytest.mark.parametrize("how", ["env", "x-argument"])
async def test_alembic_cli_from_the_repo_root(
    how: str, create_database: FreshDatabase, repo_root: Path
) -> None:
    dsn = await create_database()
    env = {**clean_env(), "LLM_PGCACHE_DSN": dsn}
    args = ["upgrade", "head"]
    if how == "env":
        env["LLM_PGCACHE_EMBEDDING_DIM"] = "384"
    else:
        args = ["-x", "embedding_dim=384", *args]
    code, stderr = await run_alembic(repo_root, env, *args)
    assert code == 0, stderr
    facts = await catalog(dsn)
    assert ("column", "llm_cache.embedding vector(384) null=YES default= identity=NO") in facts

    code, stderr = await run_alembic(repo_root, env, "downgrade", "base")
    assert code == 0, stderr
    assert not await table_exists(dsn)


async def test_alembic_takes_database_url_as_fallback(
    create_database: FreshDatabase, repo_root: Path
) -> None:
    dsn = await create_database()
    code, stderr = await run_alembic(
        repo_root, {**clean_env(), "DATABASE_URL": dsn}, "upgrade", "head"
    )
    assert code == 0, stderr
    assert await table_exists(dsn)


async def test_alembic_without_a_dsn_says_so(repo_root: Path) -> None:
    code, stderr = await run_alembic(repo_root, clean_env(), "upgrade", "head")
    assert code != 0
    assert "LLM_PGCACHE_DSN" in stderr


NEXT_REVISION = '''"""A migration after head, written by the rolling-deploy test."""

import sqlalchemy as sa
from alembic import op

revision = "9999"
down_revision = "{head}"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("llm_cache", sa.Column("next_feature", sa.Text(), nullable=True))
    {contract}


def downgrade() -> None:
    op.drop_column("llm_cache", "next_feature")
'''


@pytest.mark.parametrize("contracts", [False, True])
async def test_code_runs_on_a_later_revision_that_declares_it_compatible(
    create_database: FreshDatabase,
    tmp_path: Path,
    contracts: bool,
    make_request: Callable[..., dict[str, object]],
    make_response: Callable[..., dict[str, object]],
) -> None:
    """A rolling deploy that migrates first: the running code keeps working on an
    expand-only head+1, and refuses, saying why, one that raises the oldest compatible
    code revision. An older schema is refused too, naming the command to run."""
    scripts = tmp_path / "migrations"
    shutil.copytree(migrate.script_location(), scripts)
    contract = (
        "op.execute(\"UPDATE llm_pgcache_schema SET oldest_code_revision = '9999'\")"
        if contracts
        else "pass"
    )
    (scripts / "versions" / "9999_next.py").write_text(
        NEXT_REVISION.format(head=SCHEMA_REVISION, contract=contract)
    )
    dsn = await create_database()
    config = migrate.alembic_config(dsn)
    config.set_main_option("script_location", str(scripts))
    await asyncio.to_thread(command.upgrade, config, "head")
    if contracts:
        with pytest.raises(SchemaError, match=r"revision 9999, which needs llm-pgcache code of"):
            await Cache.connect(dsn)
        return
    async with Cache.connect(dsn, lookup_timeout=1.0) as cache:
        await cache.set(make_request("rolling"), make_response("deploy"))
        assert await cache.get(make_request("rolling")) is not None


async def test_an_older_schema_is_refused_naming_the_command(
    create_database: FreshDatabase,
) -> None:
    dsn = await create_database()
    await migrate.upgrade(dsn, revision="0005")
    with pytest.raises(SchemaError, match=r"revision 0005, older than .*llm-pgcache migrate"):
        await Cache.connect(dsn)
