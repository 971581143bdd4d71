"""The look-alike guard on labelled pairs: how often a plain cosine threshold serves a pair
that must not share an answer (false hits), how often it serves a true paraphrase
(recall), and both with the guard, each with a 95 % Wilson interval, per set and per kind.

    python benchmarks/lookalike.py                 # HashingEmbedder, and all-MiniLM-L6-v2
                                                   # when the local extra is installed

Sets: ../shared/data/paraphrases/ (SICK, MRPC train; the team's, read in place, never
copied) and benchmarks/data/lookalike_pairs.jsonl (ours: look-alikes written for the
README, developed with the guard, so its figures flatter it). Pair mode: each pair
alone, served when cosine >= the threshold (the embedder's default) and, with the guard,
when the guard passes it. Writes docs/benchmarks/lookalike.json.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections import defaultdict
from pathlib import Path

import numpy as np

from llm_pgcache import HashingEmbedder
from llm_pgcache.semantic.embedders import Embedder, bundled_local_model
from llm_pgcache.semantic.guard import LookAlikeGuard
from llm_pgcache.semantic.tuning import wilson

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "paraphrases"
SETS = {
    "sick": SHARED / "sick_pairs.jsonl",
    "mrpc_train": SHARED / "mrpc_train_pairs.jsonl",
    "lookalike (ours)": ROOT / "benchmarks" / "data" / "lookalike_pairs.jsonl",
}
OUT = ROOT / "docs" / "benchmarks" / "lookalike.json"


async def similarities(embedder: Embedder, pairs: list[dict[str, object]]) -> np.ndarray:
    a, b = [str(p["text_a"]) for p in pairs], [str(p["text_b"]) for p in pairs]
    vectors = []
    for start in range(0, len(a + b), 256):
        vectors.append(await embedder.embed((a + b)[start : start + 256]))
    v = np.concatenate(vectors)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sims: np.ndarray = np.einsum("ij,ij->i", v[: len(a)], v[len(a) :])
    return sims


def rates(served: list[bool], labels: list[int]) -> dict[str, list[float]]:
    negatives = [s for s, label in zip(served, labels, strict=True) if label == 0]
    positives = [s for s, label in zip(served, labels, strict=True) if label == 1]
    return {
        "false_hit_rate": list(wilson(sum(negatives), len(negatives))),
        "recall": list(wilson(sum(positives), len(positives))),
        "negatives": [len(negatives)],
        "positives": [len(positives)],
    }


async def evaluate(embedder: Embedder, threshold: float) -> dict[str, object]:
    guard = LookAlikeGuard()
    report: dict[str, object] = {"embedder": embedder.name, "threshold": threshold}
    for name, path in SETS.items():
        if not path.exists():
            continue
        pairs = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        sims = await similarities(embedder, pairs)
        labels = [int(p["label"]) for p in pairs]
        plain = [bool(s >= threshold) for s in sims]
        verdicts = [guard.check(str(p["text_a"]), str(p["text_b"])) for p in pairs]
        guarded = [ok and v is None for ok, v in zip(plain, verdicts, strict=True)]
        by_kind: dict[str, list[int]] = defaultdict(list)
        for i, p in enumerate(pairs):
            by_kind[str(p.get("kind", "all"))].append(i)
        refused: dict[str, int] = defaultdict(int)
        for ok, v in zip(plain, verdicts, strict=True):
            if ok and v is not None:
                refused[v] += 1
        report[name] = {
            "pairs": len(pairs),
            "plain": rates(plain, labels),
            "guard": rates(guarded, labels),
            "refused_by_reason": dict(refused),
            "by_kind": {
                kind: {
                    "pairs": len(idx),
                    "plain_served": sum(plain[i] for i in idx) / len(idx),
                    "guard_served": sum(guarded[i] for i in idx) / len(idx),
                }
                for kind, idx in sorted(by_kind.items())
            },
        }
    return report


async def main() -> None:
    reports = [await evaluate(HashingEmbedder(384), 0.9)]
    model = bundled_local_model()
    if model is not None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from llm_pgcache import SentenceTransformerEmbedder  # noqa: PLC0415 - optional

        local = SentenceTransformerEmbedder(model, device="cpu", batch_size=64)
        reports.append(await evaluate(local, local.suggested_threshold))
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(reports, indent=2) + "\n")
    for report in reports:
        print(f"\n{report['embedder']} at {report['threshold']}")
        for name in SETS:
            r = report.get(name)
            if not isinstance(r, dict):
                continue
            for mode in ("plain", "guard"):
                f, rc = r[mode]["false_hit_rate"], r[mode]["recall"]
                print(
                    f"  {name:<18} {mode:<6} false hits {f[0]:.3f} [{f[1]:.3f}, {f[2]:.3f}]"
                    f" of {r[mode]['negatives'][0]}, recall {rc[0]:.3f} [{rc[1]:.3f}, "
                    f"{rc[2]:.3f}] of {r[mode]['positives'][0]}"
                )
            print(f"  {'':<18} refused by the guard: {r['refused_by_reason']}")


if __name__ == "__main__":
    asyncio.run(main())
