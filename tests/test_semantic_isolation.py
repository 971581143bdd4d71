"""Semantic lookups can only add hits: a slow or failing semantic path (embedder or
PostgreSQL) never costs an exact hit, never stalls a call past `embed_timeout`, and never
drops a store."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import asyncpg
import numpy as np
import pytest
from openai import AsyncOpenAI

from llm_pgcache import (
    HashingEmbedder,
    InvalidEmbeddingError,
    InvalidInputError,
    SearchOptions,
    cache_info,
    cached_openai,
)
from llm_pgcache.config import asyncpg_dsn

from .conftest import MigratedDatabase, connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]
MARGIN = 0.5  # seconds a busy CI machine may add


class SlowEmbedder:
    """The offline embedder, `delay` seconds late."""

    name = "slow:test"
    dim = 1536

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self._inner = HashingEmbedder(1536)
        self.texts: list[str] = []  # embedded, in calls' order

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        await asyncio.sleep(self.delay)
        return await self._inner.embed(texts)


class BrokenEmbedder:
    name = "broken:test"
    dim = 1536

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        raise ConnectionError("embeddings API unreachable")


async def test_a_hanging_embedder_costs_at_most_embed_timeout(
    dsn: str,
    db: asyncpg.Connection,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    make_request: Factory,
    make_response: Factory,
) -> None:
    embed_timeout = 0.3
    async with connect_cache(
        dsn, namespace=namespace, embedder=SlowEmbedder(1.5), embed_timeout=embed_timeout
    ) as cache:
        started = time.perf_counter()
        assert await cache.get(make_request("How tall is Everest?")) is None
        assert time.perf_counter() - started < embed_timeout + MARGIN

        started = time.perf_counter()  # a store that does not wait for its embedding
        await cache.set(make_request("Who wrote Hamlet?"), make_response("Shakespeare."))
        assert time.perf_counter() - started < embed_timeout + MARGIN
        assert await cache.get(make_request("Who wrote Hamlet?")) is not None  # stored

        client = cached_openai(openai_client, cache)
        started = time.perf_counter()
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Name a prime."}]
        )
        assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
        assert time.perf_counter() - started < embed_timeout + MARGIN + 0.5

        # The lookup's embedding came late, and serves the store that follows it.
        await asyncio.sleep(1.5)
        await cache.set(make_request("How tall is Everest?"), make_response("8,849 m."))
        embedded = await db.fetchval(
            "SELECT embedding IS NOT NULL FROM llm_cache WHERE namespace = $1 AND prompt = $2",
            namespace,
            "How tall is Everest?",
        )
        assert embedded


async def test_a_store_waits_for_the_embedding_its_lookup_gave_up_on(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    """The lookup stops waiting at its deadline; the store that follows at once, with a
    longer one, waits for that same embedding (no second call) and stores it: the
    lookup's giving up did not cancel it for the store."""
    embedder = SlowEmbedder(0.3)
    async with connect_cache(dsn, namespace=namespace, embedder=embedder) as cache:
        request = make_request("How deep is the Mariana Trench?")
        started = time.perf_counter()
        assert await cache.get(request, embed_timeout=0.05) is None
        assert time.perf_counter() - started < 0.05 + MARGIN
        await cache.set(request, make_response("11 km."), embed_timeout=5.0)
        assert embedder.texts == ["How deep is the Mariana Trench?"]
        assert len(cache._semantic.pending) == 0  # type: ignore[union-attr]  # the set took it
        hit = await cache.get(make_request("how deep is the mariana trench"), threshold=0.5)
        assert hit is not None
        assert hit.tier == "postgres-semantic"


async def test_embed_timeout_per_call(
    dsn: str,
    namespace: str,
    openai_client: AsyncOpenAI,
    openai_api: OpenAIServer,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """A call's own `embed_timeout` bounds its wait, shorter or longer than the cache's."""
    async with connect_cache(
        dsn, namespace=namespace, embedder=SlowEmbedder(0.6), embed_timeout=2.0
    ) as cache:
        started = time.perf_counter()
        assert await cache.get(make_request("Speed of light?"), embed_timeout=0.05) is None
        assert time.perf_counter() - started < 0.05 + MARGIN
        assert cache.counters.backend_errors >= 1  # the late embedding, counted

        started = time.perf_counter()
        await cache.set(make_request("Boiling point?"), make_response("100 C"), embed_timeout=0.05)
        assert time.perf_counter() - started < 0.05 + MARGIN

        client = cached_openai(openai_client, cache).with_cache(embed_timeout=0.05)
        started = time.perf_counter()
        reply = await client.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "Name an even prime."}]
        )
        assert cache_info(reply).tier == "miss"  # type: ignore[union-attr]
        assert time.perf_counter() - started < 0.05 + MARGIN + 0.5

    async with connect_cache(
        dsn, namespace=namespace, embedder=SlowEmbedder(0.3), embed_timeout=0.05
    ) as cache:
        # A longer per-call deadline waits for the embedding the cache's default gives up on.
        request = make_request("Who painted the Guernica?")
        await cache.set(request, make_response("Picasso."), embed_timeout=5.0)
        paraphrase = make_request("who painted the guernica")
        assert await cache.get(paraphrase, threshold=0.5) is None  # the default: too late
        hit = await cache.get(paraphrase, threshold=0.5, embed_timeout=5.0)
        assert hit is not None
        assert hit.tier == "postgres-semantic"


