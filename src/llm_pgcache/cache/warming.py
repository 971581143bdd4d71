"""Warming: bulk-loading known answers, and answering expected requests ahead of time."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llm_pgcache.errors import InvalidInputError, LLMPgCacheError
from llm_pgcache.validation import TTL


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmItem:
    """One request/response pair to load; `embedding`: its last user turn's vector, made
    by the cache's embedder elsewhere (it is stored as that embedder's)."""

    request: Mapping[str, Any]
    response: object
    ttl: TTL | None = None
    tags: tuple[str, ...] = ()
    namespace: str | None = None
    embedding: Sequence[float] | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class WarmReport:
    """What `Cache.warm` did."""

    stored: int
    skipped: int  # already cached
    failed: int  # the LLM call (or the store) failed


def batches(items: Iterable[WarmItem], size: int) -> Iterator[list[WarmItem]]:
    """`items` in lists of `size` (the last one shorter)."""
    if size < 1:
        raise InvalidInputError("batch size must be at least 1")
    batch: list[WarmItem] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def read_warm_file(path: Path) -> Iterator[WarmItem]:
    """Items from a JSONL file of {"request": {...}, "response": {...}, "ttl"?: seconds,
    "tags"?: [...], "namespace"?: "...", "embedding"?: [...]} lines.

    Raises:
        InvalidInputError: the file cannot be read, or a line is not such an object.
    """
    try:
        lines = path.open(encoding="utf-8")
    except OSError as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc
    with lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                yield WarmItem(
                    request=item["request"],
                    response=item["response"],
                    ttl=item.get("ttl"),
                    tags=tuple(item.get("tags") or ()),
                    namespace=item.get("namespace"),
                    embedding=item.get("embedding"),
                )
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise InvalidInputError(f"{path}:{number}: not a warm line: {exc}") from exc


async def precompute(
    requests: Iterable[Mapping[str, Any]],
    call: Callable[[dict[str, Any]], Awaitable[object]],
    *,
    cached: Callable[[Mapping[str, Any]], Awaitable[bool]],
    store: Callable[[Mapping[str, Any], object], Awaitable[None]],
    concurrency: int,
) -> WarmReport:
    """`call` each request that is not `cached` yet, `concurrency` at a time, and `store`
    its response."""
    if concurrency < 1:
        raise InvalidInputError("concurrency must be at least 1")
    slots = asyncio.Semaphore(concurrency)
    outcomes: list[str] = []

    async def one(request: Mapping[str, Any]) -> None:
        async with slots:
            if await cached(request):
                outcomes.append("skipped")
                return
            try:
                await store(request, await call(dict(request)))
            except (LLMPgCacheError, Exception):  # one failure must not stop the others
                outcomes.append("failed")
                return
            outcomes.append("stored")

    await asyncio.gather(*(one(request) for request in requests))
    return WarmReport(
        stored=outcomes.count("stored"),
        skipped=outcomes.count("skipped"),
        failed=outcomes.count("failed"),
    )
