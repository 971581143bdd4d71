"""Integrations of the cache with LLM client libraries."""
