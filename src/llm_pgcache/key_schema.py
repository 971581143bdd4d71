"""The key schema: what every keyword parameter of the supported SDK calls means to a
cache key, in one table (`docs/key-schema.md` is rendered from it, and a test fails when
an installed SDK has a parameter the table does not classify).

Roles:
- "key": changes what the model answers: part of the exact key, and of the semantic
  scope (two requests match semantically only when all of these are equal).
- "turns": the conversation; the last user turn is what a semantic lookup embeds, the
  earlier turns are scope.
- "input": the text embedded (embeddings calls).
- "transport": how the request travels, is billed or logged, never what comes back:
  left out of every key.

A parameter a caller passes that no table names (a newer SDK's, or `extra_body`'s
contents) is part of the key: an unknown parameter costs hits, never a wrong answer.
"""

from __future__ import annotations

from typing import Final, Literal

Role = Literal["key", "turns", "input", "transport"]

# openai `chat.completions.create` (checked against openai 3.57)
CHAT_COMPLETIONS: Final[dict[str, Role]] = {
    "messages": "turns",
    "model": "key",
    "audio": "key",
    "frequency_penalty": "key",
    "function_call": "key",
    "functions": "key",
    "logit_bias": "key",
    "logprobs": "key",
    "max_completion_tokens": "key",
    "max_tokens": "key",
    "modalities": "key",
    "moderation": "key",
    "n": "key",
    "parallel_tool_calls": "key",
    "prediction": "key",
    "presence_penalty": "key",
    "reasoning_effort": "key",
    "response_format": "key",
    "seed": "key",
    "stop": "key",
    "temperature": "key",
    "tool_choice": "key",
    "tools": "key",
    "top_logprobs": "key",
    "top_p": "key",
    "verbosity": "key",
    "web_search_options": "key",
    "extra_body": "key",
    "metadata": "transport",
    "prompt_cache_key": "transport",
    "prompt_cache_options": "transport",
    "prompt_cache_retention": "transport",
    "safety_identifier": "transport",
    "service_tier": "transport",
    "store": "transport",
    "stream": "transport",
    "stream_options": "transport",
    "user": "transport",
    "extra_headers": "transport",
    "extra_query": "transport",
    "timeout": "transport",
}

# openai `embeddings.create`
EMBEDDINGS: Final[dict[str, Role]] = {
    "input": "input",
    "model": "key",
    "dimensions": "key",
    "encoding_format": "key",
    "extra_body": "key",
    "user": "transport",
    "extra_headers": "transport",
    "extra_query": "transport",
    "timeout": "transport",
}

# anthropic `messages.create` (checked against anthropic 2.15)
ANTHROPIC_MESSAGES: Final[dict[str, Role]] = {
    "messages": "turns",
    "model": "key",
    "max_tokens": "key",
    "system": "key",
    "container": "key",
    "output_config": "key",
    "speed": "key",
    "stop_sequences": "key",
    "thinking": "key",
    "tool_choice": "key",
    "tools": "key",
    "extra_body": "key",
    "cache_control": "transport",
    "diagnostics": "transport",
    "inference_geo": "transport",
    "metadata": "transport",
    "service_tier": "transport",
    "stream": "transport",
    "user_profile_id": "transport",
    "workspace_id": "transport",
    "extra_headers": "transport",
    "extra_query": "transport",
    "timeout": "transport",
}

SCHEMAS: Final[dict[str, dict[str, Role]]] = {
    "openai chat.completions.create": CHAT_COMPLETIONS,
    "openai embeddings.create": EMBEDDINGS,
    "anthropic messages.create": ANTHROPIC_MESSAGES,
}


def transport(schema: dict[str, Role]) -> frozenset[str]:
    """The parameters of `schema` left out of every key."""
    return frozenset(name for name, role in schema.items() if role == "transport")


def render() -> str:
    """`docs/key-schema.md`: the tables, as Markdown."""
    lines = [
        "# The key schema",
        "",
        "What every keyword parameter of the supported SDK calls means to a cache key;",
        "rendered from `llm_pgcache.key_schema` (a test checks this page against it, and",
        "the installed SDKs' signatures against the tables).",
        "",
        "- key: changes the answer: part of the exact key and of the semantic scope.",
        "- turns: the conversation: the last user turn is what a semantic lookup embeds,",
        "  the earlier turns are scope.",
        "- input: the text embedded.",
        "- transport: how the request travels, is billed or logged: in no key.",
        "",
        "A parameter no table names is part of the key (it costs hits, never a wrong",
        "answer).",
    ]
    for call, schema in SCHEMAS.items():
        lines += ["", f"## {call}", "", "| parameter | role |", "| --- | --- |"]
        lines += [f"| `{name}` | {role} |" for name, role in sorted(schema.items())]
    return "\n".join(lines) + "\n"
