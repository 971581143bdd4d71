"""Alembic environment: async (asyncpg), DSN and embedding column from the environment.

`llm-pgcache migrate` passes them through `config.attributes`; plain `alembic` reads
LLM_PGCACHE_DSN (or DATABASE_URL), LLM_PGCACHE_EMBEDDING_DIM / `-x embedding_dim=N` and
LLM_PGCACHE_EMBEDDING_TYPE / `-x embedding_type=halfvec`.
"""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from llm_pgcache.config import Settings, parse_embedding_dim, parse_embedding_type, sqlalchemy_url
from llm_pgcache.errors import ConfigurationError
from llm_pgcache.postgres.schema import ANN_INDEXES, VERSION_TABLE, build_metadata

config = context.config
settings = Settings.from_env()

dsn = config.attributes.get("dsn") or settings.dsn
if not dsn:
    raise ConfigurationError(
        "no database to migrate: set LLM_PGCACHE_DSN (or DATABASE_URL), "
        "or run `llm-pgcache migrate` to use the embedded server"
    )
x_args = context.get_x_argument(as_dictionary=True)
embedding_dim = parse_embedding_dim(
    x_args.get("embedding_dim") or config.attributes.get("embedding_dim") or settings.embedding_dim
)
embedding_type = parse_embedding_type(
    x_args.get("embedding_type")
    or config.attributes.get("embedding_type")
    or settings.embedding_type
)
config.attributes["embedding_dim"] = embedding_dim  # read by the revisions
config.attributes["embedding_type"] = embedding_type
target_metadata = build_metadata(embedding_dim, embedding_type)


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    # The database may hold the host application's tables too: compare only ours. The
    # ANN index is `llm-pgcache reindex`'s to choose (ivfflat or HNSW): not compared.
    if type_ == "index":
        return name not in ANN_INDEXES
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
