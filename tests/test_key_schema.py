"""The key schema classifies every parameter of the installed SDKs' calls, and the docs
page is rendered from it: an SDK upgrade that adds a parameter fails here, so that what
a key means never changes silently."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from anthropic.resources.messages import AsyncMessages, Messages
from openai.resources.chat.completions import AsyncCompletions, Completions
from openai.resources.embeddings import AsyncEmbeddings, Embeddings

from llm_pgcache import request_keys
from llm_pgcache.key_schema import ANTHROPIC_MESSAGES, CHAT_COMPLETIONS, EMBEDDINGS, Role, render


def parameters(method: Callable[..., Any]) -> set[str]:
    return {
        name
        for name, parameter in inspect.signature(method).parameters.items()
        if name != "self" and parameter.kind is not inspect.Parameter.VAR_KEYWORD
    }


@pytest.mark.parametrize(
    ("methods", "schema"),
    [
        ((Completions.create, AsyncCompletions.create), CHAT_COMPLETIONS),
        ((Embeddings.create, AsyncEmbeddings.create), EMBEDDINGS),
        ((Messages.create, AsyncMessages.create), ANTHROPIC_MESSAGES),
    ],
)
def test_every_sdk_parameter_is_classified(
    methods: tuple[Callable[..., Any], ...], schema: dict[str, Role]
) -> None:
    for method in methods:
        unclassified = parameters(method) - schema.keys()
        assert not unclassified, f"{method.__qualname__}: classify {sorted(unclassified)}"
        gone = schema.keys() - parameters(method)
        assert not gone, f"{method.__qualname__} has no {sorted(gone)} any more"


def test_the_docs_page_is_the_table(repo_root: Path) -> None:
    assert (repo_root / "docs" / "key-schema.md").read_text() == render(), (
        "regenerate: python -c 'from llm_pgcache.key_schema import render; "
        'print(render(), end="")\' > docs/key-schema.md'
    )


def test_keys_follow_the_table() -> None:
    base = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    keys = request_keys(base)
    for name, role in CHAT_COMPLETIONS.items():
        if role != "transport":
            continue
        assert request_keys({**base, name: "anything"}) == keys, name
    for name in ("temperature", "seed", "tools", "extra_body", "a_parameter_of_tomorrow"):
        assert request_keys({**base, name: 1}).exact_key != keys.exact_key, name
        assert request_keys({**base, name: 1}).scope_key != keys.scope_key, name
