"""The public `Cache`: the use cases over the storage tiers."""

from __future__ import annotations

import fnmatch
import logging
import math
from collections.abc import Awaitable, Generator, Iterable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from types import TracebackType
from typing import Any, Self

import asyncpg

from llm_pgcache import embedded, migrate
from llm_pgcache.config import Settings
from llm_pgcache.entries import CacheHit, dump_response, response_dict, storable_text
from llm_pgcache.errors import (
    BackendError,
    InvalidInputError,
    InvalidNamespaceError,
    InvalidTTLError,
    SchemaError,
)
from llm_pgcache.keys import exact_key, request_keys
from llm_pgcache.store.postgres import PostgresStore, StoredEntry, TableStats

logger = logging.getLogger("llm_pgcache")

MAX_TTL_SECONDS = 100 * 365 * 24 * 3600.0
MAX_NAMESPACE_LENGTH = 200
MAX_TAG_LENGTH = 200
DEFAULT_MAX_ENTRY_BYTES = 16 * 1024 * 1024

TTL = float | int | timedelta


@dataclass(frozen=True, slots=True, kw_only=True)
class Counters:
    """In-process counters of one `Cache` since it was opened."""

    hits: int
    misses: int
    tokens_saved: int
    backend_errors: int

    @property
    def hit_rate(self) -> float:
        lookups = self.hits + self.misses
        return self.hits / lookups if lookups else 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Stats:
    """`Counters` of this process and `TableStats` of the database."""

    counters: Counters
    table: TableStats


