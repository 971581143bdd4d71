"""The proxy's settings (`llm-pgcache serve`), as one frozen dataclass that travels to
each worker process as JSON in an environment variable."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

from llm_pgcache.errors import ConfigurationError

ENV_CONFIG = "LLM_PGCACHE_PROXY_CONFIG"  # how `serve` hands its settings to the workers
NAMESPACE_HEADER = "x-llm-cache-namespace"


@dataclass(frozen=True, slots=True, kw_only=True)
class ProxyConfig:
    """What the proxy forwards to and how it guards itself.

    Attributes:
        upstream: base URL of the OpenAI-compatible API, with its `/v1`
            (`https://api.openai.com/v1`); `/v1/<path>` is forwarded to `<upstream>/<path>`.
        dsn: the cache's PostgreSQL (None: the embedded server).
        upstream_key_env: the environment variable holding the key sent upstream
            instead of the caller's `Authorization`.
        admin_token_env: the environment variable holding the admin API's bearer token;
            None turns the admin API off.
        tenants: sha256 hex of an API key -> its namespace. When set, a caller's
            namespace comes from its key alone, and a key not in it is refused.
        max_body_bytes: larger request bodies are refused (413).
        upstream_timeout: seconds an upstream call may take.
        max_upstream_in_flight: upstream calls at once, per worker; more wait their turn.
        cache_options: keyword arguments of `Cache.connect` (JSON values).
        embedder: the embedder of semantic lookups, as `llm-pgcache warm --embedder`
            names one ("hashing", "local", "openai", "openai:MODEL", a model directory);
            None: exact lookups only.
        memory_entries: entries of each worker's in-process tier (0: none); other
            workers' invalidations reach it through PostgreSQL LISTEN/NOTIFY.
        redis_url: a Redis tier shared by the workers (the `redis` extra); None: none.
        flight_dir: where the host-wide single-flight locks live (`server.flights`);
            None: a directory of this user's under the system's temporary directory.
    """

    upstream: str
    dsn: str | None = None
    upstream_key_env: str | None = None
    admin_token_env: str | None = None
    tenants: Mapping[str, str] | None = None
    max_body_bytes: int = 10 * 1024 * 1024
    upstream_timeout: float = 600.0
    max_upstream_in_flight: int = 64
    cache_options: Mapping[str, object] = field(default_factory=dict)
    embedder: str | None = None
    memory_entries: int = 0
    redis_url: str | None = None
    flight_dir: str | None = None

    def __post_init__(self) -> None:
        if not self.upstream.startswith(("http://", "https://")):
            raise ConfigurationError(f"--upstream must be an http(s) URL, got {self.upstream!r}")
        if self.max_body_bytes <= 0 or self.max_upstream_in_flight <= 0:
            raise ConfigurationError("body and in-flight limits must be positive")
        if self.upstream_timeout <= 0:
            raise ConfigurationError("the upstream timeout must be positive")
        for name in (self.upstream_key_env, self.admin_token_env):
            if name is not None and not os.environ.get(name):
                raise ConfigurationError(f"the environment variable {name} is not set")

    def to_env(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_env(cls) -> ProxyConfig:
        text = os.environ.get(ENV_CONFIG)
        if not text:
            raise ConfigurationError(f"{ENV_CONFIG} is not set: start the proxy with `serve`")
        values = json.loads(text)
        return cls(**values)

    def upstream_key(self) -> str | None:
        return os.environ[self.upstream_key_env] if self.upstream_key_env else None

    def admin_token(self) -> str | None:
        return os.environ[self.admin_token_env] if self.admin_token_env else None


def key_hash(api_key: str) -> str:
    """How an API key is named in a tenant map: the sha256 hex of the key."""
    return hashlib.sha256(api_key.encode()).hexdigest()


def read_tenants(path: Path) -> dict[str, str]:
    """A tenant map file: a JSON object of sha256 hex of an API key -> namespace.

    Raises:
        ConfigurationError: the file cannot be read or is not such an object.
    """
    try:
        tenants = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ConfigurationError(f"cannot read the tenant map {path}: {exc}") from exc
    if not isinstance(tenants, dict) or not all(
        isinstance(k, str) and len(k) == 64 and isinstance(v, str) for k, v in tenants.items()
    ):
        raise ConfigurationError(
            f"{path}: a tenant map is a JSON object of sha256 hex of an API key -> namespace"
        )
    return {k.lower(): v for k, v in tenants.items()}
