"""`llm-pgcache demo`: a short scripted session of chat requests through the cache.

The upstream is the real OpenAI API (or any OpenAI-compatible `OPENAI_BASE_URL`) when
configured; otherwise an offline stand-in with canned answers and realistic latency,
labelled as such in the output.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections.abc import Awaitable, Callable
from typing import Any, TextIO

from llm_pgcache.cache.facade import Cache
from llm_pgcache.config import ENV_LOCAL_MODEL
from llm_pgcache.semantic.embedders import bundled_local_model

DEMO_NAMESPACE = "llm-pgcache-demo"
DEMO_DATABASE = "llm_pgcache_demo_384"  # on the embedded server, for the local model
DEMO_MODEL = "gpt-4o-mini"

QUESTIONS = (
    "What is the capital of France?",
    "Explain what a B-tree index is in one sentence.",
    "Give me a haiku about caching.",
)

# The session: each question once (misses), then repeats (exact hits), rewordings
# (semantic hits) and a near miss that must not be answered from the cache.
SESSION = (
    *QUESTIONS,
    *QUESTIONS,
    "what's the capital of france?",
    "In one sentence, explain what a B-tree index is.",
    "What is the capital of Spain?",
)

_CANNED = {
    QUESTIONS[0]: "The capital of France is Paris.",
    QUESTIONS[1]: "A B-tree index keeps keys sorted in a balanced tree of wide pages, so "
    "lookups, range scans and inserts take a logarithmic number of page reads.",
    QUESTIONS[2]: "Asked once, answered once;\nthe second time it is free:\nmemory of rain.",
    SESSION[-1]: "The capital of Spain is Madrid.",
}

Upstream = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


async def offline_upstream(request: dict[str, Any]) -> dict[str, Any]:
    """A stand-in for a chat completion API: canned answers after 0.6-1.2 s."""
    await asyncio.sleep(random.uniform(0.6, 1.2))  # noqa: S311 - simulated latency
    question = request["messages"][-1]["content"]
    answer = _CANNED.get(question, "(offline stand-in) I would answer: " + question)
    prompt_tokens = sum(len(m["content"].split()) for m in request["messages"]) + 8
    completion_tokens = len(answer.split())
    return {
        "id": f"chatcmpl-offline-{random.getrandbits(48):012x}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": request["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def openai_upstream() -> Upstream:
    """The real API through the `openai` client (OPENAI_API_KEY / OPENAI_BASE_URL)."""
    from openai import AsyncOpenAI  # noqa: PLC0415 - only when configured

    client = AsyncOpenAI()

    async def call(request: dict[str, Any]) -> dict[str, Any]:
        completion = await client.chat.completions.create(**request)
        response: dict[str, Any] = completion.model_dump(mode="json")
        return response

    return call


def demo_wants_local_model(environ: dict[str, str] | None = None) -> bool:
    """Whether the demo embeds with the `local` extra's model: installed, and neither a
    model named by LLM_PGCACHE_LOCAL_MODEL nor OpenAI configured instead."""
    env = dict(os.environ) if environ is None else environ
    configured = ENV_LOCAL_MODEL in env or "OPENAI_API_KEY" in env or "OPENAI_BASE_URL" in env
    return not configured and bundled_local_model() is not None


def choose_upstream(environ: dict[str, str] | None = None) -> tuple[str, Upstream]:
    """The upstream to use and a label saying which it is."""
    env = dict(os.environ) if environ is None else environ
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        where = env.get("OPENAI_BASE_URL") or "the OpenAI API"
        return f"upstream: {where}", openai_upstream()
    return (
        "upstream: OFFLINE STAND-IN (no OPENAI_API_KEY or OPENAI_BASE_URL set): canned "
        "answers, simulated latency 0.6-1.2 s",
        offline_upstream,
    )


async def run_demo(cache: Cache, upstream: Upstream, label: str, out: TextIO) -> None:
    """Run `SESSION` through the cache and print, per request, what answered and how fast."""
    await cache.invalidate(namespace=DEMO_NAMESPACE)  # start from a clean slate
    print(label, file=out)
    print(f"{'tier':<18} {'similarity':>10} {'latency':>11}  question", file=out)
    for question in SESSION:
        request = {
            "model": DEMO_MODEL,
            "messages": [{"role": "user", "content": question}],
            "temperature": 0,
        }
        started = time.perf_counter()
        hit = await cache.get(request, namespace=DEMO_NAMESPACE)
        if hit is None:
            response = await upstream(request)
            await cache.set(request, response, ttl=3600, namespace=DEMO_NAMESPACE)
            tier, similarity = "miss -> upstream", ""
        else:
            tier, similarity = hit.tier, f"{hit.similarity:.3f}"
        elapsed_ms = (time.perf_counter() - started) * 1000
        print(f"{tier:<18} {similarity:>10} {elapsed_ms:>8.2f} ms  {question}", file=out)
    counters = cache.counters
    table = (await cache.stats(namespace=DEMO_NAMESPACE)).table
    print(
        f"\nhits {counters.hits}, misses {counters.misses}, hit rate {counters.hit_rate:.0%}, "
        f"tokens saved {counters.tokens_saved}; {table.entries} entries in namespace "
        f"{DEMO_NAMESPACE!r}",
        file=out,
    )
