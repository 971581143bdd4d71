"""Every exception llm-pgcache raises on purpose.

Each class's docstring is its default message; subclasses carry structured
attributes where a caller may want to act on them.
"""

from __future__ import annotations


class LLMPgCacheError(Exception):
    """An llm-pgcache error occurred."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(LLMPgCacheError):
    """The cache is not configured correctly."""


class MissingExtraError(ConfigurationError):
    """An optional dependency is not installed."""

    def __init__(self, *, package: str, extra: str) -> None:
        self.package = package
        self.extra = extra
        super().__init__(
            f"{package} is not installed; install it with: pip install 'llm-pgcache[{extra}]'"
        )


class BackendError(LLMPgCacheError):
    """The cache backend is unreachable or failed to answer in time.

    The `Cache` turns this into a miss unless it was opened with `strict=True`.
    """


class SchemaError(BackendError):
    """The database schema is missing or does not match this version of llm-pgcache.

    Run `llm-pgcache migrate` (or `alembic upgrade head`) against the database.
    `Cache.connect` raises it; once open, a cache treats it as any backend failure.
    """


class InvalidInputError(LLMPgCacheError, ValueError):
    """An argument passed to the cache is invalid; nothing was read or written."""


class InvalidRequestError(InvalidInputError):
    """The request cannot be turned into a cache key."""


class InvalidResponseError(InvalidInputError):
    """The response cannot be stored as JSON."""


class InvalidTTLError(InvalidInputError):
    """The time-to-live is not a positive number of seconds within range."""

    def __init__(self, ttl: object, reason: str) -> None:
        self.ttl = ttl
        super().__init__(f"invalid ttl {ttl!r}: {reason}")


class InvalidNamespaceError(InvalidInputError):
    """The namespace is empty, too long or contains a NUL character."""

    def __init__(self, namespace: object, reason: str) -> None:
        self.namespace = namespace
        super().__init__(f"invalid namespace {namespace!r}: {reason}")


class EmbeddingDimensionError(ConfigurationError):
    """The embedder's dimension differs from the table's `embedding` column."""

    def __init__(self, *, embedder_dim: int, table_dim: int) -> None:
        self.embedder_dim = embedder_dim
        self.table_dim = table_dim
        super().__init__(
            f"the embedder makes {embedder_dim}-dimensional vectors but the table's embedding "
            f"column is vector({table_dim}): use an embedder of {table_dim} dimensions, or "
            f"migrate a new database with LLM_PGCACHE_EMBEDDING_DIM={embedder_dim}"
        )


class EmbedderError(BackendError):
    """The embedder failed to embed the text (e.g. the embeddings API is unreachable).

    The `Cache` turns this into an exact-only lookup unless it was opened with `strict=True`.
    """


class JudgeError(BackendError):
    """A judge gave no usable verdict (it failed, answered something other than yes or
    no, or returned a non-bool). The candidate is not served."""


class InvalidEmbeddingError(InvalidInputError):
    """An embedding is not usable: wrong shape, NaN or infinite values, or all zeros."""


# The `llm-pgcache` command's exit codes (2, for usage errors, is argparse's).
EXIT_OK = 0
EXIT_ERROR = 1
