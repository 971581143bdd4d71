"""`embeddings.create` through the cached openai client: each input item cached on its
own.

A call with 100 texts of which 60 are cached asks the upstream once, for the other 40,
and answers all 100 in the caller's order, with the usage of that one upstream call
(what was spent now; cached items cost nothing). An item is keyed by the text, the
model, `dimensions` and `encoding_format` (what the vector is); `user` and the other
transport parameters are not part of it (`key_schema.EMBEDDINGS`). Items are exact
entries like any other (namespace, expiry, tags, every tier), never semantic. Token
arrays as input, and calls the cache cannot key, go to the upstream uncached; a cache
that fails is a miss, as everywhere.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import numpy as np
from openai.types import CreateEmbeddingResponse, Embedding
from openai.types.create_embedding_response import Usage

from llm_pgcache.cache.facade import Cache
from llm_pgcache.errors import InvalidInputError
from llm_pgcache.integrations.policy import CacheControls, CachePolicy
from llm_pgcache.key_schema import EMBEDDINGS

ENDPOINT = "embeddings.create"  # in every item's key: never an answer of another call
KEYED = tuple(name for name, role in EMBEDDINGS.items() if role == "key" and name != "model")


class Owner(Protocol):
    """What the wrapped client shares with its embeddings (`CachedOpenAI`)."""

    cache: Cache
    policy: CachePolicy
    controls: CacheControls


class CachedEmbeddings:
    """`client.embeddings`, with `create` answered item by item from the cache."""

    def __init__(self, upstream: Any, owner: Owner) -> None:
        self._upstream = upstream
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._upstream, name)

    async def create(self, **request: Any) -> Any:
        """`embeddings.create`, the cached items from the cache."""
        items = texts_of(request.get("input"))
        model = request.get("model")
        if items is None or not isinstance(model, str) or not model:
            return await self._upstream.create(**request)
        owner = self._owner
        cache, controls, policy = owner.cache, owner.controls, owner.policy
        namespace = controls.namespace or policy.namespace
        keys = [item_request(request, text) for text in items]
        found: list[Any] = [None] * len(items)
        if not controls.no_cache:
            hits = await asyncio.gather(
                *(cache.get(key, namespace=namespace, semantic=False) for key in keys)
            )
            found = [None if hit is None else vector_of(hit.response) for hit in hits]
        missing = [i for i, vector in enumerate(found) if vector is None]
        usage = None
        if missing:
            answer = await self._upstream.create(
                **{**request, "input": [items[i] for i in missing]}
            )
            vectors = self.vectors_of(answer)
            if vectors is None or len(vectors) != len(missing):  # not what was asked
                return answer  # given back untouched
            usage = self.usage_of(answer)
            for i, vector in zip(missing, vectors, strict=True):
                found[i] = vector
            if not controls.no_store:
                await asyncio.gather(*(self._store(keys[i], found[i], namespace) for i in missing))
        return self.respond(found, model, usage)

    # What differs between the SDK's objects and the proxy's JSON (`server.embeddings`):

    def vectors_of(self, answer: Any) -> list[Any] | None:
        """The vectors of an upstream answer, in the order of its input."""
        return [item.embedding for item in sorted(answer.data, key=lambda d: d.index)]

    def usage_of(self, answer: Any) -> Any:
        return answer.usage

    def respond(self, vectors: list[Any], model: str, usage: Any) -> Any:
        """The answer to the caller: every vector in its order, with the usage of the one
        upstream call (none when every item was cached)."""
        return CreateEmbeddingResponse(
            data=[
                Embedding(embedding=vector, index=i, object="embedding")
                for i, vector in enumerate(vectors)
            ],
            model=model,
            object="list",
            usage=usage or Usage(prompt_tokens=0, total_tokens=0),
        )

    async def _store(self, key: Mapping[str, Any], vector: Any, namespace: str | None) -> None:
        owner = self._owner
        ttl = owner.controls.ttl if owner.controls.ttl is not None else owner.policy.ttl
        tags = owner.controls.tags if owner.controls.tags is not None else owner.policy.tags
        try:
            await owner.cache.set(
                key,
                stored_vector(vector),
                ttl=ttl,
                tags=tags or (),
                namespace=namespace,
                semantic=False,
            )
        except InvalidInputError:  # e.g. over max_entry_bytes: answered, not stored
            return


def stored_vector(vector: list[float] | str) -> dict[str, str]:
    """What is stored of a vector: a base64 string as it came (`encoding_format="base64"`),
    floats as the base64 of their float64 bytes (lossless, and a hit decodes them in
    microseconds where a JSON list of 1536 numbers takes a millisecond)."""
    if isinstance(vector, str):
        return {"base64": vector}
    return {"f8": base64.b64encode(np.asarray(vector, dtype="<f8").tobytes()).decode("ascii")}


def vector_of(stored: Mapping[str, Any]) -> list[float] | str | None:
    if "f8" in stored:
        floats: list[float] = np.frombuffer(base64.b64decode(stored["f8"]), dtype="<f8").tolist()
        return floats
    if "base64" in stored:
        return str(stored["base64"])
    vector = stored.get("embedding")  # entries of llm-pgcache 0.1's first release
    return vector if isinstance(vector, list) else None


def texts_of(value: object) -> list[str] | None:
    """The input as texts, or None when it is not text (token arrays)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, Sequence) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def item_request(request: Mapping[str, Any], text: str) -> dict[str, Any]:
    """The request an item is keyed by (through the chat key's canonical form)."""
    keyed = {name: request[name] for name in KEYED if name in request}
    return {
        "model": request["model"],
        "messages": [{"role": "user", "content": text}],
        "endpoint": ENDPOINT,
        **keyed,
    }
