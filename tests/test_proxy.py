"""The caching proxy (`llm-pgcache serve`) on 127.0.0.1 in front of the tests'
OpenAI-compatible server, driven by the real openai client (sync and async, streaming
and not) and by raw httpx for its headers."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from openai import AsyncOpenAI, OpenAI

from llm_pgcache.server.app import create_app
from llm_pgcache.server.config import ProxyConfig, key_hash

from .chunks import assembled
from .faults import BlackHoleProxy
from .openai_server import LocalServer, OpenAIServer

ADMIN_ENV = "LLM_PGCACHE_TEST_ADMIN_TOKEN"
ADMIN = {"authorization": "Bearer admin-secret"}


def ask(question: str, **params: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": question}], **params}


Start = Callable[..., "asyncio.Future[LocalServer]"]


@pytest.fixture
async def start_proxy(
    dsn: str, namespace: str, openai_api: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Callable[..., Any]]:
    """Start a proxy on a free port (its own cache on the test database); stopped after."""
    monkeypatch.setenv(ADMIN_ENV, "admin-secret")
    started: list[LocalServer] = []

    async def start(**settings: Any) -> LocalServer:
        settings.setdefault("upstream", openai_api.base_url)
        settings.setdefault("dsn", dsn)
        settings.setdefault("admin_token_env", ADMIN_ENV)
        options = {"namespace": namespace, "lookup_timeout": 1.0}
        settings["cache_options"] = {**options, **settings.get("cache_options", {})}
        server = LocalServer(create_app(ProxyConfig(**settings)))
        await server.start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


@pytest.fixture
async def proxy(start_proxy: Callable[..., Any]) -> LocalServer:
    server: LocalServer = await start_proxy()
    return server


@pytest.fixture
async def http(proxy: LocalServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=proxy.url, timeout=10) as client:
        yield client


async def rows(db: asyncpg.Connection, namespace: str) -> int:
    count: int = await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace)
    return count


async def test_the_openai_client_through_the_proxy(
    proxy: LocalServer, openai_api: OpenAIServer
) -> None:
    client = AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key="caller-key", max_retries=0)
    first = await client.chat.completions.with_raw_response.create(**ask("What is 2 + 2?"))
    second = await client.chat.completions.with_raw_response.create(**ask("What is 2 + 2?"))
    assert first.headers["x-llm-cache"] == "miss"
    assert second.headers["x-llm-cache"] == "hit"
    assert second.headers["x-llm-cache-tier"] == "postgres-exact"
    assert second.parse().choices == first.parse().choices
    assert openai_api.state.calls["chat"] == 1

    live = [c async for c in await client.chat.completions.create(**ask("stream"), stream=True)]
    replay = await client.chat.completions.with_raw_response.create(**ask("stream"), stream=True)
    assert replay.headers["x-llm-cache"] == "hit"
    replayed = [c async for c in replay.parse()]
    assert assembled(replayed)["choices"] == assembled(live)["choices"]
    assert all(c.choices for c in live)  # the usage chunk the proxy asked for is hidden
    assert openai_api.state.calls["chat"] == 2

    vectors = await client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    again = await client.embeddings.create(model="text-embedding-3-small", input=["b", "c"])
    assert again.data[0].embedding == vectors.data[1].embedding
    assert openai_api.state.embedded_texts == ["a", "b", "c"]
    models = await client.models.list()  # any other route: passed through
    assert [m.id for m in models.data] == ["gpt-4o-mini"]
    await client.close()

    def sync_call() -> str | None:
        with OpenAI(base_url=f"{proxy.url}/v1", api_key="k", max_retries=0) as sync:
            raw = sync.chat.completions.with_raw_response.create(**ask("What is 2 + 2?"))
            assert raw.headers["x-llm-cache"] == "hit"
            content: str | None = raw.parse().choices[0].message.content
            return content

    assert await asyncio.to_thread(sync_call) == "answer: What is 2 + 2?"
    assert openai_api.state.calls["chat"] == 2
    # The caller's key went upstream, none of the proxy's own headers, the body as sent.
    sent = openai_api.state.chat_headers[0]
    assert sent["authorization"] == "Bearer caller-key"
    assert not any(name.startswith("x-llm-cache") for name in sent)
    assert openai_api.state.chat_bodies[0] == ask("What is 2 + 2?")


async def test_headers_control_the_cache(
    http: httpx.AsyncClient, openai_api: OpenAIServer, db: asyncpg.Connection, namespace: str
) -> None:
    url = "/v1/chat/completions"
    kept = await http.post(url, json=ask("kept"), headers={"x-llm-cache-tags": "faq, docs"})
    assert kept.headers["x-llm-cache"] == "miss"
    assert (await http.post(url, json=ask("kept"))).headers["x-llm-cache"] == "hit"
    tagged = {"x-llm-cache-control": "no-cache", "x-llm-cache-tags": "docs"}
    fresh = await http.post(url, json=ask("kept"), headers=tagged)
    assert fresh.headers["x-llm-cache"] == "miss"  # and stored again, tagged "docs" only
    await http.post(url, json=ask("not kept"), headers={"x-llm-cache-control": "no-store"})
    assert await rows(db, namespace) == 1
    other = await http.post(url, json=ask("kept"), headers={"x-llm-cache-namespace": "elsewhere"})
    assert other.headers["x-llm-cache"] == "miss"  # another namespace: not this entry
    bad = await http.post(url, json=ask("x"), headers={"x-llm-cache-ttl": "soon"})
    assert bad.status_code == 400
    assert "cache header" in bad.json()["error"]["message"]
    assert (await http.post(url, content=b"{not json")).status_code == 400
    huge = await http.post(url, json=ask("x" * (11 * 1024 * 1024)))
    assert huge.status_code == 413
    # Invalidation by tag through the admin API.
    invalidated = await http.post("/cache/invalidate", json={"tag": "docs"}, headers=ADMIN)
    assert invalidated.json() == {"deleted": 1}
    assert (await http.post(url, json=ask("kept"))).headers["x-llm-cache"] == "miss"
    await http.post("/cache/invalidate", json={"namespace": "elsewhere"}, headers=ADMIN)


async def test_upstream_errors_are_passed_on_never_stored(
    http: httpx.AsyncClient, openai_api: OpenAIServer, db: asyncpg.Connection, namespace: str
) -> None:
    openai_api.state.fail_status = 429
    failed = await http.post("/v1/chat/completions", json=ask("busy"))
    assert failed.status_code == 429
    assert failed.json()["error"]["message"] == "injected failure"
    openai_api.state.fail_status = None
    for question in ("[refuse] no", "[length] long", "[filter] x"):
        await http.post("/v1/chat/completions", json=ask(question))
    broken = await http.post("/v1/chat/completions", json=ask("[break] a b c", stream=True))
    assert "[DONE]" not in broken.text  # the caller's stream is cut too
    assert await rows(db, namespace) == 0


async def test_the_admin_api_and_the_probes(http: httpx.AsyncClient) -> None:
    assert (await http.get("/cache/stats")).status_code == 401
    wrong = await http.get("/cache/stats", headers={"authorization": "Bearer guess"})
    assert wrong.status_code == 401
    await http.post("/v1/chat/completions", json=ask("counted"))
    await http.post("/v1/chat/completions", json=ask("counted"))
    stats = (await http.get("/cache/stats", headers=ADMIN)).json()
    assert stats["counters"]["hits_by_tier"] == {"postgres-exact": 1}
    assert stats["table"]["entries"] >= 1
    bad = await http.post("/cache/invalidate", json={"tag": "a", "model": "b"}, headers=ADMIN)
    assert bad.status_code == 400
    assert (await http.get("/healthz")).json() == {"status": "ok"}
    assert (await http.get("/readyz")).json() == {"status": "ready"}
    metrics = await http.get("/metrics")
    assert "llm_pgcache_hits" in metrics.text
    spec = (await http.get("/cache/openapi.json")).json()
    assert set(spec["paths"]) >= {"/cache/stats", "/cache/invalidate"}


async def test_the_admin_api_is_off_without_a_token(start_proxy: Callable[..., Any]) -> None:
    server = await start_proxy(admin_token_env=None)
    async with httpx.AsyncClient(base_url=server.url) as http:
        assert (await http.get("/cache/stats", headers=ADMIN)).status_code == 404


async def test_tenants_by_api_key(
    start_proxy: Callable[..., Any], openai_api: OpenAIServer, namespace: str
) -> None:
    tenants = {key_hash("key-a"): f"{namespace}-a", key_hash("key-b"): f"{namespace}-b"}
    server = await start_proxy(tenants=tenants)
    async with httpx.AsyncClient(base_url=server.url) as http:

        async def call(key: str, **headers: str) -> httpx.Response:
            return await http.post(
                "/v1/chat/completions",
                json=ask("shared question"),
                headers={"authorization": f"Bearer {key}", **headers},
            )

        assert (await call("key-a")).headers["x-llm-cache"] == "miss"
        assert (await call("key-a")).headers["x-llm-cache"] == "hit"
        assert (await call("key-b")).headers["x-llm-cache"] == "miss"  # its own namespace
        picked = await call("key-b", **{"x-llm-cache-namespace": f"{namespace}-a"})
        assert picked.status_code == 403
        assert (await call("key-c")).status_code == 401
        assert (await http.get("/v1/models")).status_code == 401
        for tenant in tenants.values():
            await http.post("/cache/invalidate", json={"namespace": tenant}, headers=ADMIN)
    assert openai_api.state.calls["chat"] == 2


async def test_a_server_held_key(
    start_proxy: Callable[..., Any], openai_api: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LLM_PGCACHE_TEST_UPSTREAM_KEY", "server-key")
    server = await start_proxy(upstream_key_env="LLM_PGCACHE_TEST_UPSTREAM_KEY")
    async with httpx.AsyncClient(base_url=server.url) as http:
        answer = await http.post(
            "/v1/chat/completions",
            json=ask("who pays?"),
            headers={"authorization": "Bearer caller-key"},
        )
    assert answer.status_code == 200
    assert openai_api.state.chat_bodies[-1] == ask("who pays?")
    assert openai_api.state.chat_headers[-1]["authorization"] == "Bearer server-key"


async def test_answers_keep_coming_when_postgres_stops(
    start_proxy: Callable[..., Any], dsn: str, openai_api: OpenAIServer
) -> None:
    black_hole = BlackHoleProxy(dsn)
    await black_hole.start()
    try:
        server = await start_proxy(
            dsn=black_hole.dsn, cache_options={"lookup_timeout": 0.2, "write_timeout": 0.2}
        )
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            await http.post("/v1/chat/completions", json=ask("before"))
            black_hole.black_hole()
            for n in range(3):
                answer = await http.post("/v1/chat/completions", json=ask(f"during {n}"))
                assert answer.status_code == 200
                assert answer.json()["choices"][0]["message"]["content"] == f"answer: during {n}"
            streamed = await http.post("/v1/chat/completions", json=ask("s", stream=True))
            assert streamed.text.endswith("data: [DONE]\n\n")
            assert (await http.get("/readyz")).status_code == 503
            black_hole.restore()
    finally:
        await black_hole.close()
    assert openai_api.state.calls["chat"] == 5


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def test_two_workers_share_one_database(
    dsn: str, namespace: str, openai_api: OpenAIServer
) -> None:
    """`serve --workers 2`, each with a memory tier: an invalidation through one worker
    drops the other's copy too (LISTEN/NOTIFY), and the next answer is a fresh one."""
    port = free_port()
    env = {**os.environ, ADMIN_ENV: "admin-secret"}
    serve = await asyncio.create_subprocess_exec(
        *(str(Path(sys.executable).with_name("llm-pgcache")), "serve", "--workers", "2"),
        *("--port", str(port), "--upstream", openai_api.base_url, "--dsn", dsn),
        *("--namespace", namespace, "--admin-token-env", ADMIN_ENV, "--memory-entries", "100"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"

    async def ask_anew(question: str) -> tuple[str, str]:
        """(tier, the answer's id: the upstream numbers its answers)."""
        async with httpx.AsyncClient(base_url=url, timeout=10) as one:  # a new connection
            answer = await one.post("/v1/chat/completions", json=ask(question))
            return answer.headers["x-llm-cache-tier"], answer.json()["id"]

    try:
        async with httpx.AsyncClient(base_url=url, timeout=10) as http:
            for _ in range(100):  # both workers up
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            tiers, ids = zip(*[await ask_anew("two workers") for _ in range(12)], strict=True)
            assert tiers[0] == "miss"
            assert set(tiers[1:]) <= {"memory", "postgres-exact"}
            assert "memory" in tiers  # copies in the workers' memory
            assert len(set(ids)) == 1
            openai_api.state.chat_bodies.clear()
            done = await http.post(
                "/cache/invalidate", json={"key": ask("two workers")}, headers=ADMIN
            )
            assert done.json() == {"deleted": 1}
            await asyncio.sleep(0.3)  # the notice reaches the other worker
            after, new_ids = zip(*[await ask_anew("two workers") for _ in range(8)], strict=True)
            assert after[0] == "miss"
            assert "miss" not in after[1:]
            assert set(new_ids) == {new_ids[0]} != {ids[0]}  # no worker kept the old copy
            assert len(openai_api.state.chat_bodies) == 1
            nothing = await http.post("/cache/invalidate", json={}, headers=ADMIN)
            assert nothing.status_code == 400  # nothing named
    finally:
        serve.terminate()
        await asyncio.wait_for(serve.wait(), 10)


async def test_serve_says_what_is_wrong(capsys: pytest.CaptureFixture[str]) -> None:
    from llm_pgcache.cli import cli  # noqa: PLC0415 - the command line of this test only

    assert await cli(["serve", "--upstream", "ftp://nowhere"]) == 1
    assert "--upstream must be an http(s) URL" in capsys.readouterr().err
    assert await cli(["serve", "--upstream", "http://x/v1", "--admin-token-env", "UNSET_X"]) == 1
    assert "UNSET_X is not set" in capsys.readouterr().err


async def test_workers_of_one_host_make_one_upstream_call(
    start_proxy: Callable[..., Any], openai_api: OpenAIServer, tmp_path: Path
) -> None:
    """Two proxies with their own caches and one lock directory: two workers of a host."""
    workers = [await start_proxy(flight_dir=str(tmp_path)) for _ in range(2)]
    openai_api.state.latency = 0.3
    async with httpx.AsyncClient(timeout=10) as http:

        async def call(n: int, stream: bool = False) -> httpx.Response:
            body = ask("streamed everywhere" if stream else "asked everywhere at once")
            if stream:
                body["stream"] = True
            return await http.post(f"{workers[n % 2].url}/v1/chat/completions", json=body)

        answers = await asyncio.gather(*(call(n) for n in range(8)))
        assert openai_api.state.calls["chat"] == 1
        assert {a.json()["choices"][0]["message"]["content"] for a in answers} == {
            "answer: asked everywhere at once"
        }
        tiers = sorted(a.headers["x-llm-cache"] for a in answers)
        assert tiers.count("miss") >= 1  # the leader, and its own worker's followers
        assert "hit" in tiers  # the other worker's leader found it stored
        # Streams too: the lock is held until the leader's stream has been stored.
        openai_api.state.reset()
        openai_api.state.latency = 0.3
        streams = await asyncio.gather(*(call(n, stream=True) for n in range(4)))
        assert all(s.text.endswith("data: [DONE]\n\n") for s in streams)
        assert openai_api.state.calls["chat"] == 1


async def test_semantic_hits_through_the_proxy(
    start_proxy: Callable[..., Any], openai_api: OpenAIServer
) -> None:
    server = await start_proxy(embedder="hashing", cache_options={"similarity_threshold": 0.8})
    async with httpx.AsyncClient(base_url=server.url) as http:
        url = "/v1/chat/completions"
        await http.post(url, json=ask("What is the capital of France?"))
        similar = await http.post(url, json=ask("So what is the capital of France, please?"))
        assert similar.headers["x-llm-cache"] == "hit"
        assert similar.headers["x-llm-cache-tier"] == "postgres-semantic"
        assert 0.8 <= float(similar.headers["x-llm-cache-similarity"]) < 1
        strict = await http.post(
            url,
            json=ask("So what is the capital of France, please?"),
            headers={"x-llm-cache-threshold": "0.99"},
        )
        assert strict.headers["x-llm-cache"] == "miss"
    assert openai_api.state.calls["chat"] == 2


async def test_upstream_limits(
    start_proxy: Callable[..., Any],
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
) -> None:
    slow = await start_proxy(upstream_timeout=0.2)
    openai_api.state.latency = 0.5
    async with httpx.AsyncClient(base_url=slow.url, timeout=10) as http:
        late = await http.post("/v1/chat/completions", json=ask("too slow"))
    assert late.status_code == 502
    assert "did not answer" in late.json()["error"]["message"]
    assert await rows(db, namespace) == 0
    openai_api.state.reset()
    narrow = await start_proxy(max_upstream_in_flight=1)
    openai_api.state.latency = 0.1
    async with httpx.AsyncClient(base_url=narrow.url, timeout=10) as http:
        answers = await asyncio.gather(
            *(http.post("/v1/chat/completions", json=ask(f"question {n}")) for n in range(4))
        )
    assert [a.status_code for a in answers] == [200] * 4
    assert openai_api.state.calls["chat"] == 4
    assert openai_api.state.most_in_flight == 1


async def test_prompts_are_never_logged(
    http: httpx.AsyncClient, openai_api: OpenAIServer, caplog: pytest.LogCaptureFixture
) -> None:
    private = "my card number is 4111 1111 1111 1111"
    with caplog.at_level(logging.DEBUG):
        await http.post("/v1/chat/completions", json=ask(private))
        await http.post("/v1/chat/completions", json=ask(private))
        await http.post("/v1/chat/completions", json=ask(f"[break] {private}", stream=True))
        openai_api.state.fail_status = 500
        await http.post("/v1/chat/completions", json=ask(f"{private} again"))
    assert caplog.records  # something was logged (the broken stream at least)
    assert "4111" not in caplog.text
