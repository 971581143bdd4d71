"""Lookups and stores given the caller's embedding: nothing embedded, the exact and the
semantic lookup in one statement while the semantic path is idle, bad vectors refused."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar

import asyncpg
import numpy as np
import pytest

from llm_pgcache import (
    EmbeddingDimensionError,
    HashingEmbedder,
    InvalidEmbeddingError,
    InvalidInputError,
    init_connection,
)
from llm_pgcache.config import asyncpg_dsn
from llm_pgcache.postgres import nearest_sql, sql

from .conftest import MigratedDatabase, connect_cache

Factory = Callable[..., dict[str, object]]
DIM = 1536


class RecordingEmbedder:
    """The offline embedder (same name, same vectors), recording the texts it embeds;
    `delay` seconds late (as a model or an API is), or failing every call (`broken`)."""

    name = HashingEmbedder(DIM).name
    dim = DIM

    def __init__(self, *, delay: float = 0.0, broken: bool = False) -> None:
        self.texts: list[str] = []
        self.delay = delay
        self.broken = broken
        self._inner = HashingEmbedder(DIM)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        self.texts += texts
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.broken:
            raise ConnectionError("embeddings API unreachable")
        return await self._inner.embed(texts)


async def embedding_of(text: str) -> np.ndarray:
    vector: np.ndarray = (await HashingEmbedder(DIM).embed([text]))[0]
    return vector


async def nearest_searches(admin: asyncpg.Connection) -> tuple[int, int]:
    """The calls of llm_cache_exact_round and llm_cache_nearest PostgreSQL has counted
    in `admin`'s database, once the counts stop moving (backends report theirs within a
    second of going idle, and as they exit)."""
    counts: list[tuple[int, int]] = []
    for _ in range(50):
        await admin.execute("SELECT pg_stat_clear_snapshot()")
        calls = dict(
            await admin.fetch(
                "SELECT funcname, calls FROM pg_stat_user_functions WHERE funcname = ANY($1)",
                ["llm_cache_exact_round", "llm_cache_nearest"],
            )
        )
        counts.append((calls.get("llm_cache_exact_round", 0), calls.get("llm_cache_nearest", 0)))
        if len(counts) >= 5 and len(set(counts[-5:])) == 1:
            break
        await asyncio.sleep(0.1)
    return counts[-1]


class StatementLog:
    """A caller-owned pool whose connections log the lookup statements they run."""

    KINDS: ClassVar[dict[str, str]] = {
        sql.GET_EXACT: "exact",
        sql.GET_EXACT_ROUND: "exact",
        nearest_sql.SEMANTIC_NEAREST_ROUND: "nearest",
        nearest_sql.EXACT_OR_NEAREST: "exact or nearest",
    }

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.pool: asyncpg.Pool | None = None

    async def init(self, connection: asyncpg.Connection) -> None:
        await init_connection(connection)
        connection.add_query_logger(self._logged)

    async def taken(self) -> list[str]:
        """The statements logged so far (asyncpg calls loggers soon after a statement
        ends: one turn of the loop later), forgotten here."""
        await asyncio.sleep(0)
        taken, self.statements = self.statements, []
        return taken

    def _logged(self, record: Any) -> None:
        kind = self.KINDS.get(record.query)
        if kind is not None:
            self.statements.append(kind)


async def test_a_lookup_and_a_store_given_their_embedding_embed_nothing(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    embedder = RecordingEmbedder()
    stored = "What is the capital of France?"
    asked = "what's the capital city of France?"
    async with connect_cache(
        dsn, namespace=namespace, embedder=embedder, similarity_threshold=0.5, strict=True
    ) as cache:
        await cache.set(
            make_request(stored), make_response("Paris."), embedding=await embedding_of(stored)
        )
        hit = await cache.get(make_request(asked), embedding=(await embedding_of(asked)).tolist())
        assert hit is not None
        assert hit.tier == "postgres-semantic"
        assert hit.response["choices"][0]["message"]["content"] == "Paris."
        assert hit.matched_prompt == stored
        # A miss keeps the embedding it was given for the `set` that follows.
        everest = make_request("How tall is Mount Everest?")
        assert await cache.get(everest, embedding=await embedding_of("Everest")) is None
        await cache.set(everest, make_response("8,849 m"))
        found = await cache.get(make_request("Everest"))  # embedded by the embedder
        assert found is not None
        assert found.matched_prompt == "How tall is Mount Everest?"
    assert embedder.texts == ["Everest"]


async def test_a_lookup_given_its_embedding_hits_while_the_embedder_is_down(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    stored = "What is the capital of France?"
    async with connect_cache(
        dsn, namespace=namespace, embedder=RecordingEmbedder(), similarity_threshold=0.5
    ) as cache:
        await cache.set(make_request(stored), make_response("Paris."))
    broken = RecordingEmbedder(broken=True)
    async with connect_cache(
        dsn, namespace=namespace, embedder=broken, similarity_threshold=0.5
    ) as cache:
        asked = make_request("capital of France?")
        assert await cache.get(asked) is None  # the embedder failed: a miss
        hit = await cache.get(asked, embedding=await embedding_of("capital of France?"))
        assert hit is not None
        assert hit.tier == "postgres-semantic"
    assert broken.texts == ["capital of France?"]


@pytest.fixture
async def logged(dsn: str) -> AsyncIterator[StatementLog]:
    log = StatementLog()
    log.pool = await asyncpg.create_pool(asyncpg_dsn(dsn), min_size=4, max_size=4, init=log.init)
    yield log
    await log.pool.close()


async def test_a_lookup_given_its_vector_is_one_statement_while_the_path_is_idle(
    logged: StatementLog, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    """Semantic hits one at a time: through an embedder, two statements each (the
    exact-key miss, then the nearest row; exact hits never embed), also one that answers
    at once; given their vectors, one each (after the first, which reads the index
    state). Exact hits given their vectors likewise. Eight at once given their vectors:
    one such statement, the others' exact lookups the usual way (the path was busy)."""
    stored = [f"what is the answer number {i}" for i in range(8)]
    slow, instant = RecordingEmbedder(delay=0.005), RecordingEmbedder()
    ways: dict[str, list[str]] = {}
    for way, embedder in (("embedded slowly", slow), ("given", slow), ("embedded", instant)):
        async with connect_cache(
            pool=logged.pool, namespace=namespace, embedder=embedder, similarity_threshold=0.5
        ) as cache:
            if not ways:
                for i, text in enumerate(stored):
                    await cache.set(make_request(text), make_response(str(i)))
                for text in stored:
                    assert await cache.get(make_request(text)) is not None
                assert slow.texts == stored  # the sets' embeddings only
            await logged.taken()
            for i in range(8):
                text = f"{way}: the answer number {i}?"
                given = await embedding_of(text) if way == "given" else None
                hit = await cache.get(make_request(text), embedding=given)
                assert hit is not None
                assert hit.tier == "postgres-semantic"
                assert hit.response["choices"][0]["message"]["content"] == str(i)
            ways[way] = await logged.taken()
    async with connect_cache(
        pool=logged.pool, namespace=namespace, embedder=slow, similarity_threshold=0.5
    ) as cache:
        for text in stored:
            hit = await cache.get(make_request(text), embedding=await embedding_of(text))
            assert hit is not None
            assert hit.tier == "postgres-exact"
        ways["exact hits"] = await logged.taken()
        vectors = [await embedding_of(text) for text in stored]
        hits = await asyncio.gather(
            *(cache.get(make_request(t), embedding=v) for t, v in zip(stored, vectors, strict=True))
        )
        assert [h.tier if h else None for h in hits] == ["postgres-exact"] * 8
        together = await logged.taken()
    assert ways["embedded slowly"] == ["exact", "nearest"] * 8
    assert ways["embedded"] == ["exact", "nearest"] * 8
    # A new cache's first lookups go the two ways while it reads the index state.
    for way, two_ways in (("given", ["exact", "nearest"]), ("exact hits", ["exact"])):
        one_statement = ways[way].count("exact or nearest")
        assert one_statement >= 5, ways[way]
        assert ways[way] == two_ways * (8 - one_statement) + ["exact or nearest"] * one_statement
    assert together.count("exact or nearest") == 1
    assert "exact" in together  # the others' exact lookups, in rounds
    assert "nearest" not in together  # exact hits: no semantic lookup


