"""What a cache stores: keys, namespaces, expiry, and the rows built from responses.

The rules of one `Cache`, checked once when it opens; every write goes through `entry`,
so `set`, bulk loads and the openai wrapper check input the same way.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from llm_pgcache.entries import StoredEntry, dump_response, response_dict, storable_text
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.keys import RequestKeys, exact_key, request_keys
from llm_pgcache.validation import (
    TTL,
    check_namespace,
    check_tags,
    non_negative_int,
    ttl_seconds,
)

DEFAULT_MAX_ENTRY_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryRules:
    """Keys, namespaces and lifetimes of one cache (see `Cache.connect` for each)."""

    namespace: str = "default"
    version: str = ""
    default_ttl: float | None = None
    model_ttls: Mapping[str, float | None] = field(default_factory=dict)
    store_prompts: bool = True
    max_entry_bytes: int = DEFAULT_MAX_ENTRY_BYTES

    @classmethod
    def checked(
        cls,
        *,
        namespace: str,
        version: str,
        default_ttl: TTL | None,
        model_ttls: Mapping[str, TTL] | None,
        store_prompts: bool,
        max_entry_bytes: int,
    ) -> EntryRules:
        """The rules, with every argument checked (InvalidInputError otherwise)."""
        if not isinstance(version, str):
            raise InvalidInputError(f"version must be a string, got {version!r}")
        return cls(
            namespace=check_namespace(namespace),
            version=version,
            default_ttl=ttl_seconds(default_ttl),
            model_ttls={p: ttl_seconds(ttl) for p, ttl in (model_ttls or {}).items()},
            store_prompts=store_prompts,
            max_entry_bytes=max_entry_bytes,
        )

    def namespace_of(self, namespace: str | None) -> str:
        """A call's namespace: its own (checked), else the cache's."""
        return self.namespace if namespace is None else check_namespace(namespace)

    def exact_key(self, request: Mapping[str, Any]) -> bytes:
        return exact_key(request, self.version)

    def keys(self, request: Mapping[str, Any], exact_key: bytes | None = None) -> RequestKeys:
        return request_keys(request, self.version, exact_key=exact_key)

    def ttl_for(self, model: str) -> float | None:
        """The default lifetime of a model's entries: its own, a matching pattern's, or
        the cache's."""
        if model in self.model_ttls:
            return self.model_ttls[model]
        for pattern, ttl in self.model_ttls.items():
            if fnmatch.fnmatchcase(model, pattern):
                return ttl
        return self.default_ttl

    def entry(
        self,
        request: Mapping[str, Any],
        response: object,
        *,
        ttl: TTL | None,
        tags: Iterable[str],
        namespace: str | None,
        upstream_ms: int | None,
    ) -> tuple[RequestKeys, StoredEntry]:
        """The row for a response, without its embedding; every argument checked."""
        keys = self.keys(request)
        ns = self.namespace_of(namespace)
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
        return keys, StoredEntry(
            namespace=ns,
            cache_key=keys.exact_key,
            scope_key=keys.scope_key,
            model=keys.model,
            prompt=storable_text(keys.text) if self.store_prompts else None,
            response_json=response_json,
            tags=check_tags(tags),
            prompt_tokens=non_negative_int(usage.get("prompt_tokens")),
            completion_tokens=non_negative_int(usage.get("completion_tokens")),
            ttl_seconds=self.ttl_for(keys.model) if ttl is None else ttl_seconds(ttl),
            upstream_ms=non_negative_int(upstream_ms),
        )
