"""llm-pgcache: a durable, shared cache for LLM responses on PostgreSQL + pgvector.

The names below are imported on first use (PEP 562), so that `import llm_pgcache` and the
command line start fast: the openai client's types and alembic are loaded only by what
needs them.
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llm_pgcache.breaker import CircuitBreaker
    from llm_pgcache.cache.facade import Cache
    from llm_pgcache.cache.metrics import Counters, ModelSavings, Stats
    from llm_pgcache.cache.options import CacheOptions
    from llm_pgcache.cache.warming import WarmItem, WarmReport
    from llm_pgcache.entries import CacheHit
    from llm_pgcache.errors import (
        BackendError,
        ConfigurationError,
        EmbedderError,
        EmbeddingDimensionError,
        InvalidEmbeddingError,
        InvalidInputError,
        InvalidNamespaceError,
        InvalidRequestError,
        InvalidResponseError,
        InvalidTTLError,
        JudgeError,
        LLMPgCacheError,
        MissingExtraError,
        SchemaError,
    )
    from llm_pgcache.integrations.anthropic import CachedAnthropic, cached_anthropic
    from llm_pgcache.integrations.openai import (
        CacheControls,
        CachedOpenAI,
        CacheInfo,
        CachePolicy,
        cache_info,
        cached_openai,
    )
    from llm_pgcache.integrations.sync_cache import SyncCache
    from llm_pgcache.keys import RequestKeys, request_keys
    from llm_pgcache.postgres.driver import init_connection
    from llm_pgcache.postgres.purge import PurgeReport
    from llm_pgcache.postgres.reindex import ReindexReport
    from llm_pgcache.postgres.stats import TableStats
    from llm_pgcache.semantic.bound import ServeThreshold
    from llm_pgcache.semantic.embedders import (
        Embedder,
        HashingEmbedder,
        OpenAIEmbedder,
        default_embedder,
    )
    from llm_pgcache.semantic.guard import Guard, LookAlikeGuard
    from llm_pgcache.semantic.judges import CrossEncoderJudge, Judge, JudgeCase, LLMJudge
    from llm_pgcache.semantic.local import SentenceTransformerEmbedder
    from llm_pgcache.semantic.search import SearchOptions
    from llm_pgcache.tiers.memory import MemoryTier
    from llm_pgcache.tiers.redis import RedisTier

# Where each public name lives (a test checks this against the imports above and
# `__all__`).
_EXPORTS: dict[str, str] = {
    "BackendError": "llm_pgcache.errors",
    "Cache": "llm_pgcache.cache.facade",
    "CacheControls": "llm_pgcache.integrations.openai",
    "CacheHit": "llm_pgcache.entries",
    "CacheInfo": "llm_pgcache.integrations.openai",
    "CacheOptions": "llm_pgcache.cache.options",
    "CachePolicy": "llm_pgcache.integrations.openai",
    "CachedAnthropic": "llm_pgcache.integrations.anthropic",
    "CachedOpenAI": "llm_pgcache.integrations.openai",
    "CircuitBreaker": "llm_pgcache.breaker",
    "ConfigurationError": "llm_pgcache.errors",
    "Counters": "llm_pgcache.cache.metrics",
    "CrossEncoderJudge": "llm_pgcache.semantic.judges",
    "Embedder": "llm_pgcache.semantic.embedders",
    "EmbedderError": "llm_pgcache.errors",
    "EmbeddingDimensionError": "llm_pgcache.errors",
    "Guard": "llm_pgcache.semantic.guard",
    "HashingEmbedder": "llm_pgcache.semantic.embedders",
    "InvalidEmbeddingError": "llm_pgcache.errors",
    "InvalidInputError": "llm_pgcache.errors",
    "InvalidNamespaceError": "llm_pgcache.errors",
    "InvalidRequestError": "llm_pgcache.errors",
    "InvalidResponseError": "llm_pgcache.errors",
    "InvalidTTLError": "llm_pgcache.errors",
    "Judge": "llm_pgcache.semantic.judges",
    "JudgeCase": "llm_pgcache.semantic.judges",
    "JudgeError": "llm_pgcache.errors",
    "LLMJudge": "llm_pgcache.semantic.judges",
    "LLMPgCacheError": "llm_pgcache.errors",
    "LookAlikeGuard": "llm_pgcache.semantic.guard",
    "MemoryTier": "llm_pgcache.tiers.memory",
    "MissingExtraError": "llm_pgcache.errors",
    "ModelSavings": "llm_pgcache.cache.metrics",
    "OpenAIEmbedder": "llm_pgcache.semantic.embedders",
    "PurgeReport": "llm_pgcache.postgres.purge",
    "RedisTier": "llm_pgcache.tiers.redis",
    "ReindexReport": "llm_pgcache.postgres.reindex",
    "RequestKeys": "llm_pgcache.keys",
    "SchemaError": "llm_pgcache.errors",
    "SearchOptions": "llm_pgcache.semantic.search",
    "SentenceTransformerEmbedder": "llm_pgcache.semantic.local",
    "ServeThreshold": "llm_pgcache.semantic.bound",
    "Stats": "llm_pgcache.cache.metrics",
    "SyncCache": "llm_pgcache.integrations.sync_cache",
    "TableStats": "llm_pgcache.postgres.stats",
    "WarmItem": "llm_pgcache.cache.warming",
    "WarmReport": "llm_pgcache.cache.warming",
    "cache_info": "llm_pgcache.integrations.openai",
    "cached_anthropic": "llm_pgcache.integrations.anthropic",
    "cached_openai": "llm_pgcache.integrations.openai",
    "default_embedder": "llm_pgcache.semantic.embedders",
    "init_connection": "llm_pgcache.postgres.driver",
    "request_keys": "llm_pgcache.keys",
}


def __getattr__(name: str) -> Any:
    if name == "__version__":  # importlib.metadata takes 80 ms to import
        from importlib.metadata import version  # noqa: PLC0415

        globals()[name] = version("llm-pgcache")
        return globals()[name]
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'llm_pgcache' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


__all__ = [
    "BackendError",
    "Cache",
    "CacheControls",
    "CacheHit",
    "CacheInfo",
    "CacheOptions",
    "CachePolicy",
    "CachedAnthropic",
    "CachedOpenAI",
    "CircuitBreaker",
    "ConfigurationError",
    "Counters",
    "CrossEncoderJudge",
    "Embedder",
    "EmbedderError",
    "EmbeddingDimensionError",
    "Guard",
    "HashingEmbedder",
    "InvalidEmbeddingError",
    "InvalidInputError",
    "InvalidNamespaceError",
    "InvalidRequestError",
    "InvalidResponseError",
    "InvalidTTLError",
    "Judge",
    "JudgeCase",
    "JudgeError",
    "LLMJudge",
    "LLMPgCacheError",
    "LookAlikeGuard",
    "MemoryTier",
    "MissingExtraError",
    "ModelSavings",
    "OpenAIEmbedder",
    "PurgeReport",
    "RedisTier",
    "ReindexReport",
    "RequestKeys",
    "SchemaError",
    "SearchOptions",
    "SentenceTransformerEmbedder",
    "ServeThreshold",
    "Stats",
    "SyncCache",
    "TableStats",
    "WarmItem",
    "WarmReport",
    "__version__",
    "cache_info",
    "cached_anthropic",
    "cached_openai",
    "default_embedder",
    "init_connection",
    "request_keys",
]
