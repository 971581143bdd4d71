"""The false-hit bound: the lowest similarity at which a namespace's judged semantic
candidates say, with 95 % confidence, that serving them is wrong no more often than the
bound.

Given the judgments of one namespace and embedder (similarity, verdict), the serve
threshold is the lowest similarity t such that, among judged candidates with similarity
>= t, the one-sided 95 % Wilson upper bound of the false share is <= the bound. With too
little evidence no t qualifies, and nothing is served on similarity alone.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

Z_ONE_SIDED_95 = 1.6449  # the 95th percentile of the standard normal
DEFAULT_BOUND = 0.01  # the false-hit rate kept when none is named
MAX_JUDGMENTS = 100_000  # the most recent evidence read per namespace and embedder


def upper_bound(false: int, judged: int, z: float = Z_ONE_SIDED_95) -> float:
    """One-sided Wilson upper confidence bound of the rate false/judged (1.0 without
    evidence)."""
    if judged == 0:
        return 1.0
    p = false / judged
    centre = p + z * z / (2 * judged)
    half = z * math.sqrt(p * (1 - p) / judged + z * z / (4 * judged * judged))
    return min(1.0, (centre + half) / (1 + z * z / judged))


@dataclass(frozen=True, slots=True, kw_only=True)
class ServeThreshold:
    """A serve threshold and its evidence.

    Attributes:
        threshold: the lowest similarity served on similarity alone; None while no
            similarity has the evidence (nothing is served without a judge's verdict).
        judged: judged candidates at or above the threshold (all of them when None).
        false: how many of those were wrong.
        upper: the 95 % upper bound of their false-hit rate.
        bound: the false-hit rate the threshold keeps.
    """

    threshold: float | None
    judged: int
    false: int
    upper: float
    bound: float

    def serves(self, similarity: float) -> bool:
        return self.threshold is not None and similarity >= self.threshold

    def summary(self) -> str:
        rate = f"{self.false}/{self.judged} judged wrong, 95 % upper bound {self.upper:.2%}"
        if self.threshold is None:
            return f"none yet (bound {self.bound:.1%}; {rate})"
        return f"{self.threshold:.4f} (bound {self.bound:.1%}; {rate})"


def serve_threshold(
    judgments: Iterable[tuple[float, bool]], *, bound: float, floor: float
) -> ServeThreshold:
    """The serve threshold of `judgments` (similarity, verdict; any order) for `bound`,
    never below `floor` (candidates under it are never served)."""
    ranked = sorted((j for j in judgments if j[0] >= floor), key=lambda j: -j[0])
    best: ServeThreshold | None = None
    judged = false = 0
    for i, (similarity, verdict) in enumerate(ranked):
        judged += 1
        false += not verdict
        if i + 1 < len(ranked) and ranked[i + 1][0] == similarity:
            continue  # a threshold takes every candidate of its similarity
        upper = upper_bound(false, judged)
        if upper <= bound:
            best = ServeThreshold(
                threshold=similarity, judged=judged, false=false, upper=upper, bound=bound
            )
    if best is not None:
        return best
    return ServeThreshold(
        threshold=None, judged=judged, false=false, upper=upper_bound(false, judged), bound=bound
    )
