"""Embeddings as arrays: the checks every vector passes before it is stored or searched
with (an embedder's, or a caller's own), with a clear error of our own types.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from llm_pgcache.errors import EmbeddingDimensionError, InvalidEmbeddingError

Vectors = npt.NDArray[np.float32]


def check_vectors(vectors: object, *, count: int, dim: int) -> Vectors:
    """`vectors` as a (count, dim) float32 array, or a clear error.

    Raises:
        EmbeddingDimensionError: the vectors are not `dim`-dimensional.
        InvalidEmbeddingError: wrong count, NaN or infinite values, or a zero vector.
    """
    array = shaped_vectors(vectors, count=count, dim=dim)
    check_values(array)
    return array


def checked_vector(vector: object, *, dim: int) -> Vectors:
    """One embedding (a caller's) as a (dim,) float32 array, or a clear error.

    Raises:
        InvalidEmbeddingError: not one vector of numbers, NaN or infinite values, zeros.
        EmbeddingDimensionError: it is not `dim`-dimensional.
    """
    array = _float32(vector)
    if array.ndim != 1:
        raise InvalidEmbeddingError(
            f"expected one embedding of shape ({dim},), got an array of shape {array.shape}"
        )
    if array.shape[0] != dim:
        raise EmbeddingDimensionError(embedder_dim=array.shape[0], table_dim=dim)
    check_vector(array)
    return array


def shaped_vectors(vectors: object, *, count: int, dim: int) -> Vectors:
    """`vectors` as a (count, dim) float32 array; its values unchecked.

    Raises:
        InvalidEmbeddingError: not numbers in that shape (wrong count, ragged, text...).
        EmbeddingDimensionError: the vectors are not `dim`-dimensional.
    """
    array = _float32(vectors)
    if array.ndim != 2 or array.shape[0] != count:
        raise InvalidEmbeddingError(
            f"expected {count} embedding(s) of shape ({dim},), got an array of shape {array.shape}"
        )
    if array.shape[1] != dim:
        raise EmbeddingDimensionError(embedder_dim=array.shape[1], table_dim=dim)
    return array


def _float32(vectors: object) -> Vectors:
    try:
        return np.asarray(vectors, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise InvalidEmbeddingError(f"embeddings must be arrays of numbers: {exc}") from exc


def check_values(array: Vectors) -> None:
    """Raise InvalidEmbeddingError unless every row is finite and non-zero."""
    # The usual case in one pass: every row's sum of squares finite and positive (only
    # then are its values finite and not all zeros). Otherwise, or when a square
    # overflowed or underflowed float32, the checks below decide and say which.
    squares = np.einsum("ij,ij->i", array, array)
    if squares.min(initial=np.inf) > 0 and squares.max(initial=0) < np.inf:
        return
    if not np.isfinite(array).all():
        raise InvalidEmbeddingError("an embedding contains NaN or infinite values")
    if (np.abs(array).max(axis=1) == 0).any():
        raise InvalidEmbeddingError("an embedding is all zeros (cosine distance is undefined)")


def check_vector(vector: Vectors) -> None:
    """`check_values` for one vector: one numpy call when it passes (every lookup)."""
    square = float(np.dot(vector, vector))
    if not 0 < square < math.inf:
        check_values(vector[np.newaxis, :])
