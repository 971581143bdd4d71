"""llm-pgcache: a durable, shared cache for LLM responses on PostgreSQL + pgvector."""

from importlib.metadata import version as _version

from llm_pgcache.breaker import CircuitBreaker
from llm_pgcache.cache import Cache
from llm_pgcache.embeddings import Embedder, HashingEmbedder, OpenAIEmbedder, default_embedder
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
    LLMPgCacheError,
    MissingExtraError,
    SchemaError,
)
from llm_pgcache.integrations.openai import (
    CacheControls,
    CachedOpenAI,
    CacheInfo,
    CachePolicy,
    cache_info,
    cached_openai,
)
from llm_pgcache.keys import RequestKeys, request_keys
from llm_pgcache.metrics import Counters, ModelSavings, Stats
from llm_pgcache.options import CacheOptions
from llm_pgcache.purge import PurgeReport
from llm_pgcache.reindex import ReindexReport
from llm_pgcache.semantic import SearchOptions
from llm_pgcache.store.driver import init_connection
from llm_pgcache.store.memory import MemoryTier
from llm_pgcache.store.postgres import TableStats
from llm_pgcache.store.redis import RedisTier
from llm_pgcache.warm import WarmItem, WarmReport

__version__ = _version("llm-pgcache")

__all__ = [
    "BackendError",
    "Cache",
    "CacheControls",
    "CacheHit",
    "CacheInfo",
    "CacheOptions",
    "CachePolicy",
    "CachedOpenAI",
    "CircuitBreaker",
    "ConfigurationError",
    "Counters",
    "Embedder",
    "EmbedderError",
    "EmbeddingDimensionError",
    "HashingEmbedder",
    "InvalidEmbeddingError",
    "InvalidInputError",
    "InvalidNamespaceError",
    "InvalidRequestError",
    "InvalidResponseError",
    "InvalidTTLError",
    "LLMPgCacheError",
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
    "Stats",
    "TableStats",
    "WarmItem",
    "WarmReport",
    "__version__",
    "cache_info",
    "cached_openai",
    "default_embedder",
    "init_connection",
    "request_keys",
]
