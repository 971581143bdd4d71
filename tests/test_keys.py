"""The canonical request: equal requests share keys, different outputs never do."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest
from openai import NOT_GIVEN
from openai.types.chat import ChatCompletionMessage, ChatCompletionUserMessageParam

from llm_pgcache import InvalidRequestError, request_keys
from llm_pgcache.keys import KEY_FORMAT_VERSION, canonical_request, exact_key

BASE: dict[str, Any] = {
    "model": "gpt-4o-mini",
    "messages": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
    "temperature": 0.2,
}


def test_dict_order_does_not_matter() -> None:
    reordered = {
        "temperature": 0.2,
        "messages": [
            {"content": "You are terse.", "role": "system"},
            {"content": "What is the capital of France?", "role": "user"},
        ],
        "model": "gpt-4o-mini",
    }
    assert request_keys(reordered) == request_keys(BASE)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("model", "gpt-4o"),
        ("temperature", 0.3),
        ("top_p", 0.9),
        ("max_tokens", 50),
        ("max_completion_tokens", 50),
        ("seed", 7),
        ("stop", ["\n"]),
        ("n", 2),
        ("presence_penalty", 0.5),
        ("frequency_penalty", 0.5),
        ("logit_bias", {"50256": -100}),
        ("response_format", {"type": "json_object"}),
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ("tool_choice", "required"),
        ("reasoning_effort", "high"),
        ("some_future_parameter", True),
    ],
)
def test_every_output_parameter_changes_the_key(name: str, value: object) -> None:
    changed = request_keys({**BASE, name: value})
    assert changed.exact_key != request_keys(BASE).exact_key
    assert changed.scope_key != request_keys(BASE).scope_key


def test_system_prompt_changes_both_keys() -> None:
    other = {
        **BASE,
        "messages": [{"role": "system", "content": "Be verbose."}, BASE["messages"][1]],
    }
    assert request_keys(other).exact_key != request_keys(BASE).exact_key
    assert request_keys(other).scope_key != request_keys(BASE).scope_key


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("timeout", 30),
        ("extra_headers", {"X-Trace": "abc"}),
        ("extra_query", {"a": "b"}),
        ("user", "user-42"),
        ("stream", True),
        ("stream_options", {"include_usage": True}),
        ("metadata", {"request_id": "r1"}),
        ("store", False),
        ("service_tier", "auto"),
    ],
)
def test_transport_parameters_do_not_change_the_key(name: str, value: object) -> None:
    assert request_keys({**BASE, name: value}) == request_keys(BASE)


def test_not_given_is_the_same_as_absent() -> None:
    assert request_keys({**BASE, "seed": NOT_GIVEN}) == request_keys(BASE)


def test_int_keys_equal_their_json_strings() -> None:
    # The openai client sends {50256: -100} as {"50256": -100}: the same request.
    assert request_keys({**BASE, "logit_bias": {50256: -100}}) == request_keys(
        {**BASE, "logit_bias": {"50256": -100}}
    )


def test_message_objects_key_like_their_dicts() -> None:
    previous = ChatCompletionMessage(role="assistant", content="Paris.")
    as_object = {**BASE, "messages": [*BASE["messages"], previous]}
    as_dict = {**BASE, "messages": [*BASE["messages"], {"role": "assistant", "content": "Paris."}]}
    assert request_keys(as_object) == request_keys(as_dict)


def test_exact_key_alone_equals_the_full_computation() -> None:
    assert exact_key(BASE) == request_keys(BASE).exact_key


def test_integral_floats_equal_ints() -> None:
    assert request_keys({**BASE, "temperature": 1.0}) == request_keys({**BASE, "temperature": 1})


def test_last_user_turn_is_the_text_and_outside_the_scope() -> None:
    paraphrase = {
        **BASE,
        "messages": [BASE["messages"][0], {"role": "user", "content": "France's capital city?"}],
    }
    keys, other = request_keys(BASE), request_keys(paraphrase)
    assert keys.text == "What is the capital of France?"
    assert other.text == "France's capital city?"
    assert keys.exact_key != other.exact_key
    assert keys.scope_key == other.scope_key


def test_text_of_content_parts() -> None:
    request = {
        "model": "m",
        "messages": [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe"},
                    {"type": "image_url", "image_url": {"url": "https://example.invalid/a.png"}},
                    {"type": "text", "text": "this image"},
                ],
            }
        ],
    }
    assert request_keys(request).text == "Describe\nthis image"


def test_the_canonical_form_is_versioned_and_is_what_is_hashed() -> None:
    canonical = canonical_request(BASE)
    assert json.loads(canonical)["v"] == KEY_FORMAT_VERSION
    assert request_keys(BASE).exact_key == hashlib.sha256(canonical.encode()).digest()


def test_the_canonical_form_of_key_format_1_never_changes() -> None:
    # Rows in every deployed database are keyed by this form: a change of the encoder or
    # of the rules that alters it must come with a new KEY_FORMAT_VERSION (and this test
    # then pins the new form).
    request = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Größe? \u00e9\u4e2d"},
        ],
        "temperature": 1.0,
        "top_p": 0.5,
        "stop": ["\n"],
        "seed": 7,
        "timeout": 30,
        "user": "u1",
    }
    assert KEY_FORMAT_VERSION == 1
    assert canonical_request(request) == (
        '{"request":{"messages":[{"content":"Be terse.","role":"system"},'
        '{"content":"Größe? é中","role":"user"}],"model":"gpt-4o-mini","seed":7,'
        '"stop":["\\n"],"temperature":1,"top_p":0.5},"v":1}'
    )
    assert exact_key(request).hex() == (
        "2cab0e8d3b3823ca953f57570a5ea060c8f36f86625a404d006f15c84eae3953"
    )


def test_pydantic_messages_key_like_their_dicts() -> None:
    message: ChatCompletionUserMessageParam = {"role": "user", "content": "hi"}
    assert request_keys({"model": "m", "messages": [message]}) == request_keys(
        {"model": "m", "messages": [{"content": "hi", "role": "user"}]}
    )


@pytest.mark.parametrize(
    "request_",
    [
        {"messages": BASE["messages"]},
        {"model": "", "messages": BASE["messages"]},
        {"model": "gpt\x00", "messages": BASE["messages"]},
        {"model": "m", "messages": []},
        {"model": "m"},
        {**BASE, "temperature": float("nan")},
        {**BASE, "tools": [object()]},
        {**BASE, "logit_bias": {(1, 2): 3}},
        ["not", "a", "mapping"],
    ],
)
def test_unkeyable_requests_raise(request_: object) -> None:
    with pytest.raises(InvalidRequestError):
        request_keys(request_)  # type: ignore[arg-type]
