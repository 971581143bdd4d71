"""Semantic lookups: paraphrases hit, nothing crosses a namespace, scope, embedder or expiry."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import asyncpg
import numpy as np
import pytest
from openai import AsyncOpenAI

from llm_pgcache import (
    BackendError,
    Cache,
    EmbedderError,
    EmbeddingDimensionError,
    HashingEmbedder,
    InvalidEmbeddingError,
    InvalidInputError,
    OpenAIEmbedder,
)
from llm_pgcache.config import asyncpg_dsn

from .conftest import MigratedDatabase, connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def semantic(dsn: str, namespace: str, openai_client: AsyncOpenAI) -> AsyncIterator[Cache]:
    """A cache embedding through the real openai client and the test server."""
    embedder = OpenAIEmbedder(openai_client, model="text-embedding-3-small")
    async with connect_cache(
        dsn, namespace=namespace, embedder=embedder, similarity_threshold=0.8, strict=True
    ) as cache:
        yield cache


async def test_paraphrase_hits(
    semantic: Cache, make_request: Factory, make_response: Factory
) -> None:
    await semantic.set(make_request("What is the capital of France?"), make_response("Paris."))
    hit = await semantic.get(make_request("what's the capital city of France?"))
    assert hit is not None
    assert hit.tier == "postgres-semantic"
    assert 0.8 <= hit.similarity < 1.0
    assert hit.matched_prompt == "What is the capital of France?"
    assert hit.accepted_by == "threshold"
    assert hit.response["choices"][0]["message"]["content"] == "Paris."
    assert semantic.counters.hits_by_tier == {"postgres-semantic": 1}


async def test_near_miss_is_rejected_at_the_threshold(
    semantic: Cache,
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    await semantic.set(make_request("capital of France"), make_response("Paris."))
    near_miss = make_request("capital of Spain")  # similarity about 0.5 on the test server
    assert await semantic.get(near_miss) is None
    # Lenient enough for the threshold, but the look-alike guard sees one name for another.
    assert await semantic.get(near_miss, threshold=0.3) is None
    assert semantic.counters.refused_by_reason == {"below_threshold": 1, "guard:entity": 1}
    embedder = OpenAIEmbedder(openai_client, model="text-embedding-3-small")
    async with connect_cache(dsn, namespace=namespace, embedder=embedder, guard=None) as plain:
        lenient = await plain.get(near_miss, threshold=0.3)  # the threshold alone decides
    assert lenient is not None
    assert (lenient.tier, lenient.accepted_by) == ("postgres-semantic", "threshold")


async def test_other_namespaces_never_hit(
    semantic: Cache, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    await semantic.set(make_request("What is the capital of France?"), make_response())
    other = f"{namespace}-other"
    assert (
        await semantic.get(make_request("What is the capital of France?"), namespace=other) is None
    )
    assert await semantic.get(make_request("capital of France?"), namespace=other) is None


@pytest.mark.parametrize(
    "change",
    [
        {"model": "gpt-4o"},
        {"temperature": 0.9},
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": {}}}]},
        {"system": "You are verbose."},
        {"history": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hey"}]},
    ],
)
async def test_other_scopes_never_hit(
    semantic: Cache, make_request: Factory, make_response: Factory, change: dict[str, object]
) -> None:
    await semantic.set(make_request("What is the capital of France?"), make_response())
    request: dict[str, Any] = make_request("what is the capital of France")
    if "system" in change:
        request["messages"] = [
            {"role": "system", "content": change["system"]},
            request["messages"][1],
        ]
    elif "history" in change:
        history: list[dict[str, str]] = change["history"]  # type: ignore[assignment]
        request["messages"] = [*request["messages"][:1], *history, request["messages"][1]]
    else:
        request.update(change)
    assert await semantic.get(request) is None
    assert await semantic.get(make_request("what is the capital of France")) is not None


async def test_expired_rows_never_hit(
    semantic: Cache,
    namespace: str,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
) -> None:
    await semantic.set(make_request("What is the capital of France?"), make_response(), ttl=60)
    assert await semantic.get(make_request("capital of France?")) is not None
    await db.execute(
        "UPDATE llm_cache SET expires_at = now() - interval '1 second' WHERE namespace = $1",
        namespace,
    )
    assert await semantic.get(make_request("capital of France?")) is None


async def test_rows_of_another_embedder_are_never_compared(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    # The test server returns the same vectors whatever the model: only the recorded
    # embedder name can keep the two apart.
    small = OpenAIEmbedder(openai_client, model="text-embedding-3-small")
    other = OpenAIEmbedder(openai_client, model="text-embedding-3-large", dimensions=1536)
    async with connect_cache(
        dsn, namespace=namespace, embedder=small, similarity_threshold=0.8
    ) as a:
        await a.set(make_request("What is the capital of France?"), make_response())
        assert await a.get(make_request("capital of France?")) is not None
    async with connect_cache(
        dsn, namespace=namespace, embedder=other, similarity_threshold=0.8
    ) as b:
        assert await b.get(make_request("capital of France?")) is None
        assert await b.get(make_request("What is the capital of France?")) is not None  # exact


async def test_a_miss_is_embedded_once(
    semantic: Cache, openai_api: OpenAIServer, make_request: Factory, make_response: Factory
) -> None:
    request = make_request("How tall is Mount Everest?")
    assert await semantic.get(request) is None
    await semantic.set(request, make_response("8,849 m"))
    assert openai_api.state.calls["embeddings"] == 1
    assert openai_api.state.embedded_texts == ["How tall is Mount Everest?"]


async def test_only_a_miss_keeps_its_embedding(
    semantic: Cache, openai_api: OpenAIServer, make_request: Factory, make_response: Factory
) -> None:
    """The embedding of a lookup that missed waits for the `set` that follows; a `set`'s
    own, and a hit's, are not kept (no `set` follows them: they would only fill memory)."""
    kept = semantic._semantic.pending  # type: ignore[union-attr]
    await semantic.set(make_request("What is the capital of France?"), make_response("Paris."))
    assert len(kept) == 0
    assert await semantic.get(make_request("what's the capital city of France?")) is not None
    assert len(kept) == 0
    everest = make_request("How tall is Mount Everest?")
    assert await semantic.get(everest) is None
    assert len(kept) == 1
    await semantic.set(everest, make_response("8,849 m"))
    assert len(kept) == 0
    assert openai_api.state.calls["embeddings"] == 3  # France twice, Everest once


