"""The ANN index and its searches, as values: which index a rebuild makes (`IndexSpec`),
what a rebuild recorded (`IndexBuild`), and one semantic lookup of a round
(`NearestQuery`, with its `SearchSettings`). `store` runs them; `reindex` and
`semantic.search` make them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # only in annotations: commands that read no vector never import numpy
    import numpy as np
    import numpy.typing as npt


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexSpec:
    """An ANN index over cosine distance: "ivfflat" with `lists` lists, or "hnsw" with
    `m` links per node and an `ef_construction` build-time candidate list."""

    method: str
    lists: int | None = None
    m: int | None = None
    ef_construction: int | None = None

    def describe(self) -> str:
        if self.method == "ivfflat":
            return f"ivfflat, lists {self.lists}"
        return f"hnsw, m {self.m}, ef_construction {self.ef_construction}"


@dataclass(frozen=True, slots=True, kw_only=True)
class IndexBuild:
    """One recorded rebuild of the ANN index."""

    spec: IndexSpec
    rows: int
    built_at: datetime


class SearchSettings(NamedTuple):
    """How a semantic query searches: a scope of at most `scan_rows` rows exactly, a
    larger one (or any, with `scan_rows` 0: known to be larger) with the ANN index, if
    it was built on data (`approximate`; ivfflat: `probes` lists first, at most
    `max_probes` while filters reject candidates; HNSW: a candidate list of
    `ef_search`), taking the `candidates` nearest rows before the threshold."""

    approximate: bool
    probes: int
    max_probes: int
    ef_search: int
    candidates: int
    scan_rows: int


class NearestQuery(NamedTuple):
    """One semantic lookup: the nearest row to `vector` among the live rows of
    (`namespace`, `scope_key`, `embedder`), if within `max_distance` (cosine). With an
    `exact_key`, that key's live row (or one expired less than `stale_grace` seconds
    ago) instead, if there is one: the exact lookup and the semantic one as one."""

    namespace: str
    scope_key: bytes
    embedder: str
    vector: npt.NDArray[np.float32]
    max_distance: float
    settings: SearchSettings
    exact_key: bytes | None = None
    stale_grace: float = 0.0
