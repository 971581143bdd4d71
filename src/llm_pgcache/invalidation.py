"""Invalidation notices between processes (PostgreSQL NOTIFY), for their memory tiers.

Every store and delete sends one, in the same statement, delivered when it commits; each
cache with a memory tier listens and drops what a notice names. Notices are JSON:
{"o": origin, "ns": namespace, "key": hex | null, "tag": str | null, "model": str | null}.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from llm_pgcache.store.memory import MemoryTier

logger = logging.getLogger("llm_pgcache")


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


def apply_notice(memory: MemoryTier, payload: str, origin: str) -> None:
    """Drop from `memory` what another process's notice names."""
    try:
        message: dict[str, Any] = json.loads(payload)
        if message["o"] == origin:
            return  # our own change: already applied
        key = bytes.fromhex(message["key"]) if message["key"] else None
        memory.invalidate(message["ns"], key=key, tag=message["tag"], model=message["model"])
    except (ValueError, KeyError, TypeError):
        logger.warning("llm-pgcache ignored a malformed invalidation notice; clearing memory")
        memory.clear()