class Cache:
    """A durable, shared cache of LLM responses in PostgreSQL.

    Open one per process with `await Cache.connect(...)` (or `async with
    Cache.connect(...) as cache:`), share it between requests, and `await cache.close()`
    on shutdown.

    Example:
        async with Cache.connect("postgresql://app@db/app") as cache:
            hit = await cache.get(request)
            if hit is None:
                response = await client.chat.completions.create(**request)
                await cache.set(request, response, ttl=3600)
    """

    def __init__(
        self,
        store: PostgresStore,
        *,
        namespace: str = "default",
        default_ttl: TTL | None = None,
        model_ttls: Mapping[str, TTL] | None = None,
        store_prompts: bool = True,
        strict: bool = False,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
    ) -> None:
        """Wrap an opened store; prefer `Cache.connect`, which opens one. No I/O here."""
        self._store = store
        self.namespace = _check_namespace(namespace)
        self.default_ttl = _ttl_seconds(default_ttl)
        self.model_ttls = {
            pattern: _ttl_seconds(ttl) for pattern, ttl in (model_ttls or {}).items()
        }
        self.store_prompts = store_prompts
        self.strict = strict
        self.max_entry_bytes = max_entry_bytes
        self._hits = 0
        self._misses = 0
        self._tokens_saved = 0
        self._backend_errors = 0
        self._backend_down = False

    @classmethod
    def connect(
        cls,
        dsn: str | None = None,
        *,
        namespace: str = "default",
        default_ttl: TTL | None = None,
        model_ttls: Mapping[str, TTL] | None = None,
        store_prompts: bool = True,
        strict: bool = False,
        max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES,
        pool: asyncpg.Pool | None = None,
        min_size: int = 2,
        max_size: int = 10,
        embedded_dir: str | None = None,
    ) -> _Connecting:
        """Open a cache: `cache = await Cache.connect(...)` or `async with Cache.connect(...)`.

        Args:
            dsn: PostgreSQL DSN. Default: `LLM_PGCACHE_DSN`, then `DATABASE_URL`, then an
                embedded PostgreSQL under a per-user data directory (migrated on first use).
            namespace: partition used when a call names none; namespaces never share rows.
            default_ttl: seconds (or timedelta) an entry lives when neither the call nor
                `model_ttls` says otherwise; None keeps entries until invalidated.
            model_ttls: default TTL per model name or fnmatch pattern ("gpt-4o*").
            store_prompts: store the last user turn in the `prompt` column (for humans and
                semantic matching); False stores keys only.
            strict: raise backend errors instead of treating them as misses.
            max_entry_bytes: refuse to store larger responses.
            pool: an asyncpg pool you own (created with `init=llm_pgcache.init_connection`);
                it is not closed by `close()`.
            min_size, max_size: size of the pool the cache opens for itself.
            embedded_dir: data directory of the embedded server (when no DSN is found).

        Raises:
            BackendError: the server cannot be reached.
            SchemaError: the database is not migrated (a DSN was given).
            ConfigurationError: a bad DSN, or no DSN and the `embedded` extra is missing.
        """
        options: dict[str, Any] = {
            "namespace": namespace,
            "default_ttl": default_ttl,
            "model_ttls": model_ttls,
            "store_prompts": store_prompts,
            "strict": strict,
            "max_entry_bytes": max_entry_bytes,
        }
        if pool is not None:
            opening = PostgresStore.from_pool(pool)
        else:
            opening = _open_store(
                dsn or Settings.from_env().dsn,
                min_size=min_size,
                max_size=max_size,
                embedded_dir=embedded_dir,
            )
        return _Connecting(cls._open(opening, options))

    @classmethod
    async def _open(cls, opening: Awaitable[PostgresStore], options: dict[str, Any]) -> Self:
        store = await opening
        try:
            return cls(store, **options)
        except BaseException:
            await store.close()
            raise

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the connections the cache opened (not a pool passed in)."""
        await self._store.close()

    async def get(
        self, request: Mapping[str, Any], *, namespace: str | None = None
    ) -> CacheHit | None:
        """The cached response of `request`, or None on a miss.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            namespace: overrides the cache's namespace for this call.

        Raises:
            InvalidRequestError: the request cannot be keyed (no model, non-JSON values...).
            BackendError: only with `strict=True`; otherwise a backend failure is a miss.
        """
        key = exact_key(request)
        ns = self.namespace if namespace is None else _check_namespace(namespace)
        try:
            record = await self._store.get(ns, key)
        except BackendError as exc:
            self._backend_failed(exc)
            self._misses += 1
            return None
        self._backend_ok()
        if record is None:
            self._misses += 1
            return None
        hit = CacheHit.from_record(record, tier="postgres-exact")
        self._hits += 1
        self._tokens_saved += hit.tokens_saved
        return hit

    async def set(
        self,
        request: Mapping[str, Any],
        response: object,
        *,
        ttl: TTL | None = None,
        tags: Iterable[str] = (),
        namespace: str | None = None,
    ) -> None:
        """Store `response` as the answer to `request`, replacing any previous one.

        Args:
            request: the keyword arguments of `chat.completions.create`.
            response: a `ChatCompletion` or its JSON dict.
            ttl: seconds (or timedelta) until expiry; default from `model_ttls`, then
                `default_ttl`.
            tags: labels for `invalidate(tag=...)`.
            namespace: overrides the cache's namespace for this call.

        Raises:
            InvalidRequestError, InvalidResponseError, InvalidTTLError, InvalidInputError:
                bad input; nothing is written.
            BackendError: only with `strict=True`; otherwise the failure is logged.
        """
        keys = request_keys(request)
        ns = self.namespace if namespace is None else _check_namespace(namespace)
        body = response_dict(response)
        response_json = dump_response(body)
        if len(response_json) > self.max_entry_bytes:
            raise InvalidInputError(
                f"response is {len(response_json)} bytes as JSON, over max_entry_bytes="
                f"{self.max_entry_bytes}"
            )
        usage = body.get("usage")
        if not isinstance(usage, Mapping):
            usage = {}
        entry = StoredEntry(
            namespace=ns,
            cache_key=keys.exact_key,
            scope_key=keys.scope_key,
            model=keys.model,
            prompt=storable_text(keys.text) if self.store_prompts else None,
            response_json=response_json,
            tags=_check_tags(tags),
            prompt_tokens=_token_count(usage.get("prompt_tokens")),
            completion_tokens=_token_count(usage.get("completion_tokens")),
            ttl_seconds=self._ttl_for(keys.model) if ttl is None else _ttl_seconds(ttl),
        )
        try:
            await self._store.put(entry)
        except BackendError as exc:
            self._backend_failed(exc)
            return
        self._backend_ok()

    async def invalidate(
        self,
        *,
        key: Mapping[str, Any] | bytes | None = None,
        tag: str | None = None,
        model: str | None = None,
        namespace: str | None = None,
    ) -> int:
        """Delete entries; returns how many.

        Name at most one of `key` (a request, or its 32-byte `exact_key`), `tag` or
        `model`, within the cache's namespace or `namespace`. With none of them, the whole
        `namespace` is cleared, which must then be named explicitly.

        Raises:
            InvalidInputError: more than one filter, or nothing named.
            BackendError: the database failed (invalidation never fails open).
        """
        filters = [f for f in (key, tag, model) if f is not None]
        if len(filters) > 1:
            raise InvalidInputError("invalidate takes one of key, tag or model at a time")
        if not filters and namespace is None:
            raise InvalidInputError(
                "name what to invalidate: key=, tag=, model=, or namespace= for a whole namespace"
            )
        ns = self.namespace if namespace is None else _check_namespace(namespace)
        cache_key = None
        if isinstance(key, bytes):
            if len(key) != 32:
                raise InvalidInputError("a key given as bytes must be a 32-byte sha256 digest")
            cache_key = key
        elif key is not None:
            cache_key = exact_key(key)
        return await self._store.delete(ns, cache_key=cache_key, tag=tag, model=model)

    @property
    def counters(self) -> Counters:
        """Hits, misses, hit rate and tokens saved by this process since `connect`."""
        return Counters(
            hits=self._hits,
            misses=self._misses,
            tokens_saved=self._tokens_saved,
            backend_errors=self._backend_errors,
        )

    async def stats(self, *, namespace: str | None = None, all_namespaces: bool = False) -> Stats:
        """This process's counters and the table's counts (of the namespace, or all)."""
        ns = None if all_namespaces else (namespace or self.namespace)
        return Stats(counters=self.counters, table=await self._store.table_stats(ns))

    def _ttl_for(self, model: str) -> float | None:
        if model in self.model_ttls:
            return self.model_ttls[model]
        for pattern, ttl in self.model_ttls.items():
            if fnmatch.fnmatchcase(model, pattern):
                return ttl
        return self.default_ttl

    def _backend_failed(self, exc: BackendError) -> None:
        self._backend_errors += 1
        if self.strict:
            raise exc
        if not self._backend_down:  # once per outage, not once per request
            logger.warning("llm-pgcache backend failed, serving misses: %s", exc)
            self._backend_down = True

    def _backend_ok(self) -> None:
        if self._backend_down:
            logger.warning("llm-pgcache backend is back")
            self._backend_down = False


class _Connecting:
    """What `Cache.connect` returns: await it, or use it with `async with`."""

    def __init__(self, opening: Any) -> None:
        self._opening = opening
        self._cache: Cache | None = None

    def __await__(self) -> Generator[Any, None, Cache]:
        cache: Cache = yield from self._opening.__await__()
        return cache

    async def __aenter__(self) -> Cache:
        self._cache = await self._opening
        return self._cache

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._cache is not None:
            await self._cache.close()


async def _open_store(
    dsn: str | None, *, min_size: int, max_size: int, embedded_dir: str | None
) -> PostgresStore:
    if dsn is not None:
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)
    dsn = await embedded.start(embedded_dir)
    try:
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)
    except SchemaError:  # a new embedded server: migrate it, as `llm-pgcache migrate` does
        await migrate.upgrade(dsn)
        return await PostgresStore.open(dsn, min_size=min_size, max_size=max_size)


def _ttl_seconds(ttl: TTL | None) -> float | None:
    if ttl is None:
        return None
    if isinstance(ttl, timedelta):
        seconds = ttl.total_seconds()
    elif isinstance(ttl, int | float) and not isinstance(ttl, bool):
        seconds = float(ttl)
    else:
        raise InvalidTTLError(ttl, "expected seconds (int or float) or a timedelta")
    if not math.isfinite(seconds) or seconds <= 0:
        raise InvalidTTLError(ttl, "must be a positive, finite number of seconds")
    if seconds > MAX_TTL_SECONDS:
        raise InvalidTTLError(ttl, "over 100 years; pass ttl=None for no expiry")
    return seconds


def _check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise InvalidNamespaceError(namespace, "must be a string")
    if not namespace:
        raise InvalidNamespaceError(namespace, "must not be empty")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise InvalidNamespaceError(namespace, f"longer than {MAX_NAMESPACE_LENGTH} characters")
    if "\x00" in namespace:
        raise InvalidNamespaceError(namespace, "contains a NUL character")
    return namespace


def _check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise InvalidInputError("tags must be a collection of strings, not one string")
    checked = tuple(tags)
    for tag in checked:
        if not isinstance(tag, str) or not tag or "\x00" in tag or len(tag) > MAX_TAG_LENGTH:
            raise InvalidInputError(
                f"invalid tag {tag!r}: tags are non-empty strings of at most "
                f"{MAX_TAG_LENGTH} characters, without NUL"
            )
    return checked


def _token_count(value: object) -> int | None:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None
