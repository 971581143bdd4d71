"""Fixtures: one real PostgreSQL + pgvector per session, a fresh namespace per test.

The server is `LLM_PGCACHE_TEST_DSN` when set, else an embedded PostgreSQL started once
under the session's temporary directory. Tests that need a database of their own (the
migration tests) create one with `fresh_database`; everything else shares one migrated
database and is isolated by namespace.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Protocol, Unpack

import asyncpg
import pytest
from openai import AsyncOpenAI

from llm_pgcache import Cache, CacheOptions
from llm_pgcache.cache.opening import Opening
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

from . import pgbouncer
from . import replica as replica_server
from .anthropic_server import AnthropicServer
from .openai_server import OpenAIServer


def connect_cache(
    dsn: str | None = None,
    *,
    pool: asyncpg.Pool | None = None,
    listen_dsn: str | None = None,
    min_size: int = 10,
    max_size: int = 10,
    read_dsn: str | None = None,
    **options: Unpack[CacheOptions],
) -> Opening[Cache]:
    """`Cache.connect` for tests: lookups get a budget of a second unless the test sets
    one. Budgets have tests of their own; elsewhere a CI machine that stalls for 50 ms
    must not turn a lookup into a miss."""
    options.setdefault("lookup_timeout", 1.0)
    return Cache.connect(
        dsn,
        pool=pool,
        listen_dsn=listen_dsn,
        min_size=min_size,
        max_size=max_size,
        read_dsn=read_dsn,
        **options,
    )


class FreshDatabase(Protocol):
    def __call__(self, template: str | None = None) -> Awaitable[str]: ...


class MigratedDatabase(Protocol):
    def __call__(self) -> Awaitable[str]: ...


def _with_database(dsn: str, database: str) -> str:
    """`dsn` pointed at another database on the same server."""
    base, _, query = asyncpg_dsn(dsn).partition("?")
    scheme, _, rest = base.partition("://")
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{database}" + (f"?{query}" if query else "")


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> str:
    """DSN of the server (its maintenance database)."""
    configured = os.environ.get("LLM_PGCACHE_TEST_DSN")
    if configured:
        return configured
    return embedded.start_sync(tmp_path_factory.mktemp("pg") / "data")


@pytest.fixture(scope="session")
async def create_database(server_dsn: str) -> AsyncIterator[FreshDatabase]:
    """Factory: a new empty database on the test server.

    On a server named by LLM_PGCACHE_TEST_DSN they are dropped at the end of the session;
    the embedded server's data directory is temporary, and goes with them.
    """
    created: list[str] = []

    async def create(template: str | None = None) -> str:
        name = f"llm_pgcache_test_{uuid.uuid4().hex[:12]}"
        connection = await asyncpg.connect(asyncpg_dsn(server_dsn))
        try:
            clone = f' TEMPLATE "{template}"' if template else ""
            await connection.execute(f'CREATE DATABASE "{name}"{clone}')
        finally:
            await connection.close()
        created.append(name)
        return _with_database(server_dsn, name)

    yield create
    if not os.environ.get("LLM_PGCACHE_TEST_DSN"):
        return
    connection = await asyncpg.connect(asyncpg_dsn(server_dsn))
    try:
        for name in created:
            await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def migrated_template(create_database: FreshDatabase) -> str:
    """The name of a database migrated to head, cloned by `create_migrated`."""
    template = await create_database()
    await migrate.upgrade(template)
    return template.split("?", 1)[0].rsplit("/", 1)[1]


@pytest.fixture(scope="session")
def create_migrated(create_database: FreshDatabase, migrated_template: str) -> MigratedDatabase:
    """Factory: a new database migrated to head (a clone of the template, no alembic run)."""

    async def create() -> str:
        return await create_database(migrated_template)

    return create


@pytest.fixture(scope="session")
async def dsn(create_migrated: MigratedDatabase) -> str:
    """A database migrated to head, shared by the session."""
    return await create_migrated()


@pytest.fixture
def namespace() -> str:
    """A namespace no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def cache(dsn: str, namespace: str) -> AsyncIterator[Cache]:
    """A strict cache (errors raise), with budgets loose enough for a busy test machine."""
    async with Cache.connect(
        dsn, namespace=namespace, strict=True, lookup_timeout=1.0, write_timeout=5.0
    ) as opened:
        yield opened


