"""Values that cross layers: what is stored (`StoredEntry`), what a hit returns
(`CacheHit`) and what the upper tiers keep of it (`TierCopy`), and how responses are
encoded.

Responses are JSON (never pickle). PostgreSQL's jsonb cannot hold a NUL character
(U+0000), so a response containing one, anywhere, is stored wrapped: as the base64 of its
UTF-8 JSON under `NUL_SAFE_MARKER`. A response whose own top level happens to use that
key is wrapped too, so decoding is unambiguous.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from llm_pgcache.errors import InvalidResponseError
from llm_pgcache.validation import is_utf8

if TYPE_CHECKING:  # numpy costs a command that reads no vector 100 ms to import
    import numpy as np
    import numpy.typing as npt

NUL_SAFE_MARKER = "llm_pgcache:json_base64"

Tier = Literal["memory", "redis", "postgres-exact", "postgres-semantic"]
AcceptedBy = Literal["exact", "threshold", "judge", "alias"]


@dataclass(frozen=True, slots=True, kw_only=True)
class StoredEntry:
    """One row to write: what `Cache.set` and `load` build and the store upserts."""

    namespace: str
    cache_key: bytes
    scope_key: bytes
    model: str
    prompt: str | None
    response_json: str
    tags: Sequence[str]
    prompt_tokens: int | None
    completion_tokens: int | None
    ttl_seconds: float | None
    upstream_ms: int | None = None
    embedding: npt.NDArray[np.float32] | None = None
    embedder: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheHit:
    """A response answered from the cache.

    Attributes:
        response: the stored response, as the JSON dict it was stored as.
        tier: which tier answered.
        namespace: the namespace of the entry.
        key: the entry's `exact_key` (what `invalidate(key=...)` and
            `report_wrong_hit` delete).
        model: the model of the cached request.
        created_at: when the entry was stored (database clock).
        expires_at: when it stops being served; None for never.
        prompt_tokens, completion_tokens: the upstream usage that this hit saved.
        upstream_ms: how long the upstream call that produced the entry took, if known.
        tags: the entry's tags.
        similarity: cosine similarity for semantic hits; 1.0 for exact ones.
        matched_prompt: for semantic hits, the stored prompt that matched (None when
            prompts are not stored, and for exact hits).
        stale: the entry expired, within the cache's `stale_grace`: serve it, and
            refresh it (the openai wrapper does, in the background).
        accepted_by: what let it be served: "exact" (the same request), "threshold"
            (a semantic candidate similar enough, which the look-alike guard passed),
            "judge" (such a candidate, which the judge accepted inline) or "alias" (a
            request the background judge accepted earlier as answered by this entry:
            served by its own key, at the similarity it was judged at).
    """

    response: dict[str, Any]
    tier: Tier
    namespace: str
    key: bytes
    model: str
    created_at: datetime
    expires_at: datetime | None
    prompt_tokens: int | None
    completion_tokens: int | None
    upstream_ms: int | None
    tags: tuple[str, ...]
    similarity: float = 1.0
    matched_prompt: str | None = None
    stale: bool = False
    accepted_by: AcceptedBy = "exact"

    def with_response(self, response: dict[str, Any], tier: Tier) -> CacheHit:
        """This hit as served again from `tier`, with `response` (each caller gets its own).

        Copies the fields directly: `dataclasses.replace` costs twice as much, and this
        runs on every memory-tier hit.
        """
        copy = object.__new__(CacheHit)
        for name in _FIELDS:
            object.__setattr__(copy, name, getattr(self, name))
        object.__setattr__(copy, "response", response)
        object.__setattr__(copy, "tier", tier)
        return copy

    @property
    def tokens_saved(self) -> int:
        return (self.prompt_tokens or 0) + (self.completion_tokens or 0)

    @classmethod
    def from_record(
        cls,
        record: Mapping[str, Any],
        *,
        namespace: str,
        tier: Tier,
        similarity: float = 1.0,
        accepted_by: AcceptedBy = "exact",
    ) -> CacheHit:
        judged = record.get("judged_similarity")
        if judged is not None:  # an alias row: a judge accepted it at that similarity
            similarity, accepted_by = judged, "alias"
        return cls(
            response=load_response(record["response"]),
            tier=tier,
            namespace=namespace,
            key=record["cache_key"],
            model=record["model"],
            created_at=record["created_at"],
            expires_at=record["expires_at"],
            prompt_tokens=record["prompt_tokens"],
            completion_tokens=record["completion_tokens"],
            upstream_ms=record["upstream_ms"],
            tags=tuple(record["tags"]),
            similarity=similarity,
            matched_prompt=record.get("prompt"),
            stale=bool(record.get("stale")),
            accepted_by=accepted_by,
        )


_FIELDS = tuple(field.name for field in fields(CacheHit))


class TierCopy(NamedTuple):
    """A hit as the tiers above PostgreSQL keep it: under the exact key that was looked
    up (a semantic hit's own row has another), with its response as stored JSON text, for
    at most `ttl_left` seconds (None: the row does not expire)."""

    namespace: str
    key: bytes
    hit: CacheHit
    response_json: str
    ttl_left: float | None


def response_dict(response: object) -> dict[str, Any]:
    """A ChatCompletion (any pydantic model) or a JSON object, as a plain dict."""
    model_dump = getattr(response, "model_dump", None)
    if callable(model_dump):
        response = model_dump(mode="json")
    if not isinstance(response, Mapping):
        raise InvalidResponseError(
            f"response must be a ChatCompletion or a JSON object, got {type(response).__name__}"
        )
    return dict(response)


def dump_response(response: Mapping[str, Any]) -> str:
    """The jsonb text stored for `response`.

    Raises:
        InvalidResponseError: the response holds values that are not JSON.
    """
    try:
        text = json.dumps(response, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as exc:
        raise InvalidResponseError(f"response is not JSON-serializable: {exc}") from exc
    except RecursionError:  # the encoder's depth limit (about a thousand levels)
        raise InvalidResponseError("response is nested too deeply to be stored") from None
    if "\\u0000" in text or NUL_SAFE_MARKER in response or not is_utf8(text):
        # The escape may also be a literal backslash followed by "u0000", and lone
        # surrogates are not UTF-8: wrapping is lossless either way.
        wrapped = base64.b64encode(text.encode("utf-8", "surrogatepass")).decode("ascii")
        return json.dumps({NUL_SAFE_MARKER: wrapped})
    return text


def load_response(text: str) -> dict[str, Any]:
    """The response that `dump_response` turned into `text`."""
    value: dict[str, Any] = json.loads(text)
    wrapped = value.get(NUL_SAFE_MARKER)
    if isinstance(wrapped, str) and len(value) == 1:
        raw = base64.b64decode(wrapped).decode("utf-8", "surrogatepass")
        decoded: dict[str, Any] = json.loads(raw)
        return decoded
    return value


def storable_text(text: str) -> str:
    """`text` for a PostgreSQL text column, which rejects NUL: NUL becomes U+FFFD.

    Only used for the descriptive `prompt` column; keys are computed from the original.
    """
    return text.replace("\x00", "\ufffd").encode("utf-8", "replace").decode("utf-8")
