"""`SyncCache`: the cache from code without an event loop, from many threads at once;
refused inside a running loop; closed for good."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest

from llm_pgcache import ConfigurationError, HashingEmbedder, SyncCache

Factory = Callable[..., dict[str, object]]


def test_the_cache_from_sync_code_and_many_threads(
    dsn: str, namespace: str, make_request: Factory, make_response: Factory
) -> None:
    with SyncCache.connect(
        dsn, namespace=namespace, lookup_timeout=1.0, embedder=HashingEmbedder(1536)
    ) as cache:
        assert cache.get(make_request("What is the capital of France?")) is None
        cache.set(make_request("What is the capital of France?"), make_response("Paris."), ttl=60)
        hit = cache.get(make_request("What is the capital of France?"))
        assert hit is not None
        assert hit.response["choices"][0]["message"]["content"] == "Paris."
        similar = cache.get(make_request("what is the capital of france"))
        assert similar is not None
        assert similar.tier == "postgres-semantic"

        def work(n: int) -> bool:
            request = make_request(f"question {n}")
            cache.set(request, make_response(f"answer {n}"), tags=["batch"])
            found = cache.get(request, semantic=False)
            return (
                found is not None
                and found.response["choices"][0]["message"]["content"] == f"answer {n}"
            )

        with ThreadPoolExecutor(max_workers=8) as threads:
            assert all(threads.map(work, range(200)))
        assert cache.invalidate(tag="batch") == 200
        assert cache.stats().table.entries == 1
        assert cache.counters.hits >= 202
        assert cache.purge().action == "purged"
    assert not any(t.name == "llm-pgcache-sync" for t in threading.enumerate())
    with pytest.raises(ConfigurationError, match="closed"):
        cache.get(make_request("after close"))
    cache.close()  # again: nothing to do


async def test_inside_a_running_loop_it_says_to_use_cache(dsn: str) -> None:
    with pytest.raises(ConfigurationError, match="use Cache"):
        SyncCache.connect(dsn)


def test_a_failed_connect_leaves_no_thread() -> None:
    with pytest.raises(ConfigurationError):
        SyncCache.connect("mysql://nowhere/db")
    assert not any(t.name == "llm-pgcache-sync" for t in threading.enumerate())
