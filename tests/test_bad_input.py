"""Bad input: a clear llm_pgcache error, or correct storage; never a lost or corrupt entry."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import timedelta

import asyncpg
import pytest

from llm_pgcache import (
    Cache,
    InvalidInputError,
    InvalidNamespaceError,
    InvalidRequestError,
    InvalidResponseError,
    InvalidTTLError,
    LLMPgCacheError,
)
from llm_pgcache.entries import NUL_SAFE_MARKER

from .conftest import connect_cache

Factory = Callable[..., dict[str, object]]


@pytest.fixture
async def stored(cache: Cache, make_request: Factory, make_response: Factory) -> dict[str, object]:
    """An entry that must survive every bad call of a test."""
    response = make_response("the original answer")
    await cache.set(make_request(), response, tags=["keep"])
    return response


async def assert_intact(cache: Cache, make_request: Factory, response: dict[str, object]) -> None:
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response == response
    assert hit.tags == ("keep",)


async def test_nul_in_prompt_and_response_round_trips(
    cache: Cache,
    db: asyncpg.Connection,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
) -> None:
    request = make_request("before\x00after")
    response = make_response("answer with \x00 inside")
    await cache.set(request, response)
    hit = await cache.get(request)
    assert hit is not None
    assert hit.response == response
    assert await cache.get(make_request("beforeafter")) is None  # NUL is part of the key
    prompt = await db.fetchval("SELECT prompt FROM llm_cache WHERE namespace = $1", namespace)
    assert prompt == "before\ufffdafter"


async def test_nul_in_keys_of_the_response(cache: Cache, make_request: Factory) -> None:
    response = {"id": "x", "weird\x00key": ["\x00"], "nested": {"a": "b\x00"}}
    await cache.set(make_request(), response)
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response == response


async def test_a_response_using_the_wrapper_key_round_trips(
    cache: Cache, make_request: Factory
) -> None:
    response = {NUL_SAFE_MARKER: "not base64 at all"}
    await cache.set(make_request(), response)
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response == response


async def test_escape_lookalikes_and_unicode_round_trip(
    cache: Cache, make_request: Factory
) -> None:
    response = {"text": "literal \\u0000 backslash, emoji 🦀, lone surrogate \ud800, ümlaut"}
    await cache.set(make_request(), response)
    hit = await cache.get(make_request())
    assert hit is not None
    assert hit.response == response


async def test_one_megabyte_prompt_and_response(
    cache: Cache, make_request: Factory, make_response: Factory
) -> None:
    request = make_request("q" * 1_000_000)
    response = make_response("a" * 1_000_000)
    await cache.set(request, response)
    hit = await cache.get(request)
    assert hit is not None
    assert hit.response == response


async def test_oversized_response_is_refused(
    dsn: str,
    namespace: str,
    make_request: Factory,
    make_response: Factory,
    stored: dict[str, object],
    cache: Cache,
) -> None:
    async with connect_cache(dsn, namespace=namespace, max_entry_bytes=10_000) as small:
        with pytest.raises(InvalidInputError, match="max_entry_bytes"):
            await small.set(make_request(), make_response("x" * 20_000))
    await assert_intact(cache, make_request, stored)


@pytest.mark.parametrize(
    "response",
    [
        {"created": object()},
        {"score": math.nan},
        {"set": {1, 2}},
        "a plain string",
        ["a", "list"],
        None,
    ],
)
async def test_non_json_response_is_refused(
    cache: Cache, make_request: Factory, stored: dict[str, object], response: object
) -> None:
    with pytest.raises(InvalidResponseError):
        await cache.set(make_request(), response)
    await assert_intact(cache, make_request, stored)


@pytest.mark.parametrize(
    "ttl",
    [0, -1, -0.5, math.inf, math.nan, 10**12, timedelta(seconds=-5), "60", True],
)
async def test_bad_ttl_is_refused(
    cache: Cache,
    make_request: Factory,
    make_response: Factory,
    stored: dict[str, object],
    ttl: object,
) -> None:
    with pytest.raises(InvalidTTLError):
        await cache.set(make_request(), make_response("replacement"), ttl=ttl)  # type: ignore[arg-type]
    await assert_intact(cache, make_request, stored)


@pytest.mark.parametrize("bad_namespace", ["", "x" * 201, "a\x00b", 42])
async def test_bad_namespace_is_refused(
    cache: Cache,
    make_request: Factory,
    make_response: Factory,
    stored: dict[str, object],
    bad_namespace: object,
) -> None:
    with pytest.raises(InvalidNamespaceError):
        await cache.set(make_request(), make_response("replacement"), namespace=bad_namespace)  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError):
        await cache.get(make_request(), namespace=bad_namespace)  # type: ignore[arg-type]
    with pytest.raises(InvalidNamespaceError):
        await cache.invalidate(namespace=bad_namespace)  # type: ignore[arg-type]
    await assert_intact(cache, make_request, stored)


async def test_bad_namespace_at_connect(dsn: str) -> None:
    with pytest.raises(InvalidNamespaceError):
        await connect_cache(dsn, namespace="")


@pytest.mark.parametrize("tags", ["one-string", [""], ["a\x00"], [42], ["x" * 201]])
async def test_bad_tags_are_refused(
    cache: Cache,
    make_request: Factory,
    make_response: Factory,
    stored: dict[str, object],
    tags: object,
) -> None:
    with pytest.raises(InvalidInputError):
        await cache.set(make_request(), make_response("replacement"), tags=tags)  # type: ignore[arg-type]
    await assert_intact(cache, make_request, stored)


async def test_bad_request_is_refused(
    cache: Cache, make_request: Factory, make_response: Factory, stored: dict[str, object]
) -> None:
    with pytest.raises(InvalidRequestError):
        await cache.set({"model": "gpt-4o-mini"}, make_response("replacement"))
    with pytest.raises(InvalidRequestError):
        await cache.get(make_request(temperature=math.inf))
    await assert_intact(cache, make_request, stored)


async def test_invalidating_with_a_nul_tag_is_a_clear_error(
    cache: Cache, make_request: Factory, stored: dict[str, object]
) -> None:
    with pytest.raises(LLMPgCacheError):
        await cache.invalidate(tag="a\x00b")
    await assert_intact(cache, make_request, stored)
