"""What an SDK call means to the cache: the part of a cached call that differs between
SDKs (`calls.CachedCreate` is the part that does not)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from llm_pgcache.integrations.policy import CachePolicy


class Accumulator(Protocol):
    """Builds the answer that a stream's events (as JSON) spell."""

    def add(self, event: Mapping[str, Any]) -> None: ...

    @property
    def complete(self) -> bool:
        """The stream ended as a whole answer ends (not cut off)."""
        ...

    def result(self) -> dict[str, Any]:
        """The answer, as the JSON a non-streaming call returns."""
        ...


class Dialect(Protocol):
    """What one SDK call means to the cache."""

    def unsupported(self, call: Mapping[str, Any]) -> str | None:
        """Why this call's shape is not cached (it passes through), or None."""
        ...

    def cache_request(self, call: Mapping[str, Any]) -> Mapping[str, Any]:
        """The request the call is cached under (what `Cache.get` keys)."""
        ...

    def storable(self, body: Mapping[str, Any], policy: CachePolicy) -> bool:
        """Whether an upstream answer (as JSON) may be stored."""
        ...

    def answer_of(self, body: Mapping[str, Any]) -> Any:
        """The SDK's object for a stored answer."""
        ...

    def stream_call(self, call: Mapping[str, Any]) -> tuple[dict[str, Any], bool]:
        """The streaming call sent upstream on a miss, and whether to hide from the
        caller the events it adds (usage the caller did not ask for)."""
        ...

    def added(self, event: Any) -> bool:
        """An event `stream_call` asked for that the caller did not."""
        ...

    def accumulator(self) -> Accumulator: ...

    def replay(self, body: Mapping[str, Any], call: Mapping[str, Any]) -> Iterator[Any]:
        """A stored answer as the SDK's stream events."""
        ...
