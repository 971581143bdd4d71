"""Settings read from the environment, for the edges only (CLI, migrations).

The library itself takes explicit arguments; nothing here is a global.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from llm_pgcache.errors import ConfigurationError

DEFAULT_EMBEDDING_DIM = 1536
MAX_EMBEDDING_DIM = 16000  # pgvector's limit for the `vector` type
# How the embedding column stores vectors: `vector` (4-byte floats) or `halfvec` (2-byte
# floats, pgvector >= 0.7: half the space, and indexable up to 4,000 dimensions instead of
# 2,000). Chosen when the table is created.
EMBEDDING_TYPES = ("vector", "halfvec")
DEFAULT_EMBEDDING_TYPE = "vector"

ENV_DSN = "LLM_PGCACHE_DSN"
ENV_DSN_FALLBACK = "DATABASE_URL"
ENV_EMBEDDING_DIM = "LLM_PGCACHE_EMBEDDING_DIM"
ENV_EMBEDDING_TYPE = "LLM_PGCACHE_EMBEDDING_TYPE"
ENV_EMBEDDED_DIR = "LLM_PGCACHE_EMBEDDED_DIR"  # read by postgres.embedded
ENV_LOCAL_MODEL = "LLM_PGCACHE_LOCAL_MODEL"  # read by semantic.embedders.default_embedder


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What the environment says about where and how to cache.

    Attributes:
        dsn: PostgreSQL DSN, or None for the embedded server.
        embedding_dim: dimension of the `embedding` column, used by the migrations.
        embedding_type: its type, "vector" or "halfvec", used by the migrations.
    """

    dsn: str | None = None
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    embedding_type: str = DEFAULT_EMBEDDING_TYPE

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if environ is None else environ
        dim = env.get(ENV_EMBEDDING_DIM)
        return cls(
            dsn=env.get(ENV_DSN) or env.get(ENV_DSN_FALLBACK) or None,
            embedding_dim=parse_embedding_dim(dim) if dim else DEFAULT_EMBEDDING_DIM,
            embedding_type=parse_embedding_type(
                env.get(ENV_EMBEDDING_TYPE) or DEFAULT_EMBEDDING_TYPE
            ),
        )


def parse_embedding_dim(value: str | int) -> int:
    """Validate an embedding dimension given as text or int."""
    try:
        dim = int(value)
    except ValueError:
        raise ConfigurationError(f"embedding dimension must be an integer, got {value!r}") from None
    if not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise ConfigurationError(
            f"embedding dimension must be between 1 and {MAX_EMBEDDING_DIM}, got {dim}"
        )
    return dim


def parse_embedding_type(value: str) -> str:
    """Validate an embedding column type: "vector" or "halfvec"."""
    if value not in EMBEDDING_TYPES:
        raise ConfigurationError(
            f"embedding type must be one of {', '.join(EMBEDDING_TYPES)}, got {value!r}"
        )
    return value


def sqlalchemy_url(dsn: str) -> str:
    """The SQLAlchemy URL that reaches `dsn` through the asyncpg driver."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ConfigurationError(
            f"not a PostgreSQL DSN (expected postgresql://...): {redact_dsn(dsn)}"
        )
    return f"postgresql+asyncpg://{rest}"


def asyncpg_dsn(dsn: str) -> str:
    """The DSN asyncpg accepts (it does not know SQLAlchemy's driver suffix)."""
    return "postgresql://" + sqlalchemy_url(dsn).partition("://")[2]


def redact_dsn(dsn: str) -> str:
    """`dsn` with any password replaced, for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return dsn
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"
