"""llm-pgcache: a durable, shared cache for LLM responses on PostgreSQL + pgvector."""

from importlib.metadata import version as _version

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
from llm_pgcache.integrations.openai import (
    CacheControls,
    CachedOpenAI,
    CacheInfo,
    CachePolicy,
    cache_info,
    cached_openai,
)
from llm_pgcache.keys import RequestKeys, request_keys
from llm_pgcache.postgres.driver import init_connection
from llm_pgcache.postgres.purge import PurgeReport
from llm_pgcache.postgres.reindex import ReindexReport
from llm_pgcache.postgres.store import TableStats
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
