"""`llm_cache` partitioned by hash of namespace (`llm-pgcache partition --partitions N`).

One server stands in for a distributed PostgreSQL here: each namespace's rows live in one
partition (`llm_cache_p0` ... `llm_cache_p{N-1}`), as they would on one Citus shard, and
every statement that names a namespace reads or writes that partition alone (`sql` names
the namespace wherever it names rows by id). What changes against the plain table:

- no primary key on `id` alone: a unique index of a partitioned table must hold the
  partition key, so `(id, namespace)` and `(namespace, cache_key)` are the unique ones;
- the ANN index is one per partition, each sized by its own rows (`reindex`); lookups
  choose their probes from the largest partition's lists.

The conversion copies the rows into the new table in one transaction, holding the table
locked (ACCESS EXCLUSIVE) meanwhile: lookups and stores wait, or fail open, until it
commits. Run it at creation, or in a quiet hour: it rewrites the whole table (grants on
the old table are not carried over). The ANN index is built afterwards, by `llm-pgcache
reindex`. Needs PostgreSQL 17 or later
(identity columns on partitioned tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, LiteralString

import asyncpg

from llm_pgcache.errors import ConfigurationError, InvalidInputError
from llm_pgcache.postgres import index_sql
from llm_pgcache.postgres.driver import DRIVER_ERRORS, translate_error
from llm_pgcache.postgres.pool import Connections

MIN_SERVER_VERSION: Final = 17
COPY_TIMEOUT: Final = 24 * 3600.0  # seconds the copy of the whole table may take

PARTITIONS: Final[LiteralString] = """
SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = to_regclass('llm_cache')
ORDER BY length(c.relname), c.relname
"""

EMBEDDED_PER_PARTITION: Final[LiteralString] = """
SELECT tableoid::regclass::text AS partition, count(*) AS rows
FROM llm_cache WHERE embedding IS NOT NULL GROUP BY 1
"""

# The old table's constraints and indexes, as statements that drop them (names quoted by
# the server), so that the new table takes their names.
DROP_OLD_CONSTRAINTS: Final[LiteralString] = """
SELECT format('ALTER TABLE llm_cache_unpartitioned DROP CONSTRAINT %I', conname)
FROM pg_constraint WHERE conrelid = 'llm_cache_unpartitioned'::regclass AND contype IN ('p', 'u')
"""
DROP_OLD_INDEXES: Final[LiteralString] = """
SELECT format('DROP INDEX %I', c.relname) FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = 'llm_cache_unpartitioned'::regclass
"""


@dataclass(frozen=True, slots=True)
class PartitionReport:
    partitions: int
    rows: int

    def summary(self) -> str:
        return (
            f"llm_cache is partitioned by namespace into {self.partitions} partitions "
            f"({self.rows} rows copied); build the ANN index with `llm-pgcache reindex`"
        )


async def partitions(db: Connections) -> list[str]:
    """The partitions of `llm_cache`, in order; empty when it is a plain table."""
    return [row["relname"] for row in await db.fetch(PARTITIONS)]


async def embedded_per_partition(db: Connections) -> dict[str, int]:
    """Rows with an embedding in each partition (those that have any)."""
    return {row["partition"]: row["rows"] for row in await db.fetch(EMBEDDED_PER_PARTITION)}


def partition_ddl(count: int, embedding_dim: int, embedding_type: str) -> list[str]:
    """The partitioned table, its `count` partitions and its indexes (no ANN index)."""
    # SQLAlchemy for this command only: lookups and `reindex` never import it
    from sqlalchemy.dialects import postgresql  # noqa: PLC0415
    from sqlalchemy.schema import CreateIndex, CreateTable  # noqa: PLC0415

    from llm_pgcache.postgres.schema import FILLFACTOR, TABLE_NAME, build_metadata  # noqa: PLC0415

    table = build_metadata(embedding_dim, embedding_type, partitioned=True).tables[TABLE_NAME]
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    statements = [str(CreateTable(table).compile(dialect=dialect))]
    for remainder in range(count):
        name = index_sql.checked_table(f"{index_sql.PARTITION_PREFIX}{remainder}")
        statements.append(
            f"CREATE TABLE {name} PARTITION OF llm_cache "
            f"FOR VALUES WITH (MODULUS {count}, REMAINDER {remainder}) "
            f"WITH (fillfactor = {FILLFACTOR})"
        )
    statements += [str(CreateIndex(index).compile(dialect=dialect)) for index in table.indexes]
    return statements


def copy_rows(embedding_dim: int, embedding_type: str) -> str:
    """The INSERT that copies every row of the old table into the new one, ids kept."""
    from llm_pgcache.postgres.schema import TABLE_NAME, build_metadata  # noqa: PLC0415

    table = build_metadata(embedding_dim, embedding_type).tables[TABLE_NAME]
    columns = ", ".join(column.name for column in table.columns)  # our own names
    return (
        f"INSERT INTO llm_cache ({columns}) OVERRIDING SYSTEM VALUE "  # noqa: S608
        f"SELECT {columns} FROM llm_cache_unpartitioned"
    )


async def partition_table(
    db: Connections, count: int, *, embedding_dim: int, embedding_type: str
) -> PartitionReport:
    """Make `llm_cache` a table partitioned by hash of namespace into `count` partitions,
    its rows copied (one transaction); nothing is done if it already is.

    Raises:
        InvalidInputError: `count` out of range (2 to 1024).
        ConfigurationError: the table is partitioned otherwise, or the server is older
            than PostgreSQL 17.
    """
    if type(count) is not int or not 2 <= count <= index_sql.MAX_PARTITIONS:
        raise InvalidInputError(f"partitions must be an int from 2 to 1024, got {count!r}")
    existing = await partitions(db)
    if existing:
        if len(existing) != count:
            raise ConfigurationError(
                f"llm_cache is already partitioned into {len(existing)} partitions: "
                "changing their number means copying into a new table (not supported)"
            )
        return PartitionReport(count, 0)
    ddl = partition_ddl(count, embedding_dim, embedding_type)
    copy = copy_rows(embedding_dim, embedding_type)
    async with db.connection() as connection:
        version = connection.get_server_version()
        if version.major < MIN_SERVER_VERSION:
            raise ConfigurationError(
                f"partitioning llm_cache needs PostgreSQL 17 or later (identity columns on "
                f"partitioned tables); this server is {version.major}"
            )
        try:
            rows = await _convert(connection, ddl, copy)
        except DRIVER_ERRORS as exc:
            raise translate_error(exc) from exc
    return PartitionReport(count, rows)


async def _convert(connection: asyncpg.Connection, ddl: list[str], copy: str) -> int:
    async with connection.transaction():
        await connection.execute("LOCK TABLE llm_cache IN ACCESS EXCLUSIVE MODE")
        await connection.execute("ALTER TABLE llm_cache RENAME TO llm_cache_unpartitioned")
        for query in (DROP_OLD_CONSTRAINTS, DROP_OLD_INDEXES):
            for (statement,) in await connection.fetch(query):
                await connection.execute(statement)
        await connection.execute("ALTER TABLE llm_cache_unpartitioned ALTER id DROP IDENTITY")
        for statement in ddl:
            await connection.execute(statement)
        status = await connection.execute(copy, timeout=COPY_TIMEOUT)
        await connection.execute(
            "SELECT setval(pg_get_serial_sequence('llm_cache', 'id'), "
            "(SELECT coalesce(max(id), 0) FROM llm_cache) + 1, false)"
        )
        await connection.execute("DROP TABLE llm_cache_unpartitioned")
        # The ANN index they describe went with the old table: lookups scan exactly
        # until `reindex` builds one per partition.
        await connection.execute("DELETE FROM llm_cache_index_builds")
        await connection.execute("ANALYZE llm_cache", timeout=COPY_TIMEOUT)
    return int(status.rsplit(" ", 1)[-1])
