"""Checks of the caller's arguments, before anything is read or written."""

from __future__ import annotations

import math
from collections.abc import Iterable
from datetime import timedelta

from llm_pgcache.errors import InvalidInputError, InvalidNamespaceError, InvalidTTLError

MAX_TTL_SECONDS = 100 * 365 * 24 * 3600.0
# Names that travel in invalidation notices are bounded so that any notice fits NOTIFY's
# 8,000 bytes: a namespace and a tag or a model, each at most 200 characters of 12 bytes
# as escaped JSON (a character outside the BMP), stay under 5,000 bytes.
MAX_NAMESPACE_LENGTH = 200
MAX_TAG_LENGTH = 200
MAX_MODEL_LENGTH = 200

TTL = float | int | timedelta


def ttl_seconds(ttl: TTL | None) -> float | None:
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


def check_threshold(threshold: object) -> float:
    if isinstance(threshold, bool) or not isinstance(threshold, int | float):
        raise InvalidInputError(f"similarity threshold must be a number, got {threshold!r}")
    if not 0.0 < threshold <= 1.0:
        raise InvalidInputError(f"similarity threshold must be in (0, 1], got {threshold!r}")
    return float(threshold)


def check_rate(name: str, rate: object) -> float:
    """A share: a number in [0, 1]."""
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0.0 <= rate <= 1.0:
        raise InvalidInputError(f"{name} must be a number from 0 to 1, got {rate!r}")
    return float(rate)


def check_timeout(name: str, seconds: object) -> float | None:
    """A timeout in seconds: a positive finite number, or None for no limit."""
    if seconds is None:
        return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        raise InvalidInputError(f"{name} must be a number of seconds or None, got {seconds!r}")
    if not 0.0 < seconds < float("inf"):
        raise InvalidInputError(f"{name} must be positive and finite, got {seconds!r}")
    return float(seconds)


def check_count(name: str, value: object) -> int:
    """A positive int (a count of rows, probes, rounds...)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_namespace(namespace: object) -> str:
    if not isinstance(namespace, str):
        raise InvalidNamespaceError(namespace, "must be a string")
    if not namespace:
        raise InvalidNamespaceError(namespace, "must not be empty")
    if len(namespace) > MAX_NAMESPACE_LENGTH:
        raise InvalidNamespaceError(namespace, f"longer than {MAX_NAMESPACE_LENGTH} characters")
    if "\x00" in namespace:
        raise InvalidNamespaceError(namespace, "contains a NUL character")
    if not is_utf8(namespace):
        raise InvalidNamespaceError(namespace, "is not valid Unicode (a lone surrogate)")
    return namespace


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    if isinstance(tags, str):
        raise InvalidInputError("tags must be a collection of strings, not one string")
    checked = tuple(tags)
    for tag in checked:
        if (
            not isinstance(tag, str)
            or not tag
            or "\x00" in tag
            or len(tag) > MAX_TAG_LENGTH
            or not is_utf8(tag)
        ):
            raise InvalidInputError(
                f"invalid tag {tag!r}: tags are non-empty strings of at most "
                f"{MAX_TAG_LENGTH} characters, valid Unicode without NUL"
            )
    return checked


def check_model(model: object) -> str:
    """A model name as requests and `invalidate(model=...)` may name it."""
    if (
        not isinstance(model, str)
        or not model
        or "\x00" in model
        or len(model) > MAX_MODEL_LENGTH
        or not is_utf8(model)
    ):
        raise InvalidInputError(
            f"invalid model {model!r}: a non-empty string of at most {MAX_MODEL_LENGTH} "
            "characters, valid Unicode without NUL"
        )
    return model


def is_utf8(text: str) -> bool:
    """Whether `text` can be stored as PostgreSQL text (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def non_negative_int(value: object) -> int | None:
    """`value` if it is an int that fits an integer column, else None (unknown)."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**31:
        return value
    return None