async def test_an_exact_hit_given_its_vector_runs_no_semantic_search(
    create_migrated: MigratedDatabase,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """Given their vectors, exact hits one at a time (the one statement each) and eight
    at once: PostgreSQL never ran llm_cache_nearest (the exact rounds it ran, as the
    statement's first part, show that its counts came in)."""
    dsn = await create_migrated()
    database = dsn.split("?", 1)[0].rsplit("/", 1)[1]
    admin = await asyncpg.connect(asyncpg_dsn(dsn))
    try:
        await admin.execute(f"ALTER DATABASE \"{database}\" SET track_functions = 'pl'")
        texts = [f"what is the answer number {i}" for i in range(8)]
        vectors = [await embedding_of(text) for text in texts]
        requests = [make_request(text) for text in texts]
        async with connect_cache(
            dsn, namespace=namespace, embedder=RecordingEmbedder(), similarity_threshold=0.5
        ) as cache:
            for i, request in enumerate(requests):
                await cache.set(request, make_response(str(i)), embedding=vectors[i])
            alone = [
                await cache.get(r, embedding=v) for r, v in zip(requests, vectors, strict=True)
            ]
            together = await asyncio.gather(
                *(cache.get(r, embedding=v) for r, v in zip(requests, vectors, strict=True))
            )
        for hits in (alone, together):
            assert [h.tier if h else None for h in hits] == ["postgres-exact"] * 8
            assert [h.response["choices"][0]["message"]["content"] for h in hits if h] == [
                str(i) for i in range(8)
            ]
        exact_rounds, nearest = await nearest_searches(admin)
        assert exact_rounds >= 1  # the first lookups may go while the index state is read
        assert nearest == 0
    finally:
        await admin.close()


async def test_unusable_embeddings_are_refused_and_nothing_is_written(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    request = make_request("What is the capital of France?")
    async with connect_cache(dsn, namespace=namespace, embedder=RecordingEmbedder()) as cache:
        for bad, error in [
            (np.zeros(DIM), InvalidEmbeddingError),
            ([float("nan")] * DIM, InvalidEmbeddingError),
            (["a"] * DIM, InvalidEmbeddingError),
            ([[1.0] * DIM], InvalidEmbeddingError),
            ("not a vector", InvalidEmbeddingError),
            (np.ones(DIM - 1), EmbeddingDimensionError),
        ]:
            with pytest.raises(error):
                await cache.get(request, embedding=bad)
            with pytest.raises(error):
                await cache.set(request, make_response(), embedding=bad)
        assert await cache.get(request) is None  # nothing was written
    async with connect_cache(dsn, namespace=namespace) as exact_only:
        with pytest.raises(InvalidInputError, match="embedder"):
            await exact_only.get(request, embedding=np.ones(DIM))
        with pytest.raises(InvalidInputError, match="embedder"):
            await exact_only.set(request, make_response(), embedding=np.ones(DIM))
        assert await exact_only.get(request) is None
