"""Cache keys: one canonical form of a chat completion request.

`request_keys(request)` turns the keyword arguments of `chat.completions.create` into

- `exact_key`: sha256 of the canonical request (all output-affecting parameters),
- `scope_key`: sha256 of the canonical request without the last user turn, so that
  semantic matches happen only between requests that differ in that turn alone,
- `text`: the last user turn, the text a semantic lookup embeds.

The canonical form is versioned (`KEY_FORMAT_VERSION`): when the rules below change,
the version changes too, and old rows can never collide with new keys.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from llm_pgcache.errors import InvalidInputError, InvalidRequestError
from llm_pgcache.key_schema import CHAT_COMPLETIONS, transport
from llm_pgcache.validation import check_model

KEY_FORMAT_VERSION = 1

# Parameters that change how a request travels or is billed, never what the model says
# (`key_schema`: every other parameter is part of the key).
TRANSPORT_PARAMS = transport(CHAT_COMPLETIONS)


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestKeys:
    """The keys under which one request is cached."""

    exact_key: bytes
    scope_key: bytes
    model: str
    text: str


def request_keys(
    request: Mapping[str, Any], version: str = "", *, exact_key: bytes | None = None
) -> RequestKeys:
    """Compute the cache keys of a chat completion request.

    Args:
        request: the keyword arguments of `chat.completions.create`.
        version: the application's cache version (`Cache(version=...)`); changing it
            gives every request new keys, so that all earlier entries are out of reach.
        exact_key: the request's exact key, when the caller computed it already (a
            lookup that missed): not computed again.

    Raises:
        InvalidRequestError: the request has no model or messages, or holds values
            that are not JSON (after dropping the openai client's NOT_GIVEN markers).
    """
    params = _output_params(request)
    messages = params["messages"]
    last_user = _last_user_index(messages)
    text = _text_of(messages[last_user]) if last_user is not None else ""
    scoped_messages = [
        {"role": "user", "content": None} if i == last_user else message
        for i, message in enumerate(messages)
    ]
    return RequestKeys(
        exact_key=exact_key or _sha256(_canonical_json(params, version)),
        scope_key=_sha256(_canonical_json({**params, "messages": scoped_messages}, version)),
        model=params["model"],
        text=text,
    )


def exact_key(request: Mapping[str, Any], version: str = "") -> bytes:
    """`request_keys(request).exact_key`, computed alone for the exact-lookup hot path."""
    return _sha256(_canonical_json(_output_params(request), version))


def canonical_request(request: Mapping[str, Any], version: str = "") -> str:
    """The canonical JSON text whose sha256 is the request's `exact_key`."""
    return _canonical_json(_output_params(request), version)


def _output_params(request: Mapping[str, Any]) -> dict[str, Any]:
    """The request's output-affecting parameters, checked.

    Top-level numbers that are integral become ints (temperature=1.0 keys like
    temperature=1); message objects (pydantic models) become their dicts.
    """
    if not isinstance(request, Mapping):
        raise InvalidRequestError(f"request must be a mapping, got {type(request).__name__}")
    params = {
        name: int(value) if type(value) is float and value.is_integer() else value
        for name, value in request.items()
        if name not in TRANSPORT_PARAMS and not is_omitted(value)
    }
    model = params.get("model")
    try:
        check_model(model)
    except InvalidInputError as exc:
        raise InvalidRequestError(f"request needs a model: {exc}") from None
    messages = params.get("messages")
    if not isinstance(messages, list | tuple) or not messages:
        raise InvalidRequestError("request needs messages: a non-empty list")
    params["messages"] = [
        message if type(message) is dict else _json_value(message) for message in messages
    ]
    return params


def _canonical_json(params: dict[str, Any], version: str) -> str:
    head: dict[str, Any] = {"v": KEY_FORMAT_VERSION}
    if version:  # absent when unset, so that unversioned keys never change
        head["app"] = version
    try:
        return _CANONICAL.encode({**head, "request": params})
    except (TypeError, ValueError) as exc:
        raise InvalidRequestError(f"request is not JSON: {exc}") from exc
    except RecursionError:  # the encoder's depth limit (about a thousand levels)
        raise InvalidRequestError("request is nested too deeply to be keyed") from None


def _json_value(value: Any) -> Any:
    """Pydantic models (openai's message objects) as JSON; anything else unchanged."""
    model_dump = getattr(value, "model_dump", None)
    if callable(model_dump):
        return model_dump(mode="json", exclude_unset=True)
    if isinstance(value, dict | list | str | int | float | bool | tuple) or value is None:
        return value
    raise TypeError(f"a {type(value).__name__} is not JSON")


# One encoder for every key (json.dumps would build one per call). Changing any of its
# settings changes every key: bump KEY_FORMAT_VERSION with it.
_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_value,
)


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).digest()


def is_omitted(value: object) -> bool:
    # openai's NOT_GIVEN / Omit sentinels mean "parameter absent".
    return type(value).__name__ in {"NotGiven", "Omit"}


def _last_user_index(messages: list[Any]) -> int | None:
    for i in range(len(messages) - 1, -1, -1):
        message = messages[i]
        if isinstance(message, dict) and message.get("role") == "user":
            return i
    return None


def _text_of(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "\n".join(
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        )
    return ""