@pytest.mark.parametrize("bad", [0, -1.0, float("nan"), float("inf"), "slow", True])
async def test_bad_timeouts_are_refused(
    dsn: str, namespace: str, make_request: Factory, bad: object
) -> None:
    with pytest.raises(InvalidInputError, match="embed_timeout"):
        async with connect_cache(dsn, namespace=namespace, embed_timeout=bad):  # type: ignore[arg-type]
            pass
    with pytest.raises(InvalidInputError, match="lookup_timeout"):
        async with connect_cache(dsn, namespace=namespace, lookup_timeout=bad):  # type: ignore[arg-type]
            pass
    async with connect_cache(dsn, namespace=namespace, embedder=HashingEmbedder(1536)) as cache:
        with pytest.raises(InvalidInputError, match="embed_timeout"):
            await cache.get(make_request("x"), embed_timeout=bad)  # type: ignore[arg-type]


async def test_a_failing_embedder_never_turns_exact_lookups_off(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    async with connect_cache(dsn, namespace=namespace) as plain:
        for i in range(5):
            await plain.set(make_request(f"cached {i}"), make_response(f"answer {i}"))
    async with connect_cache(dsn, namespace=namespace, embedder=BrokenEmbedder()) as cache:
        for i in range(30):  # far past every breaker's threshold, for over a second
            assert await cache.get(make_request(f"paraphrase {i}")) is None
            await asyncio.sleep(0.05)
        for i in range(5):
            hit = await cache.get(make_request(f"cached {i}"))
            assert hit is not None
            assert hit.tier == "postgres-exact"
        await cache.set(make_request("stored meanwhile"), make_response())  # exact only
        assert await cache.get(make_request("stored meanwhile")) is not None


@pytest.mark.parametrize("given", [False, True], ids=["embedded", "vectors given"])
async def test_a_slow_semantic_path_loses_no_exact_hit_at_32_in_flight(
    create_migrated: MigratedDatabase,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    given: bool,
) -> None:
    """Semantic queries stuck on a lock (the index state they read is locked) while a
    mixed stream runs 32 at a time: every exact hit is still served, also when lookups
    bring their vectors (they would be one statement on an idle semantic path: this one
    is busy)."""
    dsn = await create_migrated()
    embedder = HashingEmbedder(1536)
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=embedder,
        lookup_timeout=0.5,
        search=SearchOptions(timeout=2.0, index_state_seconds=0.0),
    ) as cache:
        for i in range(50):
            await cache.set(make_request(f"stored question {i}"), make_response(f"answer {i}"))
        locker = await asyncpg.connect(asyncpg_dsn(dsn))
        try:
            transaction = locker.transaction()
            await transaction.start()
            await locker.execute("LOCK TABLE llm_cache_index_builds IN ACCESS EXCLUSIVE MODE")
            slots = asyncio.Semaphore(32)

            async def lookup(text: str) -> bool:
                vector = (await embedder.embed([text]))[0] if given else None
                async with slots:
                    return await cache.get(make_request(text), embedding=vector) is not None

            async def exact(i: int) -> bool:
                return await lookup(f"stored question {i % 50}")

            async def semantic(i: int) -> None:
                await lookup(f"an unseen paraphrase {i}")

            calls = [exact(i) if i % 4 else semantic(i) for i in range(500)]  # mixed
            results = await asyncio.gather(*calls)
            await transaction.rollback()
        finally:
            await locker.close()
    exact_hits = [hit for i, hit in enumerate(results) if i % 4]
    assert exact_hits == [True] * 375


class CountingEmbedder:
    """The offline embedder, counting its calls, a little slow (as a model is)."""

    name = "counting:test"
    dim = 1536

    def __init__(self) -> None:
        self.calls: list[int] = []
        self._inner = HashingEmbedder(1536)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(len(texts))
        await asyncio.sleep(0.05)
        vectors = await self._inner.embed(texts)
        for row, text in enumerate(texts):
            if text == "poison":
                vectors[row] = 0.0
        return vectors


async def test_concurrent_lookups_share_embedder_calls_and_fail_alone(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    embedder = CountingEmbedder()
    async with connect_cache(dsn, namespace=namespace, embedder=embedder) as cache:
        await cache.set(make_request("What is the capital of France?"), make_response())
        embedder.calls.clear()
        questions = [f"what is the capital of france {i}" for i in range(31)] + ["poison"]
        outcomes = await asyncio.gather(
            *(cache.get(make_request(q)) for q in questions), return_exceptions=True
        )
    assert sum(embedder.calls) == 32
    assert len(embedder.calls) <= 8  # 32 texts in a few batched calls, not 32
    assert sum(1 for o in outcomes[:31] if isinstance(o, BaseException)) == 0
    assert isinstance(outcomes[31], InvalidEmbeddingError)  # the zero vector fails alone


@pytest.mark.parametrize(
    "options",
    [
        {"max_in_flight": 0},
        {"max_batch": -1},
        {"candidates": 0},
        {"probes": 0},
        {"ef_search": 1.5},
        {"timeout": 0},
        {"index_state_seconds": -1},
        {"max_probes": True},
    ],
)
def test_bad_search_options_are_refused(options: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        SearchOptions(**options)  # type: ignore[arg-type]
