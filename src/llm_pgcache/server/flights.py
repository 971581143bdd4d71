"""Single-flight across the workers of one host: identical requests in flight in several
worker processes make one upstream call.

In each worker the cached call's own single-flight leaves one leader per key; the leader
then takes a host-wide lock on the key (an `flock` on one of a fixed set of lock files,
striped by the key's hash, in a directory of this user's); when it had to wait for it,
asks the cache once more (the leader of another worker has stored the answer by then,
unless it failed), and only then asks
the upstream, holding the lock until the answer is stored (a stream: until it ends).
Locks die with their process: a worker killed mid-call blocks nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple, Self

from llm_pgcache.integrations.calls import CachedClient, CachedCreate, hit_info
from llm_pgcache.integrations.dialect import Dialect
from llm_pgcache.integrations.events import EventStream
from llm_pgcache.integrations.policy import CacheInfo
from llm_pgcache.singleflight import Flight

STRIPES = 4096  # lock files: two keys share one (and wait for each other) 1 time in 4096
POLL = 0.005  # seconds between tries of a held lock


def default_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"llm-pgcache-{os.getuid()}-flights"


class HostLocks:
    """Exclusive locks on keys, shared by the processes of one host."""

    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or default_directory()
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    @contextlib.asynccontextmanager
    async def held(self, key: bytes, *, patience: float) -> AsyncIterator[Held]:
        """Hold the lock of `key` (a sha256 digest: an exact key), waiting at most
        `patience` seconds (then going ahead without it); yields its release, which may
        be called early, once, and whether it had to wait (another worker led)."""
        stripe = int.from_bytes(key[:4], "big") % STRIPES
        fd = os.open(self.directory / f"{stripe:04x}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        deadline = time.monotonic() + patience
        locked = waited = False
        try:
            while not locked:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    locked = True
                except BlockingIOError:
                    waited = True
                    if time.monotonic() > deadline:
                        break  # a stuck leader elsewhere: better two calls than none
                    await asyncio.sleep(POLL)
        except BaseException:
            os.close(fd)
            raise
        released = False

        def release() -> None:
            nonlocal released
            if not released:
                released = True
                os.close(fd)  # closing drops the flock

        try:
            yield Held(release, waited)
        except BaseException:
            release()
            raise


class Held(NamedTuple):
    release: Callable[[], None]
    waited: bool


class HostLeadCreate(CachedCreate):
    """A cached `create` whose leaders also lead across the host's workers."""

    def __init__(
        self,
        upstream: Any,
        owner: CachedClient,
        dialect: Dialect,
        locks: HostLocks,
        *,
        timeout: float,
    ) -> None:
        super().__init__(upstream, owner, dialect)
        self._locks = locks
        self._timeout = timeout

    async def lead(
        self,
        call: Mapping[str, Any],
        request: Mapping[str, Any],
        key: tuple[str, bytes],
        flight: Flight[dict[str, Any]],
        info: CacheInfo,
    ) -> Any:
        owner = self._owner
        namespace = owner.controls.namespace or owner.policy.namespace
        async with self._locks.held(key[1], patience=self._timeout) as (release, waited):
            if waited and not owner.controls.no_cache:  # did the worker that led store it?
                started = time.perf_counter()
                hit = await owner.cache.get(request, namespace=namespace, semantic=False)
                if hit is not None:
                    release()
                    flight.finish(hit.response)
                    lookup_ms = info.lookup_ms + (time.perf_counter() - started) * 1000
                    shared = replace(hit_info(hit, lookup_ms), shared=True)
                    return self._respond(hit.response, call, shared)
            answer = await super().lead(call, request, key, flight, info)
            if isinstance(answer, EventStream):
                return Releasing(answer, release)  # held until the stream ends
            release()
            return answer


class Releasing(EventStream):
    """A stream that releases its host lock when it ends or is closed."""

    def __init__(self, stream: EventStream, release: Callable[[], None]) -> None:
        self._stream = stream
        self._release = release
        self.__dict__.update({k: v for k, v in vars(stream).items() if not k.startswith("_")})

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Any:
        try:
            return await self._stream.__anext__()
        except BaseException:
            self._release()
            raise

    async def close(self) -> None:
        try:
            await self._stream.close()
        finally:
            self._release()