@pytest.fixture
async def db(dsn: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the shared database, to look at rows behind the cache's back."""
    connection = await asyncpg.connect(asyncpg_dsn(dsn))
    yield connection
    await connection.close()


@pytest.fixture
def make_request() -> Callable[..., dict[str, object]]:
    """Factory of chat completion requests."""

    def make(
        question: str = "What is the capital of France?", **params: object
    ) -> dict[str, object]:
        return {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": question},
            ],
            **params,
        }

    return make


@pytest.fixture
def make_response() -> Callable[..., dict[str, object]]:
    """Factory of ChatCompletion JSON dicts."""

    def make(
        content: str = "Paris.", *, prompt_tokens: int = 12, completion_tokens: int = 2
    ) -> dict[str, object]:
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o-mini",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": content, "refusal": None},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }

    return make


@pytest.fixture(scope="session")
async def openai_server() -> AsyncIterator[OpenAIServer]:
    """The OpenAI-compatible test server, started once; its state is reset per test."""
    server = OpenAIServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def openai_api(openai_server: OpenAIServer) -> Iterator[OpenAIServer]:
    openai_server.state.reset()
    yield openai_server
    openai_server.state.reset()


@pytest.fixture
async def openai_client(openai_api: OpenAIServer) -> AsyncIterator[AsyncOpenAI]:
    """The real openai client, talking HTTP to the test server (no retries: tests count calls)."""
    client = AsyncOpenAI(base_url=openai_api.base_url, api_key="test-key", max_retries=0)
    yield client
    await client.close()


@pytest.fixture(scope="session")
async def anthropic_server() -> AsyncIterator[AnthropicServer]:
    """The Anthropic-compatible test server, started once; its state is reset per test."""
    server = AnthropicServer()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture
def anthropic_api(anthropic_server: AnthropicServer) -> Iterator[AnthropicServer]:
    anthropic_server.state.reset()
    yield anthropic_server
    anthropic_server.state.reset()


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def pgbouncers(server_dsn: str) -> Iterator[dict[str, pgbouncer.PgBouncer]]:
    """A real PgBouncer in session mode and one in transaction mode, in front of the test
    server. Skipped without Debian's pgbouncer, unless LLM_PGCACHE_PGBOUNCER=required (CI)."""
    if not pgbouncer.available():
        if os.environ.get("LLM_PGCACHE_PGBOUNCER") == "required":
            pytest.fail("pgbouncer is required (LLM_PGCACHE_PGBOUNCER) but not installed")
        pytest.skip("pgbouncer is not installed (Debian's pgbouncer package)")
    started: dict[str, pgbouncer.PgBouncer] = {}
    try:
        for mode in ("session", "transaction"):
            workdir = Path(tempfile.mkdtemp(prefix=f"llm-pgcache-pgbouncer-{mode}-"))
            started[mode] = pgbouncer.start(server_dsn, mode, workdir)
        yield started
    finally:
        for bouncer in started.values():
            bouncer.stop()
            shutil.rmtree(bouncer.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def replica(server_dsn: str) -> Iterator[replica_server.Replica]:
    """A streaming replica of the embedded test server (pg_basebackup, then a hot standby
    on its own socket). Skipped against LLM_PGCACHE_TEST_DSN, whose server is not ours."""
    if os.environ.get("LLM_PGCACHE_TEST_DSN") or replica_server.binaries() is None:
        pytest.skip("a replica is made from the embedded server only")
    workdir = Path(tempfile.mkdtemp(prefix="llm-pgcache-replica-"))
    standby = replica_server.start(server_dsn, workdir)
    try:
        yield standby
    finally:
        standby.stop()
        shutil.rmtree(workdir, ignore_errors=True)
