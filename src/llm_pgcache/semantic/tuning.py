"""Choosing a similarity threshold from labelled pairs (`llm-pgcache tune-threshold`), and
measuring the cache's semantic decisions on them (`llm-pgcache eval`).

Each pair is two user turns and whether one may be answered with the other's answer.
A threshold t serves a hit for a pair when cosine(a, b) >= t: a served non-match is a
false hit (a wrong answer shown to a user), a refused match a lost saving.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from llm_pgcache.errors import InvalidInputError
from llm_pgcache.semantic.embedders import Embedder
from llm_pgcache.semantic.vectors import check_vectors


@dataclass(frozen=True, slots=True, kw_only=True)
class Pair:
    a: str
    b: str
    match: bool
    kind: str = "all"


@dataclass(frozen=True, slots=True, kw_only=True)
class ThresholdRow:
    """Quality of one threshold over the pairs."""

    threshold: float
    precision: float
    recall: float
    f1: float
    false_hit_rate: float  # of the non-matching pairs, the share served as hits


def read_pairs(path: Path) -> list[Pair]:
    """Pairs from a JSONL file of {"a": str, "b": str, "match": bool} lines, or of
    {"text_a", "text_b", "label": 0 | 1, "kind"} lines (the team's labelled sets)."""
    pairs = []
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInputError(f"cannot read {path}: {exc}") from exc
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            if "text_a" in item:
                label = item["label"]  # 0 or 1; anything else fails the check below
                match = label == 1 if label in (0, 1) and not isinstance(label, bool) else label
                item = {**item, "a": item["text_a"], "b": item["text_b"], "match": match}
            pair = Pair(
                a=item["a"], b=item["b"], match=item["match"], kind=str(item.get("kind", "all"))
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInputError(f"{path}:{number}: not a pair line: {exc}") from exc
        if (
            not isinstance(pair.a, str)
            or not isinstance(pair.b, str)
            or not isinstance(pair.match, bool)
        ):
            raise InvalidInputError(f"{path}:{number}: a and b must be text, match a boolean")
        pairs.append(pair)
    if not any(p.match for p in pairs) or all(p.match for p in pairs):
        raise InvalidInputError(f"{path}: needs both matching and non-matching pairs")
    return pairs


async def similarities(embedder: Embedder, pairs: Sequence[Pair]) -> np.ndarray:
    """Cosine similarity of each pair under `embedder`."""
    texts = [p.a for p in pairs] + [p.b for p in pairs]
    vectors = check_vectors(await embedder.embed(texts), count=len(texts), dim=embedder.dim)
    vectors = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    a, b = vectors[: len(pairs)], vectors[len(pairs) :]
    result: np.ndarray = np.einsum("ij,ij->i", a, b)
    return result


def evaluate(
    scores: np.ndarray, matches: Sequence[bool], thresholds: Iterable[float]
) -> list[ThresholdRow]:
    """Precision, recall, F1 and false-hit rate at each threshold."""
    truth = np.asarray(matches, dtype=bool)
    rows = []
    for threshold in thresholds:
        served = scores >= threshold
        true_hits = int((served & truth).sum())
        false_hits = int((served & ~truth).sum())
        precision = true_hits / (true_hits + false_hits) if true_hits + false_hits else 1.0
        recall = true_hits / int(truth.sum())
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        rows.append(
            ThresholdRow(
                threshold=round(float(threshold), 4),
                precision=precision,
                recall=recall,
                f1=f1,
                false_hit_rate=false_hits / int((~truth).sum()),
            )
        )
    return rows


def threshold_for_precision(rows: Sequence[ThresholdRow], precision: float) -> ThresholdRow | None:
    """The lowest threshold at which it, and every higher one, reaches `precision`."""
    best = None
    for row in sorted(rows, key=lambda r: r.threshold, reverse=True):
        if row.precision < precision:
            break
        best = row
    return best


def wilson(k: int, n: int) -> tuple[float, float, float]:
    """The rate k/n with its 95 % Wilson score interval (nan without trials)."""
    if n == 0:
        return (math.nan, math.nan, math.nan)
    z, p = 1.96, k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (p, max(0.0, centre - half), min(1.0, centre + half))


@dataclass(frozen=True, slots=True, kw_only=True)
class Quality:
    """What a cache did on labelled lookups: each rate with its 95 % interval.

    Attributes:
        false_hit_rate: of the lookups that must not be served, the share served.
        recall: of the lookups that should be served (their own pair), the share that was.
        precision: of the lookups served, the share served the right entry.
    """

    lookups: int
    matching: int
    wrong_answer_rate: tuple[float, float, float]  # of all lookups, the share served wrong
    false_hit_rate: tuple[float, float, float]
    recall: tuple[float, float, float]
    precision: tuple[float, float, float]


def quality(outcomes: Sequence[tuple[bool, bool, bool]]) -> Quality:
    """`outcomes`: per lookup (should it hit its pair, was it served, was what it was
    served right). A lookup that must not hit its pair and was served something right
    (another stored text equivalent to it) is not a false hit."""
    should = [o for o in outcomes if o[0]]
    must_not = [o for o in outcomes if not o[0]]
    served = [o for o in outcomes if o[1]]
    wrong = sum(1 for o in outcomes if o[1] and not o[2])
    return Quality(
        lookups=len(outcomes),
        matching=len(should),
        wrong_answer_rate=wilson(wrong, len(outcomes)),
        false_hit_rate=wilson(sum(1 for o in must_not if o[1] and not o[2]), len(must_not)),
        recall=wilson(sum(1 for o in should if o[1] and o[2]), len(should)),
        precision=wilson(len(served) - wrong, len(served)),
    )
