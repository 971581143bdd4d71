"""The edge with asyncpg: connection setup, the schema check on connect, and driver
errors translated in one place.

Connection loss and timeouts become `BackendError`, a missing table or column
`SchemaError`, a value the database rejects `InvalidInputError`.
"""

from __future__ import annotations

from typing import Final, LiteralString, NamedTuple

import asyncpg
from pgvector.asyncpg import register_vector

from llm_pgcache.errors import BackendError, InvalidInputError, LLMPgCacheError, SchemaError
from llm_pgcache.postgres import sql

SCHEMA_REVISION = "0010"  # the alembic head this code runs against (a test checks it)


# The array types our statements take or return. asyncpg knows the codecs of a few
# (text[], oid[]); any other it looks up in the catalog the first time a statement uses
# it on a connection: three more round trips, 12-16 ms on a new connection here, which
# would land inside the first lookup's budget.
_ARRAY_TYPES: Final[LiteralString] = (
    "SELECT NULL::bytea[], NULL::float8[], NULL::bigint[], NULL::int[], NULL::bool[], "
    "NULL::timestamptz[], NULL::vector[]"
)


async def init_connection(connection: asyncpg.Connection) -> None:
    """Prepare a new connection for llm-pgcache: registers the pgvector codec, and
    learns the codecs of the array types our statements use (one query now, not a
    catalog lookup inside the first statement of each kind).

    Pass it as `init=` when creating a pool that you hand to `Cache.connect(pool=...)`.
    """
    await register_vector(connection)
    await connection.fetch(_ARRAY_TYPES)


async def keep_session(connection: asyncpg.Connection) -> None:
    """Pool reset hook: our statements leave no session state, so skip the reset query,
    but roll back a transaction left open (a statement cut short inside one).

    asyncpg's default reset costs a round trip per release, which halves point-lookup
    throughput; whether a transaction is open is known without one.
    """
    if connection.is_in_transaction():
        await connection.execute("ROLLBACK")


# Everything the driver raises for a failed statement or connection.
DRIVER_ERRORS = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,  # e.g. a connection broken mid-protocol by a restart
)


def translate_error(exc: Exception) -> LLMPgCacheError:
    """The llm-pgcache error for a driver error; raise it `from exc`."""
    if isinstance(exc, asyncpg.UndefinedTableError | asyncpg.UndefinedColumnError):
        return SchemaError(f"{SchemaError.__doc__}\n({exc})")
    if isinstance(
        exc, asyncpg.InvalidSQLStatementNameError | asyncpg.DuplicatePreparedStatementError
    ):  # a prepared statement lost between server connections: fails open as any other
        return BackendError(
            f"PostgreSQL lost a prepared statement ({exc}): behind a transaction-mode "
            "pooler such as PgBouncer, say so with pooler='transaction' (or ?pooler="
            "transaction in the DSN, or LLM_PGCACHE_POOLER=transaction)"
        )
    if isinstance(
        exc,
        asyncpg.CharacterNotInRepertoireError
        | asyncpg.UntranslatableCharacterError
        | asyncpg.DataError,
    ):
        return InvalidInputError(f"the database rejected a value: {exc}")
    if isinstance(exc, TimeoutError):
        return BackendError("PostgreSQL did not answer in time (statement_timeout)")
    return BackendError(f"PostgreSQL failed: {type(exc).__name__}: {exc}")


class Schema(NamedTuple):
    """What the code needs to know of a migrated table: its embedding column."""

    embedding_dim: int
    embedding_type: str  # "vector" or "halfvec"


async def check_schema(connection: asyncpg.Connection) -> Schema:
    """Verify the schema runs with this code: migrated to `SCHEMA_REVISION`, or to a
    later revision that declares this code compatible (`llm_pgcache_schema`: a rolling
    deploy that migrates first). Returns its embedding column.

    Raises:
        SchemaError: not migrated, migrated to an older revision, or to a later one
            that needs newer code; the message says which and what to run.
    """
    try:
        state = await connection.fetchrow(sql.SCHEMA_STATE)
        revision = (
            await connection.fetchval(sql.SCHEMA_REVISION) if state["has_version_table"] else None
        )
        oldest = (
            await connection.fetchval(sql.OLDEST_CODE_REVISION)
            if state["has_compatibility_table"]
            else None
        )
    except DRIVER_ERRORS as exc:
        raise translate_error(exc) from exc
    if not state["has_table"] or revision is None:
        raise SchemaError(
            "the llm_cache table does not exist: run `llm-pgcache migrate` "
            "(or `alembic upgrade head`) against this database"
        )
    if revision != SCHEMA_REVISION:
        check_revision(revision, oldest)
    return Schema(state["embedding_dim"], state["embedding_type"])


def check_revision(revision: str, oldest_code_revision: str | None) -> None:
    """Whether this code (at `SCHEMA_REVISION`) runs on a schema at `revision` that runs
    code from `oldest_code_revision` on.

    Raises:
        SchemaError: the schema is older than the code, or newer and not compatible.
    """
    if _order(revision) < _order(SCHEMA_REVISION):
        raise SchemaError(
            f"the database schema is at revision {revision}, older than this llm-pgcache "
            f"(revision {SCHEMA_REVISION}): run `llm-pgcache migrate` against it"
        )
    if oldest_code_revision is None or _order(oldest_code_revision) > _order(SCHEMA_REVISION):
        since = oldest_code_revision or "unknown"
        raise SchemaError(
            f"the database schema is at revision {revision}, which needs llm-pgcache code "
            f"of revision {since} or later; this llm-pgcache is at {SCHEMA_REVISION}: "
            "upgrade llm-pgcache"
        )


def _order(revision: str) -> tuple[int, str]:
    """Revisions sort by their number ("0006"); one without a number sorts last."""
    digits = revision.split("_", 1)[0]
    return (int(digits), revision) if digits.isdigit() else (1 << 30, revision)
