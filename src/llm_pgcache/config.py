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
ENV_POOLER = "LLM_PGCACHE_POOLER"
# What stands between the cache and PostgreSQL: nothing or a session-mode pooler
# ("session": every feature works as on the server), or a transaction-mode pooler
# ("transaction": PgBouncer's usual mode, where each transaction may run on another server
# connection: no named prepared statements, no session state).
POOLERS = ("session", "transaction")


@dataclass(frozen=True, slots=True, kw_only=True)
class Settings:
    """What the environment says about where and how to cache.

    Attributes:
        dsn: PostgreSQL DSN, or None for the embedded server.
        embedding_dim: dimension of the `embedding` column, used by the migrations.
        embedding_type: its type, "vector" or "halfvec", used by the migrations.
        pooler: LLM_PGCACHE_POOLER, "session" or "transaction" (None: not said).
    """

    dsn: str | None = None
    embedding_dim: int = DEFAULT_EMBEDDING_DIM
    embedding_type: str = DEFAULT_EMBEDDING_TYPE
    pooler: str | None = None

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
            pooler=parse_pooler(env[ENV_POOLER]) if env.get(ENV_POOLER) else None,
        )


def parse_pooler(value: str) -> str:
    """Validate a pooler mode: "session" or "transaction"."""
    if value not in POOLERS:
        raise ConfigurationError(
            f"pooler must be one of {', '.join(POOLERS)} (PgBouncer's pool_mode), got {value!r}"
        )
    return value


def split_pooler(dsn: str) -> tuple[str, str | None]:
    """`dsn` without its `pooler=` query parameter (ours, not libpq's), and its value."""
    base, sep, query = dsn.partition("?")
    if not sep:
        return dsn, None
    kept, pooler = [], None
    for part in query.split("&"):
        name, _, value = part.partition("=")
        if name == "pooler":
            pooler = parse_pooler(value)
        elif part:
            kept.append(part)
    return base + ("?" + "&".join(kept) if kept else ""), pooler


def pooler_of(
    dsn: str | None, pooler: str | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """The pooler mode in force: `pooler`, else the DSN's `?pooler=`, else
    LLM_PGCACHE_POOLER."""
    if pooler is not None:
        return parse_pooler(pooler)
    from_dsn = split_pooler(dsn)[1] if dsn else None
    return from_dsn or Settings.from_env(environ).pooler


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
    """The SQLAlchemy URL that reaches `dsn` through the asyncpg driver (behind a
    transaction-mode pooler, without its prepared-statement cache)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ConfigurationError(
            f"not a PostgreSQL DSN (expected postgresql://...): {redact_dsn(dsn)}"
        )
    rest, pooler = split_pooler(rest)
    if pooler_of(None, pooler) == "transaction":
        rest += ("&" if "?" in rest else "?") + "prepared_statement_cache_size=0"
    return f"postgresql+asyncpg://{rest}"


def asyncpg_dsn(dsn: str) -> str:
    """The DSN asyncpg accepts: without SQLAlchemy's driver suffix, and without our
    `pooler=` parameter (asyncpg would send it to the server as a setting)."""
    scheme, sep, rest = dsn.partition("://")
    if not sep or scheme not in {"postgres", "postgresql", "postgresql+asyncpg"}:
        raise ConfigurationError(
            f"not a PostgreSQL DSN (expected postgresql://...): {redact_dsn(dsn)}"
        )
    return "postgresql://" + split_pooler(rest)[0]


def redact_dsn(dsn: str) -> str:
    """`dsn` with any password replaced, for messages and logs."""
    scheme, sep, rest = dsn.partition("://")
    userinfo, at, hostpart = rest.rpartition("@")
    if not sep or not at or ":" not in userinfo:
        return dsn
    user = userinfo.split(":", 1)[0]
    return f"{scheme}://{user}:***@{hostpart}"
