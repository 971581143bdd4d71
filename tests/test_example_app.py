"""The example app under examples/, driven over HTTP like a user would."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from examples.app import create_app
from openai import AsyncOpenAI

from .openai_server import LocalServer, OpenAIServer


@pytest.fixture
async def app_url(dsn: str, openai_client: AsyncOpenAI) -> AsyncIterator[str]:
    server = LocalServer(create_app(dsn, openai_client))
    await server.start()
    yield server.url
    await server.stop()


async def test_the_second_question_is_answered_by_the_cache(
    app_url: str, openai_api: OpenAIServer
) -> None:
    async with httpx.AsyncClient(base_url=app_url) as http:
        first = (await http.post("/ask", json={"question": "Why is the sky blue?"})).json()
        second = (await http.post("/ask", json={"question": "Why is the sky blue?"})).json()
        stats = (await http.get("/stats")).json()
    assert first["answer"] == second["answer"] == "answer: Why is the sky blue?"
    assert first["tier"] == "miss"
    assert second["tier"] == "postgres-exact"
    assert (stats["hits"], stats["misses"]) == (1, 1)
    assert stats["tokens_saved"] > 0
    assert openai_api.state.calls["chat"] == 1
