"""Judges: the built-in LLM judge over the real openai client (strict yes/no, its own
timeout, its tokens counted); a judge inline (served only when it accepts in time) and in
the background (an accepted candidate becomes an alias that goes with its row); judges
that fail, lie or hang never break a lookup."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import asyncpg
import pytest
from openai import AsyncOpenAI
from prometheus_client import CollectorRegistry, generate_latest

from llm_pgcache import (
    Cache,
    HashingEmbedder,
    JudgeCase,
    JudgeError,
    LLMJudge,
    LookAlikeGuard,
    MemoryTier,
    cache_info,
    cached_openai,
    request_keys,
)
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.integrations.prometheus import CacheCollector
from llm_pgcache.semantic.judges import parse_verdict

from .conftest import connect_cache
from .openai_server import OpenAIServer

Factory = Callable[..., dict[str, object]]
STORED = "What is the capital of France?"
REWORDED = "The capital of France is what?"  # the same words: the test judge says yes
OTHER = "What is the capital of Frances?"  # another word: the test judge says no


def case(query: str, candidate: str = STORED) -> JudgeCase:
    response = {"choices": [{"message": {"role": "assistant", "content": "Paris."}}]}
    return JudgeCase(
        query=query, candidate=candidate, response=response, similarity=0.9, request={}
    )


@pytest.mark.parametrize(
    ("reply", "verdict"),
    [("yes", True), ("Yes.", True), (" YES!\n", True), ("no", False), ("No.", False)],
)
def test_a_plain_yes_or_no_is_a_verdict(reply: str, verdict: bool) -> None:
    assert parse_verdict(reply) is verdict


@pytest.mark.parametrize("reply", ["", None, "maybe", "yes, it does", "no.\nyes", "yes no", "y"])
def test_anything_else_is_no_verdict(reply: str | None) -> None:
    with pytest.raises(JudgeError):
        parse_verdict(reply)


async def test_the_llm_judge_asks_the_model_and_counts_its_tokens(
    openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    judge = LLMJudge(openai_client, model="judge-mini")
    assert await judge.judge(case(REWORDED)) is True
    assert await judge.judge(case(OTHER)) is False
    assert judge.calls == 2
    assert judge.prompt_tokens > 20
    assert judge.completion_tokens == 4  # "yes" and "no", one word and one token each
    body = openai_api.state.chat_bodies[0]
    assert body["model"] == "judge-mini"
    assert body["max_tokens"] == 3
    assert "Stored answer: Paris." in body["messages"][-1]["content"]

    openai_api.state.judge_reply = "It depends."
    with pytest.raises(JudgeError, match="not yes or no"):
        await judge.judge(case(REWORDED))
    openai_api.state.judge_reply = None
    openai_api.state.fail_status = 500
    with pytest.raises(JudgeError, match="call failed"):
        await judge.judge(case(REWORDED))
    assert openai_api.state.calls["chat"] == 4  # the judge does not retry


async def test_the_llm_judge_has_its_own_timeout(
    openai_client: AsyncOpenAI, openai_api: OpenAIServer
) -> None:
    openai_api.state.latency = 2.0
    judge = LLMJudge(openai_client, timeout=0.2)
    started = time.perf_counter()
    with pytest.raises(JudgeError):
        await judge.judge(case(REWORDED))
    assert time.perf_counter() - started < 1.5


async def test_inline_a_candidate_is_served_only_when_the_judge_accepts_it(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    judge = LLMJudge(openai_client)
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=HashingEmbedder(1536),
        similarity_threshold=0.3,
        judge=judge,
    ) as cache:
        await cache.set(make_request(STORED), make_response("Paris."))
        assert await cache.get(make_request(OTHER)) is None
        hit = await cache.get(make_request(REWORDED))
        assert hit is not None
        assert (hit.tier, hit.accepted_by, hit.matched_prompt) == (
            "postgres-semantic",
            "judge",
            STORED,
        )
        assert hit.response["choices"][0]["message"]["content"] == "Paris."
        counters = cache.counters
        assert counters.refused_by_reason == {"judge": 1}
        assert counters.judgments == {"inline:refused": 1, "inline:accepted": 1}
        registry = CollectorRegistry()
        registry.register(CacheCollector(cache))
        exposed = generate_latest(registry).decode()
        assert 'llm_pgcache_semantic_refused_total{reason="judge"} 1.0' in exposed
        assert 'llm_pgcache_judgments_total{outcome="accepted",when="inline"} 1.0' in exposed
        assert judge.calls == 2
        exact = await cache.get(make_request(STORED))  # exact hits never ask the judge
        assert exact is not None
        assert exact.accepted_by == "exact"
        assert judge.calls == 2

        client = cached_openai(openai_client, cache)
        reply = await client.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "capital of France is what?"},
            ],
        )
        info = cache_info(reply)
        assert info is not None
        assert (info.accepted_by, info.matched_prompt) == ("judge", STORED)
        await cache.drain()
    rows = await db.fetch(
        "SELECT verdict, source FROM llm_cache_judgments WHERE namespace = $1", namespace
    )
    assert sorted((r["verdict"], r["source"]) for r in rows) == [
        (True, "judge"),
        (True, "judge"),
    ]  # accepted verdicts are recorded as evidence


class RaisingJudge:
    async def judge(self, case: JudgeCase) -> bool:
        raise RuntimeError("the judge broke")


class LyingJudge:
    async def judge(self, case: JudgeCase) -> bool:
        return "yes"  # type: ignore[return-value]


class HangingJudge:
    async def judge(self, case: JudgeCase) -> bool:
        await asyncio.sleep(3600)
        return True


@pytest.mark.parametrize(
    ("judge", "reason"),
    [
        (RaisingJudge(), "judge_error"),
        (LyingJudge(), "judge_error"),
        (HangingJudge(), "judge_timeout"),
    ],
)
async def test_a_judge_that_fails_lies_or_hangs_is_a_miss_counted_and_logged_once(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    caplog: pytest.LogCaptureFixture,
    judge: object,
    reason: str,
) -> None:
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=HashingEmbedder(1536),
        similarity_threshold=0.3,
        judge=judge,  # type: ignore[arg-type]
        judge_timeout=0.2,
    ) as cache:
        await cache.set(make_request(STORED), make_response("Paris."))
        with caplog.at_level(logging.WARNING, logger="llm_pgcache"):
            for _ in range(3):
                started = time.perf_counter()
                assert await cache.get(make_request(REWORDED)) is None
                assert time.perf_counter() - started < 1.0
        assert cache.counters.refused_by_reason == {reason: 3}
        failures = [r for r in caplog.records if "the judge failed" in r.getMessage()]
        assert len(failures) == 1
        assert await cache.get(make_request(STORED)) is not None  # exact hits go on


async def test_judge_options_are_checked(dsn: str, openai_client: AsyncOpenAI) -> None:
    judge = LLMJudge(openai_client)
    embedder = HashingEmbedder(1536)
    async with Cache.connect(dsn, embedder=embedder, judge=judge) as judged:
        # With a judge, candidates from 0.1 below the embedder's threshold are judged.
        assert judged.similarity_threshold == pytest.approx(embedder.suggested_threshold - 0.1)
        assert judged.guard is None  # the judge reads the texts; the guard only if asked
    async with Cache.connect(dsn, embedder=embedder, judge=judge, guard=LookAlikeGuard()) as g:
        assert isinstance(g.guard, LookAlikeGuard)
    async with Cache.connect(dsn, embedder=embedder, judge=judge, similarity_threshold=0.95) as c:
        assert c.similarity_threshold == 0.95
    for options, match in [
        ({"judge": object()}, "judge"),
        ({"judge": judge, "verify": "later"}, "verify"),
        ({"verify": "background"}, "needs a judge"),
        ({"judge": judge, "judge_timeout": None}, "judge_timeout"),
        ({"judge": judge, "judge_timeout": -1}, "judge_timeout"),
        ({"max_false_hit_rate": 1.5}, "max_false_hit_rate"),
        ({"max_false_hit_rate": 0}, "max_false_hit_rate"),
        ({"audit_rate": "all"}, "audit_rate"),
    ]:
        with pytest.raises(InvalidInputError, match=match):
            await Cache.connect(dsn, embedder=HashingEmbedder(1536), **options)  # type: ignore[arg-type]


async def poll(lookup: Callable[[], object], seconds: float = 5.0) -> object:
    """What `lookup()` (a coroutine function) returns once it is not None."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = await lookup()  # type: ignore[misc]
        if found is not None:
            return found
        await asyncio.sleep(0.05)
    raise AssertionError(f"nothing within {seconds} s")


