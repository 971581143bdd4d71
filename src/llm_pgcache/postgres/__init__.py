"""PostgreSQL: every asyncpg call and SQL text, the schema, migrations, and the embedded
server."""
