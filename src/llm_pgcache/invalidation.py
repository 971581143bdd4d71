"""Invalidation notices between processes (PostgreSQL NOTIFY), for their memory tiers.

Every store and delete sends one, in the same statement, delivered when it commits; each
cache with a memory tier listens and drops what a notice names (`tiers.upper`). Notices are JSON:
{"o": origin, "ns": namespace, "key": hex | null, "tag": str | null, "model": str | null}.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Change:
    """Rows of `namespace` that changed: row `key`, the rows with `tag`, or those of
    `model`; with none of them, all of the namespace. What a write or an invalidation
    deletes, drops from the tiers above, and tells other processes."""

    namespace: str
    key: bytes | None = None
    tag: str | None = None
    model: str | None = None

    def notice(self, origin: str) -> str:
        """The notice of this change, sent by the process `origin`."""
        return json.dumps(
            {
                "o": origin,
                "ns": self.namespace,
                "key": self.key.hex() if self.key else None,
                "tag": self.tag,
                "model": self.model,
            }
        )


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