async def test_in_the_background_an_accepted_candidate_becomes_an_alias(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    judge = LLMJudge(openai_client)
    async with (
        connect_cache(
            dsn,
            namespace=namespace,
            embedder=HashingEmbedder(1536),
            similarity_threshold=0.3,
            judge=judge,
            verify="background",
            memory=MemoryTier(),
        ) as cache,
        connect_cache(dsn, namespace=namespace) as other_process,
    ):
        await cache.set(make_request(STORED), make_response("Paris."), ttl=600, tags=["geo"])
        started = time.perf_counter()
        assert await cache.get(make_request(REWORDED)) is None  # no evidence: judged later
        assert time.perf_counter() - started < 0.5  # the judge is off the request path
        assert await cache.get(make_request(OTHER)) is None
        await cache.drain()
        hit = await cache.get(make_request(REWORDED))
        assert hit is not None
        assert (hit.tier, hit.accepted_by, hit.matched_prompt) == ("postgres-exact", "alias", None)
        assert hit.similarity > 0.99  # the similarity it was judged at (the same words)
        assert hit.response["choices"][0]["message"]["content"] == "Paris."
        assert await cache.get(make_request(OTHER)) is None  # refused: no alias
        await cache.drain()
        counters = cache.counters  # the refused pair was not put to the judge again
        assert counters.judgments == {"background:accepted": 1, "background:refused": 1}
        assert counters.refused_by_reason == {"below_serve_threshold": 3}
        assert judge.calls == 2

        original = request_keys(make_request(STORED)).exact_key
        alias_key = request_keys(make_request(REWORDED)).exact_key
        rows = await db.fetch(
            "SELECT namespace, cache_key, alias_of, tags, expires_at, embedding IS NULL AS bare "
            "FROM llm_cache WHERE alias_of IS NOT NULL AND namespace = $1",
            namespace,
        )
        assert [(r["cache_key"], r["alias_of"], r["tags"], r["bare"]) for r in rows] == [
            (alias_key, original, ["geo"], True)
        ]
        expiry = await db.fetchval(
            "SELECT expires_at FROM llm_cache WHERE namespace = $1 AND cache_key = $2",
            namespace,
            original,
        )
        assert rows[0]["expires_at"] == expiry
        verdicts = await db.fetch(
            "SELECT verdict, source FROM llm_cache_judgments WHERE namespace = $1", namespace
        )
        assert sorted((r["verdict"], r["source"]) for r in verdicts) == [
            (False, "judge"),
            (True, "judge"),
        ]

        # From the memory tier now; another process invalidates the row it copies.
        again = await cache.get(make_request(REWORDED))
        assert again is not None
        assert (again.tier, again.accepted_by) == ("memory", "alias")
        assert await other_process.invalidate(key=make_request(STORED)) == 2
        await poll(lambda: _missing(cache, make_request(REWORDED)))
        assert (
            await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 0
        )


async def _missing(cache: Cache, request: dict[str, object]) -> bool | None:
    return True if await cache.get(request, semantic=False) is None else None


async def test_an_alias_goes_with_its_row_on_replacement_and_by_tag_and_stays_in_its_namespace(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=HashingEmbedder(1536),
        similarity_threshold=0.3,
        judge=LLMJudge(openai_client),
        verify="background",
    ) as cache:

        async def aliased() -> None:
            await cache.set(make_request(STORED), make_response("Paris."), tags=["geo"])
            assert await cache.get(make_request(REWORDED)) is None
            await cache.drain()
            hit = await cache.get(make_request(REWORDED))
            assert hit is not None
            assert hit.accepted_by == "alias"

        await aliased()
        assert await cache.get(make_request(REWORDED), namespace=f"{namespace}-other") is None
        await cache.set(make_request(STORED), make_response("Paris, since 508."))
        served = await cache.get(make_request(REWORDED), semantic=False)
        assert served is None  # the alias held the old answer: gone with it

        await aliased()
        assert await cache.invalidate(tag="geo") == 2
        assert await cache.get(make_request(REWORDED), semantic=False) is None

        await aliased()
        hit = await cache.get(make_request(REWORDED))
        assert hit is not None
        assert await cache.report_wrong_hit(hit)  # the entry that answered, and its aliases
        assert await cache.get(make_request(REWORDED), semantic=False) is None
    namespaces = await db.fetch(
        "SELECT DISTINCT namespace FROM llm_cache_judgments WHERE namespace LIKE $1",
        f"{namespace}%",
    )
    assert [r["namespace"] for r in namespaces] == [namespace]


async def test_an_alias_made_while_its_row_is_being_invalidated_is_never_served(
    dsn: str,
    namespace: str,
    db: asyncpg.Connection,
    openai_client: AsyncOpenAI,
    make_request: Factory,
    make_response: Factory,
) -> None:
    """The background verdict lands while another transaction deletes the row: the alias
    waits for it, then finds nothing to copy. And an alias left behind by any race (its
    row replaced since it was copied) is never served, and goes at the next invalidation."""
    async with connect_cache(
        dsn,
        namespace=namespace,
        embedder=HashingEmbedder(1536),
        similarity_threshold=0.3,
        judge=LLMJudge(openai_client),
        verify="background",
    ) as cache:
        await cache.set(make_request(STORED), make_response("Paris."))
        original = request_keys(make_request(STORED)).exact_key
        async with db.transaction():
            await db.execute(
                "DELETE FROM llm_cache WHERE namespace = $1 AND cache_key = $2", namespace, original
            )
            assert await cache.get(make_request(REWORDED)) is None
            await asyncio.sleep(0.3)  # the verdict is in: its alias waits for this delete
        await cache.drain()
        assert (
            await db.fetchval("SELECT count(*) FROM llm_cache WHERE namespace = $1", namespace) == 0
        )
        assert cache.counters.judgments == {"background:accepted": 1}

        await cache.set(make_request(STORED), make_response("Paris."))
        assert await cache.get(make_request(REWORDED)) is None
        await cache.drain()
        assert (await cache.get(make_request(REWORDED), semantic=False)) is not None
        # The row replaced behind the cache's back, its alias left as a race would leave it.
        await db.execute(
            "UPDATE llm_cache SET created_at = now(), response = '{\"stale\": false}' "
            "WHERE namespace = $1 AND cache_key = $2",
            namespace,
            original,
        )
        assert await cache.get(make_request(REWORDED), semantic=False) is None
        assert (
            await db.fetchval(
                "SELECT count(*) FROM llm_cache WHERE namespace = $1 AND alias_of IS NOT NULL",
                namespace,
            )
            == 1
        )
        assert await cache.invalidate(tag="unused") == 0
        assert (
            await db.fetchval(
                "SELECT count(*) FROM llm_cache WHERE namespace = $1 AND alias_of IS NOT NULL",
                namespace,
            )
            == 0
        )
