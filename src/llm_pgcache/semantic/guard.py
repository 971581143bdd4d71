"""The look-alike guard: refuse a semantic candidate whose text differs from the query in
what changes the answer while the embedding barely moves.

Embeddings place "turn on dark mode" and "turn off dark mode", "flights from New York to
Boston" and "from Boston to New York", "open on Monday" and "open on Tuesday" at cosine
0.95-0.99: above any threshold that still serves paraphrases. The guard compares the two
texts themselves, with no model and no dependencies, and refuses a candidate when

- "number": each names a number the other does not (digits or number words: "5" is
  "five"); a number only one side has is detail;
- "negation": one is negated and the other is not ("not", "no", "never", "n't", ...);
- "antonym": one has a word whose opposite the other has (enable/disable, on/off,
  min/max, ascending/descending, ...);
- "order": the same words stand in other roles: a relational word ("from", "to", "in",
  "than", ...) is followed by different words that both texts contain (direction swaps,
  "5 miles to kilometers" / "5 kilometers to miles"), or their shared words are
  reordered beyond moving one phrase ("a man is cutting a potato" / "a potato is cutting
  a man"; "in one sentence, explain X" / "explain X in one sentence" passes);
- "entity": each names something the other does not (a capitalized word inside the
  text, a weekday or month, a word with digits or inner capitals: "France" / "Spain"),
  or their quoted strings differ. A name only one side has ("Everest" / "Mount
  Everest") is detail, not a substitution.

It can only refuse: a refused candidate is a miss (the upstream answers), never a wrong
answer. What it costs in recall on true paraphrases is measured in docs/benchmarks.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, Protocol

from llm_pgcache.semantic.lexicon import (
    ANTONYMS,
    FUNCTION_WORDS,
    NAMED,
    NEGATIONS,
    NUMBER_WORDS,
    RELATIONAL,
    STOPWORDS,
)

Reason = Literal["number", "negation", "antonym", "order", "entity"]


class Guard(Protocol):
    """Decides, from the two texts alone, whether a candidate may answer a query."""

    def check(self, query: str, candidate: str) -> str | None:
        """Why `candidate` (a stored prompt) must not answer `query`; None: it may."""
        ...


_TOKEN = re.compile(r"[A-Za-z0-9]+(?:[-'.][A-Za-z0-9]+)*")
_QUOTED = re.compile(r"\"([^\"]+)\"|“([^”]+)”|'([^']{2,})'|`([^`]+)`")


def _stem(word: str) -> str:
    word = word.lower().removesuffix("'s")
    if word.endswith("ies") and len(word) > 4:
        return word[:-3] + "y"
    if word.endswith("s") and not word.endswith("ss") and len(word) > 3:
        return word[:-1]
    return word


class _Text:
    """One text, taken apart once."""

    __slots__ = ("content", "entities", "negated", "numbers", "quoted", "raw", "stems")

    def __init__(self, text: str) -> None:
        self.raw = text
        tokens = _TOKEN.findall(text.replace("n't", " not").replace("N'T", " NOT"))
        self.stems = [_stem(t) for t in tokens]
        self.negated = any(s.replace("'", "") in NEGATIONS for s in self.stems)
        self.numbers = {NUMBER_WORDS.get(s, s) for s in self.stems if _is_number(s)}
        self.content = [s for s in self.stems if s not in FUNCTION_WORDS and not _is_number(s)]
        self.entities = {
            _stem(token)
            for position, token in enumerate(tokens)
            if _is_entity(token, first=position == 0)
        }
        self.quoted = {
            next(group for group in match.groups() if group).strip().lower()
            for match in _QUOTED.finditer(text)
        }


def _is_number(stem: str) -> bool:
    return stem in NUMBER_WORDS or bool(re.fullmatch(r"\d+(?:[.,]\d+)*", stem))


def _is_entity(token: str, *, first: bool) -> bool:
    lower = token.lower()
    if lower in NAMED:
        return True
    if any(c.isdigit() for c in token) and any(c.isalpha() for c in token):
        return True  # "gpt-4o", "B2B", "v2"
    if any(c.isupper() for c in token[1:]) and not token.isupper():
        return True  # "iPhone", "PostgreSQL"
    return token[:1].isupper() and not first and lower not in STOPWORDS and len(token) > 1


def _relations(stems: list[str]) -> dict[str, list[str]]:
    """For each relational word, the content words that follow it (in order)."""
    found: dict[str, list[str]] = {}
    for i, stem in enumerate(stems):
        if stem in RELATIONAL:
            following = next(
                (s for s in stems[i + 1 :] if s not in FUNCTION_WORDS and not _is_number(s)),
                None,
            )
            if following is not None:
                found.setdefault(stem, []).append(following)
    return found


def _one_block_moved(a: list[str], b: list[str]) -> bool:
    """Whether `b` is `a` with at most one contiguous block moved elsewhere."""
    if a == b:
        return True
    n = len(a)
    for i in range(n):
        for j in range(i + 1, n + 1):
            block, rest = a[i:j], a[:i] + a[j:]
            for k in range(len(rest) + 1):
                if rest[:k] + block + rest[k:] == b:
                    return True
    return False


def _shared_order(a: _Text, b: _Text) -> tuple[list[str], list[str]]:
    """The content words both texts have once each, in each text's order."""
    once_a = {w for w in a.content if a.content.count(w) == 1}
    once_b = {w for w in b.content if b.content.count(w) == 1}
    shared = once_a & once_b
    return [w for w in a.content if w in shared], [w for w in b.content if w in shared]


class LookAlikeGuard:
    """Refuses look-alike candidates (see the module's docstring); stateless."""

    def check(self, query: str, candidate: str) -> Reason | None:
        """Why the `candidate` (a stored prompt) must not answer `query`; None: it may."""
        q, c = _Text(query), _Text(candidate)
        checks: tuple[tuple[Reason, bool], ...] = (
            # one number for another (a number only one side has may be detail)
            ("number", bool(q.numbers - c.numbers) and bool(c.numbers - q.numbers)),
            ("negation", q.negated != c.negated),
            ("antonym", _antonyms(q.stems, c.stems)),
            ("order", _swapped(q, c)),
            # one name for another (a name only one side has may be detail), or quotes
            (
                "entity",
                (_missing(q.entities, c.stems) and _missing(c.entities, q.stems))
                or q.quoted != c.quoted,
            ),
        )
        return next((reason for reason, differs in checks if differs), None)


def _antonyms(a: list[str], b: list[str]) -> bool:
    only_a, only_b = set(a) - set(b), set(b) - set(a)
    return any(ANTONYMS.get(word, frozenset()) & only_b for word in only_a)


def _swapped(q: _Text, c: _Text) -> bool:
    words_q, words_c = set(q.content), set(c.content)
    relations_q, relations_c = _relations(q.stems), _relations(c.stems)
    for word in relations_q.keys() & relations_c.keys():
        for after_q, after_c in zip(relations_q[word], relations_c[word], strict=False):
            if after_q != after_c and {after_q, after_c} <= words_q & words_c:
                return True
    order_q, order_c = _shared_order(q, c)
    return len(order_q) <= 12 and not _one_block_moved(order_q, order_c)


def _missing(entities: Iterable[str], stems: list[str]) -> bool:
    present = set(stems)
    return any(entity not in present for entity in entities)