async def test_semantic_can_be_turned_off(
    dsn: str,
    namespace: str,
    semantic: Cache,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    await semantic.set(make_request("What is the capital of France?"), make_response())
    assert await semantic.get(make_request("capital of France?"), semantic=False) is None
    embedder = OpenAIEmbedder(openai_client)
    async with connect_cache(dsn, namespace=namespace, embedder=embedder, semantic=False) as off:
        assert await off.get(make_request("capital of France?")) is None
        assert await off.get(make_request("capital of France?"), semantic=True, threshold=0.8)
    async with connect_cache(dsn, namespace=namespace) as exact_only:
        with pytest.raises(InvalidInputError):
            await exact_only.get(make_request("capital of France?"), semantic=True)


async def test_rows_without_embedding_are_never_candidates(
    semantic: Cache, make_request: Factory, make_response: Factory
) -> None:
    await semantic.set(
        make_request("What is the capital of France?"), make_response(), semantic=False
    )
    assert await semantic.get(make_request("capital of France?")) is None


async def test_report_wrong_hit_removes_the_entry(
    semantic: Cache, make_request: Factory, make_response: Factory
) -> None:
    await semantic.set(make_request("capital of France"), make_response("Paris."))
    hit = await semantic.get(make_request("largest city of France"), threshold=0.3)
    assert hit is not None
    assert await semantic.report_wrong_hit(hit)
    assert await semantic.get(make_request("largest city of France"), threshold=0.3) is None
    assert await semantic.get(make_request("capital of France")) is None
    assert not await semantic.report_wrong_hit(hit)


async def test_embedder_of_the_wrong_dimension_is_refused_at_connect(dsn: str) -> None:
    with pytest.raises(EmbeddingDimensionError, match="vector\\(1536\\)"):
        await connect_cache(dsn, embedder=HashingEmbedder(384))


class FixedEmbedder:
    """An embedder (the public protocol) that returns what the test gives it."""

    name = "fixed:test"

    def __init__(self, vector: np.ndarray) -> None:
        self.vector = vector
        self.dim = 1536

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self.vector] * len(texts))


