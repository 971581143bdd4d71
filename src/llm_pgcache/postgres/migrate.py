"""Run the alembic migrations programmatically (`llm-pgcache migrate`, the embedded default)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from importlib.resources import files
from pathlib import Path

import alembic.util
import sqlalchemy.exc
from alembic import command
from alembic.config import Config

from llm_pgcache.config import parse_embedding_type, redact_dsn
from llm_pgcache.errors import BackendError, ConfigurationError


def script_location() -> Path:
    """Where the alembic scripts are: inside the wheel, or at the root of a source checkout."""
    packaged = Path(str(files("llm_pgcache"))) / "_migrations"
    source = Path(__file__).resolve().parents[3] / "migrations"
    for candidate in (packaged, source):
        if (candidate / "env.py").is_file():
            return candidate
    raise ConfigurationError(f"alembic scripts not found in {packaged} or {source}")


def alembic_config(
    dsn: str, *, embedding_dim: int | None = None, embedding_type: str | None = None
) -> Config:
    """An alembic `Config` for our scripts, aimed at `dsn`."""
    config = Config()
    config.set_main_option("script_location", str(script_location()))
    config.attributes["dsn"] = dsn
    if embedding_dim is not None:
        config.attributes["embedding_dim"] = embedding_dim
    if embedding_type is not None:
        config.attributes["embedding_type"] = parse_embedding_type(embedding_type)
    return config


def upgrade_sync(
    dsn: str,
    *,
    revision: str = "head",
    embedding_dim: int | None = None,
    embedding_type: str | None = None,
) -> None:
    """`alembic upgrade <revision>` against `dsn`. Blocks: call it outside an event loop.

    `embedding_dim` and `embedding_type` ("vector" or "halfvec") shape the embedding
    column when the table is created; they change nothing in an existing table.
    """
    config = alembic_config(dsn, embedding_dim=embedding_dim, embedding_type=embedding_type)
    with _translate_errors(dsn):
        command.upgrade(config, revision)


def downgrade_sync(dsn: str, *, revision: str = "base") -> None:
    """`alembic downgrade <revision>` against `dsn`. Blocks: call it outside an event loop."""
    with _translate_errors(dsn):
        command.downgrade(alembic_config(dsn), revision)


@contextlib.contextmanager
def _translate_errors(dsn: str) -> Iterator[None]:
    try:
        yield
    except (OSError, TimeoutError, sqlalchemy.exc.DBAPIError) as exc:
        cause = getattr(exc, "orig", None) or exc
        raise BackendError(f"migrating {redact_dsn(dsn)} failed: {cause}") from exc
    except alembic.util.CommandError as exc:
        raise ConfigurationError(f"alembic: {exc}") from exc


async def upgrade(
    dsn: str,
    *,
    revision: str = "head",
    embedding_dim: int | None = None,
    embedding_type: str | None = None,
) -> None:
    """`alembic upgrade <revision>` against `dsn`, from async code (see `upgrade_sync`).

    The alembic environment runs its own event loop, so it runs in a worker thread.
    """
    await asyncio.to_thread(
        upgrade_sync,
        dsn,
        revision=revision,
        embedding_dim=embedding_dim,
        embedding_type=embedding_type,
    )


async def downgrade(dsn: str, *, revision: str = "base") -> None:
    """`alembic downgrade <revision>` against `dsn`, from async code (in a worker thread)."""
    await asyncio.to_thread(downgrade_sync, dsn, revision=revision)
