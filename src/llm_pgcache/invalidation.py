"""Invalidation notices between processes (PostgreSQL NOTIFY), for their memory tiers.

Every store and delete sends one, in the same statement, delivered when it commits; each
cache with a memory tier listens and drops what a notice names (`tiers`). Notices are JSON:
{"o": origin, "ns": namespace, "key": hex | null, "tag": str | null, "model": str | null}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


def notice(
    origin: str,
    namespace: str,
    *,
    key: bytes | None = None,
    tag: str | None = None,
    model: str | None = None,
) -> str:
    """The notice of a change to `namespace` (all of it when no key, tag or model)."""
    return json.dumps(
        {
            "o": origin,
            "ns": namespace,
            "key": key.hex() if key else None,
            "tag": tag,
            "model": model,
        }
    )


@dataclass(frozen=True, slots=True)
class Change:
    """What a notice names: rows of `namespace` (all of them when key, tag and model are
    None)."""

    namespace: str
    key: bytes | None
    tag: str | None
    model: str | None


def read_notice(payload: str, origin: str) -> Change | None:
    """The change another process's notice names; None for our own (already applied).

    Raises:
        ValueError: a malformed notice.
    """
    try:
        message: dict[str, Any] = json.loads(payload)
        if message["o"] == origin:
            return None
        return Change(
            namespace=message["ns"],
            key=bytes.fromhex(message["key"]) if message["key"] else None,
            tag=message["tag"],
            model=message["model"],
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"malformed invalidation notice: {exc}") from exc