@pytest.mark.parametrize(
    ("vector", "error"),
    [
        (np.zeros(1536, dtype=np.float32), InvalidEmbeddingError),
        (np.full(1536, np.nan, dtype=np.float32), InvalidEmbeddingError),
        (np.full(1536, np.inf, dtype=np.float32), InvalidEmbeddingError),
        (np.where(np.arange(1536) == 7, np.nan, 0.5).astype(np.float32), InvalidEmbeddingError),
        (np.where(np.arange(1536) == 7, -np.inf, 0.5).astype(np.float32), InvalidEmbeddingError),
        (np.ones(384, dtype=np.float32), EmbeddingDimensionError),
    ],
)
async def test_unusable_vectors_are_refused_before_writing(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    make_request: Factory,
    make_response: Factory,
    vector: np.ndarray,
    error: type[Exception],
) -> None:
    async with connect_cache(dsn, namespace=namespace, embedder=FixedEmbedder(vector)) as cache:
        with pytest.raises(error):
            await cache.set(make_request(), make_response())
        with pytest.raises(error):
            await cache.get(make_request())
    assert await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 0


async def test_wrong_dimensions_from_the_api_are_refused(
    semantic: Cache,
    openai_api: OpenAIServer,
    db: asyncpg.Connection,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    openai_api.state.wrong_dimensions = 512
    with pytest.raises(EmbeddingDimensionError):
        await semantic.set(make_request(), make_response())
    assert await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 0


async def test_embedder_down_fails_open_to_exact(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    make_request: Factory,
    make_response: Factory,
) -> None:
    embedder = OpenAIEmbedder(openai_client)
    async with connect_cache(
        dsn, namespace=namespace, embedder=embedder, similarity_threshold=0.8
    ) as cache:
        openai_api.state.fail_status = 500
        await cache.set(make_request("What is the capital of France?"), make_response())
        assert await cache.get(make_request("capital of France?")) is None
        assert await cache.get(make_request("What is the capital of France?")) is not None
        assert cache.counters.backend_errors == 2
    async with connect_cache(dsn, namespace=namespace, embedder=embedder, strict=True) as strict:
        with pytest.raises(EmbedderError):
            await strict.get(make_request("capital of France?"))
        assert issubclass(EmbedderError, BackendError)


async def test_openai_embedder_batches(
    openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    embedder = OpenAIEmbedder(
        openai_client, model="text-embedding-3-small", dimensions=64, batch_size=3
    )
    texts = [f"text number {i}" for i in range(7)]
    vectors = await embedder.embed(texts)
    assert vectors.shape == (7, 64)
    assert vectors.dtype == np.float32
    assert openai_api.state.calls["embeddings"] == 3
    single = await embedder.embed(["text number 5"])
    np.testing.assert_allclose(single[0], vectors[5], rtol=1e-6)  # order kept


async def test_hashing_embedder_is_deterministic_and_lexical() -> None:
    embedder = HashingEmbedder(256)
    a, b, c = await embedder.embed(
        ["What is the capital of France?", "what's the capital of france", "Who wrote Hamlet?"]
    )
    assert float(a @ b) > 0.9
    assert float(a @ c) < 0.3
    np.testing.assert_array_equal((await embedder.embed(["Who wrote Hamlet?"]))[0], c)
    assert embedder.name == "hashing:v1:256"


async def test_overlapping_semantic_lookups_share_rounds(
    create_migrated: MigratedDatabase,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """32 semantic lookups at once run in a few statements (llm_cache_nearest calls, as
    PostgreSQL counts them), not 32, and each is answered its own row."""
    dsn = await create_migrated()
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await admin.execute(f"ALTER DATABASE \"{database}\" SET track_functions = 'pl'")
        async with connect_cache(dsn, namespace=namespace, embedder=HashingEmbedder(1536)) as cache:
            for i in range(32):
                await cache.set(
                    make_request(f"what is the answer number {i}"), make_response(str(i))
                )
            hits = await asyncio.gather(
                *(cache.get(make_request(f"What is the answer number {i}?")) for i in range(32))
            )
        assert [h.response["choices"][0]["message"]["content"] for h in hits if h] == [
            str(i) for i in range(32)
        ]
        calls = 0
        for _ in range(50):  # the cache's backends report their counts as they exit
            await admin.execute("SELECT pg_stat_clear_snapshot()")
            calls = await admin.fetchval(
                "SELECT coalesce(sum(calls), 0) FROM pg_stat_user_functions "
                "WHERE funcname = 'llm_cache_nearest'"
            )
            if calls:
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()
    # 32 in rounds of at most 8, and until a round has returned, rounds of one (at most
    # three in flight): a few statements, not 32
    assert 1 <= calls <= 10, calls
