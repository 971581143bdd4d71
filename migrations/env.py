"""Alembic environment: async (asyncpg), DSN and embedding dimension from the environment.

`llm-pgcache migrate` passes both through `config.attributes`; plain `alembic` reads
LLM_PGCACHE_DSN (or DATABASE_URL) and LLM_PGCACHE_EMBEDDING_DIM / `-x embedding_dim=N`.
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from llm_pgcache.config import Settings, parse_embedding_dim, sqlalchemy_url
from llm_pgcache.errors import ConfigurationError
from llm_pgcache.postgres.schema import VERSION_TABLE, build_metadata

config = context.config
settings = Settings.from_env()

dsn = config.attributes.get("dsn") or settings.dsn
if not dsn:
    raise ConfigurationError(
        "no database to migrate: set LLM_PGCACHE_DSN (or DATABASE_URL), "
        "or run `llm-pgcache migrate` to use the embedded server"
    )
x_dim = context.get_x_argument(as_dictionary=True).get("embedding_dim")
embedding_dim = parse_embedding_dim(
    x_dim or config.attributes.get("embedding_dim") or settings.embedding_dim
)
config.attributes["embedding_dim"] = embedding_dim  # read by the revisions
target_metadata = build_metadata(embedding_dim)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # The database may hold the host application's tables too: compare only ours.
    return type_ != "table" or name in target_metadata.tables


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async() -> None:
    engine = create_async_engine(sqlalchemy_url(dsn))
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(
        url=sqlalchemy_url(dsn),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        transaction_per_migration=True,
    )
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_async())
