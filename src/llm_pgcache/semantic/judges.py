"""Judges: whether a semantic candidate's stored answer answers the question looked up.

A judge sees the query, the stored prompt that came nearest, its stored response and
their similarity, and says yes or no. The cache asks one inline (a candidate is served
only when the judge accepts it in time) or in the background (accepted candidates become
aliases, so the repeat is an exact hit); see `CacheOptions.judge`.

Built in: `LLMJudge` (one short call to any OpenAI-compatible chat model) and
`CrossEncoderJudge` (a sentence-transformers cross-encoder on this machine, the `local`
extra). Any object with `async def judge(self, case: JudgeCase) -> bool` is a judge.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from llm_pgcache.errors import ConfigurationError, JudgeError, MissingExtraError
from llm_pgcache.validation import check_timeout

MAX_ANSWER_CHARS = 2000  # of the stored answer shown to a judge


@dataclass(frozen=True, slots=True, kw_only=True)
class JudgeCase:
    """A semantic candidate put to a judge.

    Attributes:
        query: the text looked up (the request's last user turn).
        candidate: the stored prompt that came nearest.
        response: the stored response (JSON, as `CacheHit.response`).
        similarity: cosine similarity of query and candidate.
        request: the request looked up (`chat.completions.create` arguments).
    """

    query: str
    candidate: str
    response: Mapping[str, Any]
    similarity: float
    request: Mapping[str, Any]

    @property
    def answer(self) -> str:
        """The stored answer's text (its first choice's message), else its JSON; cut to
        `MAX_ANSWER_CHARS`."""
        text: object = None
        choices = self.response.get("choices")
        if isinstance(choices, list) and choices and isinstance(choices[0], Mapping):
            message = choices[0].get("message")
            if isinstance(message, Mapping):
                text = message.get("content")
        if not isinstance(text, str):
            text = json.dumps(self.response, ensure_ascii=False)
        return text[:MAX_ANSWER_CHARS]


@runtime_checkable
class Judge(Protocol):
    """Decides whether `case.response` answers `case.query`: True serves it."""

    async def judge(self, case: JudgeCase) -> bool: ...


JUDGE_SYSTEM_PROMPT = (
    "You check a cache of answers. Decide whether the stored answer, written for the "
    "stored question, is a correct and complete answer to the new question. Questions "
    "that differ in numbers, names, direction, negation or intent need different answers. "
    "Reply with one word: yes or no."
)


def parse_verdict(text: str | None) -> bool:
    """A judge model's reply as a verdict: "yes" or "no" (any case, with a trailing full
    stop or exclamation mark, surrounded by white space); anything else is an error.

    Raises:
        JudgeError: the reply is not a plain yes or no.
    """
    word = (text or "").strip().rstrip(".!").strip().lower()
    if word == "yes":
        return True
    if word == "no":
        return False
    raise JudgeError(f"the judge model answered {text!r}, not yes or no")


class LLMJudge:
    """A judge that asks an OpenAI-compatible chat model, in one short call.

    Args:
        client: an `openai.AsyncOpenAI` (any OpenAI-compatible server: set its base_url).
        model: the chat model to ask.
        timeout: seconds the call may take (the client's own retries are off: the cache
            has its own `judge_timeout` and counts a failure as a miss).
        max_tokens: the most tokens of its reply (one word is needed).

    Attributes:
        calls, prompt_tokens, completion_tokens: what the judge has spent so far.
    """

    def __init__(
        self, client: Any, model: str = "gpt-4o-mini", *, timeout: float = 5.0, max_tokens: int = 3
    ) -> None:
        if not isinstance(model, str) or not model:
            raise ConfigurationError("LLMJudge needs a model name")
        self._client = client.with_options(max_retries=0)
        self.model = model
        self.timeout = check_timeout("timeout", timeout)
        self.max_tokens = max_tokens
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0

    def messages(self, case: JudgeCase) -> list[dict[str, str]]:
        """The chat messages that put `case` to the model."""
        return [
            {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
            {
                "role": "user",
                "content": (
                    f"Stored question: {case.candidate}\n"
                    f"Stored answer: {case.answer}\n"
                    f"New question: {case.query}\n"
                    "Does the stored answer answer the new question? Reply yes or no."
                ),
            },
        ]

    async def judge(self, case: JudgeCase) -> bool:
        """Raises:
        JudgeError: the call failed, or the reply was not yes or no."""
        try:
            completion = await self._client.chat.completions.create(
                model=self.model,
                messages=self.messages(case),
                max_tokens=self.max_tokens,
                temperature=0,
                timeout=self.timeout,
            )
        except Exception as exc:  # the client's errors: HTTP, timeouts, bad payloads
            raise JudgeError(f"the judge model call failed: {exc!r}") from exc
        self.calls += 1
        usage = getattr(completion, "usage", None)
        if usage is not None:
            self.prompt_tokens += usage.prompt_tokens or 0
            self.completion_tokens += usage.completion_tokens or 0
        choices = getattr(completion, "choices", None) or []
        if not choices:
            raise JudgeError("the judge model returned no choices")
        return parse_verdict(choices[0].message.content)


class CrossEncoderJudge:
    """A judge that scores (query, candidate) with a sentence-transformers cross-encoder
    on this machine (the `local` extra; never downloaded at run time), in a worker thread.

    Args:
        model: a local model directory, a model in the Hugging Face cache, or a loaded
            `sentence_transformers.CrossEncoder`.
        threshold: the lowest score accepted, on the scale the model's `predict` returns
            (a paraphrase model such as a Quora-duplicates cross-encoder: a probability).
        device: "cpu", "cuda", ...; None lets sentence-transformers choose.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        *,
        threshold: float = 0.5,
        device: str | None = None,
    ) -> None:
        self.threshold = float(threshold)
        if hasattr(model, "predict"):
            self._model = model
            return
        try:
            from sentence_transformers import CrossEncoder  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise MissingExtraError(package="sentence-transformers", extra="local") from exc
        try:
            self._model = CrossEncoder(str(Path(model)), device=device, local_files_only=True)
        except OSError as exc:
            raise ConfigurationError(
                f"cross-encoder model {model!s} is not on this machine: {exc}"
            ) from exc

    def score(self, query: str, candidate: str) -> float:
        """The model's score of the pair (blocking)."""
        scores = self._model.predict([(query, candidate)], show_progress_bar=False)
        return float(scores[0])

    async def judge(self, case: JudgeCase) -> bool:
        score = await asyncio.to_thread(self.score, case.query, case.candidate)
        return score >= self.threshold
