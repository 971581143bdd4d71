"""The caching proxy (`llm-pgcache serve`): an OpenAI-compatible HTTP server in front of
any OpenAI-compatible upstream, answering from the same cache as the library."""
