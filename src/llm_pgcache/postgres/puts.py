"""Stores, alone, in rounds or in bulk: stores that overlap share one statement
(`rounds`), as exact lookups do (`postgres.lookups`); a bulk load is one COPY.

A store that finds no other waiting runs the one-row statement; under load, the stores
that waited meanwhile go in one statement of arrays: one round trip, one commit, one
WAL flush for all of them. The last store of a key in a round wins, as it would one
after the other. A round the server refuses runs again store by store, so that a value
it refuses fails only the store that brought it.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, NamedTuple

from pgvector import Vector

from llm_pgcache.entries import StoredEntry
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.postgres import sql
from llm_pgcache.postgres.pool import Connections
from llm_pgcache.rounds import Rounds


class _Put(NamedTuple):
    entry: StoredEntry
    notice: str  # for the other processes' memory tiers


class Puts:
    """Rows upserted by (namespace, cache_key), alone or in shared rounds."""

    def __init__(self, db: Connections, *, rounds: int = 2, max_batch: int = 256) -> None:
        self._db = db
        self._rounds: Rounds[_Put, None] = Rounds(self._round, rounds=rounds, max_batch=max_batch)

    async def put(self, entry: StoredEntry, notice: str, budget: float | None = None) -> None:
        """Store `entry`, replacing the row of its key; `notice` goes to listeners.

        Raises:
            BackendError: the statement failed, or its round ran out of `budget` seconds.
        """
        await self._rounds.join(_Put(entry, notice), budget)

    async def close(self) -> None:
        await self._rounds.close()

    async def _round(self, batch: list[_Put], budget: float | None) -> Sequence[Exception | None]:
        if len(batch) == 1:
            await self._one(batch[0], budget)
            return [None]
        entries = [put.entry for put in batch]
        columns: tuple[list[Any], ...] = (
            [e.namespace for e in entries],
            [e.cache_key for e in entries],
            [e.scope_key for e in entries],
            [e.model for e in entries],
            [e.prompt for e in entries],
            [e.response_json for e in entries],
            [json.dumps(list(e.tags)) for e in entries],
            [e.prompt_tokens for e in entries],
            [e.completion_tokens for e in entries],
            [e.ttl_seconds for e in entries],
            [None if e.embedding is None else Vector(e.embedding) for e in entries],
            [e.embedder for e in entries],
            [e.upstream_ms for e in entries],
            [put.notice for put in batch],
        )
        try:
            await self._db.execute(sql.PUT_ROUND, *columns, budget=budget)
        except InvalidInputError:
            return await self._one_by_one(batch, budget)
        return [None] * len(batch)

    async def _one_by_one(self, batch: list[_Put], budget: float | None) -> list[Exception | None]:
        async def alone(put: _Put) -> Exception | None:
            try:
                await self._one(put, budget)
            except Exception as exc:  # its own failure
                return exc
            return None

        return list(await asyncio.gather(*(alone(put) for put in batch)))

    async def _one(self, put: _Put, budget: float | None) -> None:
        await self._db.execute(
            sql.PUT, *_columns(put.entry), put.entry.upstream_ms, put.notice, budget=budget
        )

    async def bulk(self, entries: Sequence[StoredEntry], notices: Sequence[str]) -> int:
        """Upsert many rows in one transaction (COPY into a staging table, then one
        INSERT); returns the rows written. `notices` are sent on commit."""
        records = [(seq, *_columns(entry)) for seq, entry in enumerate(entries)]
        timeout = self._db.statement_timeout
        async with self._db.connection() as connection, connection.transaction():
            await connection.execute(sql.CREATE_WARM_TABLE)
            await connection.copy_records_to_table(
                "llm_cache_warm", records=records, timeout=timeout
            )
            await connection.execute(sql.DROP_WARM_ALIASES, timeout=timeout)
            status: str = await connection.execute(sql.UPSERT_WARM_ROWS, timeout=timeout)
            for change in notices:
                await connection.execute(sql.NOTIFY, change)
        return int(status.rsplit(" ", 1)[-1])


def _columns(e: StoredEntry) -> tuple[Any, ...]:
    """A row's values, in the order of `sql.PUT`'s parameters and the staging table."""
    return (
        e.namespace,
        e.cache_key,
        e.scope_key,
        e.model,
        e.prompt,
        e.response_json,
        list(e.tags),
        e.prompt_tokens,
        e.completion_tokens,
        e.ttl_seconds,
        e.embedding,
        e.embedder,
    )
