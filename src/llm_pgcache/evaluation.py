"""The commands that measure semantic decisions on labelled pairs: `llm-pgcache eval`
(the cache's threshold and look-alike guard, pair by pair or as a stream through the
cache) and `llm-pgcache tune-threshold` (a threshold from the similarities alone).
"""

from __future__ import annotations

import argparse
import json
import uuid
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from llm_pgcache.cache.facade import Cache
from llm_pgcache.config import Settings
from llm_pgcache.errors import EXIT_ERROR, EXIT_OK
from llm_pgcache.semantic.embedders import Embedder, default_embedder
from llm_pgcache.semantic.guard import LookAlikeGuard
from llm_pgcache.semantic.search import SearchOptions
from llm_pgcache.semantic.tuning import (
    Pair,
    evaluate,
    quality,
    read_pairs,
    similarities,
    threshold_for_precision,
)


def add_commands(command: Callable[[str, str], argparse.ArgumentParser]) -> None:
    """The `eval` and `tune-threshold` subcommands, made with the CLI's `command`."""
    eval_cmd = command(
        "eval",
        "Measure the cache's semantic decisions (threshold and look-alike guard) on "
        "labelled pairs: false hits, recall and precision with 95-percent intervals, per kind.",
    )
    eval_cmd.add_argument(
        "pairs",
        type=Path,
        help='JSONL of {"a", "b", "match"} or {"text_a", "text_b", "label", "kind"} lines',
    )
    eval_cmd.add_argument(
        "--threshold", type=float, help="similarity threshold (default: the embedder's)"
    )
    eval_cmd.add_argument("--no-guard", action="store_true", help="the threshold alone")
    eval_cmd.add_argument(
        "--stream",
        action="store_true",
        help="store every a in a scratch namespace and look every b up through the cache "
        "(a wrong neighbour can win), instead of each pair alone",
    )
    eval_cmd.add_argument("--json", action="store_true", help="print one JSON object")

    tune_cmd = command(
        "tune-threshold",
        "Print precision, recall, F1 and false-hit rate per similarity threshold for "
        "labelled pairs, embedded with the configured embedder.",
    )
    tune_cmd.add_argument(
        "pairs", type=Path, help='JSONL file of {"a": text, "b": text, "match": bool} lines'
    )
    tune_cmd.add_argument(
        "--precision",
        type=float,
        default=0.95,
        help="report the lowest threshold reaching this precision (default: 0.95)",
    )


async def evaluate_pairs(args: argparse.Namespace, settings: Settings) -> int:
    """`llm-pgcache eval`."""
    pairs = read_pairs(args.pairs)
    guard = None if args.no_guard else LookAlikeGuard()
    if args.stream:
        async with Cache.connect(args.dsn, strict=True) as probe:
            embedder = default_embedder(probe.embedding_dim)
        outcomes = await stream_outcomes(args.dsn, embedder, pairs, args.threshold, guard)
        threshold = args.threshold
    else:
        embedder = default_embedder(settings.embedding_dim)
        threshold = args.threshold or getattr(embedder, "suggested_threshold", None) or 0.9
        scores = await similarities(embedder, pairs)
        outcomes = [
            (
                p.match,
                bool(s >= threshold) and (guard is None or guard.check(p.b, p.a) is None),
                p.match,  # served its own pair: right when they match
            )
            for p, s in zip(pairs, scores, strict=True)
        ]
    kinds = sorted({p.kind for p in pairs})
    labelled = list(zip(outcomes, pairs, strict=True))
    report = {
        "embedder": embedder.name,
        "threshold": threshold,
        "guard": guard is not None,
        "mode": "stream" if args.stream else "pair",
        "all": asdict(quality(outcomes)),
        "by_kind": {
            kind: asdict(quality([o for o, p in labelled if p.kind == kind])) for kind in kinds
        }
        if len(kinds) > 1
        else {},
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(
        f"{len(pairs)} pairs, embedder {embedder.name}, threshold "
        f"{threshold if threshold is not None else 'default'}, "
        f"{'guard' if guard else 'no guard'}, {report['mode']} mode"
    )
    for name, q in [("all", report["all"]), *report["by_kind"].items()]:
        print(f"  {name}: {q['lookups']} lookups ({q['matching']} should hit)")
        for key in ("false_hit_rate", "recall", "precision", "wrong_answer_rate"):
            rate, low, high = q[key]
            print(f"    {key.replace('_', ' '):<17} {rate:.3f}  [{low:.3f}, {high:.3f}]")
    return EXIT_OK


async def stream_outcomes(
    dsn: str | None,
    embedder: Embedder,
    pairs: list[Pair],
    threshold: float | None,
    guard: LookAlikeGuard | None,
) -> list[tuple[bool, bool, bool]]:
    """Every pair's `a` stored in a scratch namespace (deleted after), every `b` looked up
    through the cache: (should hit, served, served right). Served right: its own pair's
    `a` when they match, or a stored text the set labels as matching `b`, or `b` itself
    (sets reuse sentences across pairs)."""
    matching = {(p.a.casefold(), p.b.casefold()) for p in pairs if p.match}
    matching |= {(b, a) for a, b in matching}
    namespace = f"llm-pgcache-eval-{uuid.uuid4().hex[:12]}"
    options: dict[str, Any] = {"namespace": namespace, "embedder": embedder, "strict": True}
    options["search"] = SearchOptions(timeout=30.0)  # quality, not latency, is measured
    async with Cache.connect(
        dsn, guard=guard, similarity_threshold=threshold, lookup_timeout=30.0, **options
    ) as cache:
        try:
            texts = sorted({p.a for p in pairs})
            for text in texts:
                request = {"model": "eval", "messages": [{"role": "user", "content": text}]}
                await cache.set(request, {"choices": [{"message": {"content": text}}]})
            outcomes = []
            for pair in pairs:
                request = {"model": "eval", "messages": [{"role": "user", "content": pair.b}]}
                hit = await cache.get(request)
                served = None if hit is None else hit.response["choices"][0]["message"]["content"]
                right = served is not None and (
                    served.casefold() == pair.b.casefold()
                    or (served.casefold(), pair.b.casefold()) in matching
                )
                outcomes.append((pair.match, hit is not None, right))
        finally:
            await cache.invalidate(namespace=namespace)
    return outcomes


async def tune(args: argparse.Namespace, settings: Settings) -> int:
    """`llm-pgcache tune-threshold`."""
    pairs = read_pairs(args.pairs)
    embedder = default_embedder(settings.embedding_dim)
    scores = await similarities(embedder, pairs)
    rows = evaluate(scores, [p.match for p in pairs], [t / 100 for t in range(50, 100)])
    matching = sum(p.match for p in pairs)
    print(f"{len(pairs)} pairs ({matching} matching), embedder {embedder.name}")
    print(f"{'threshold':>9} {'precision':>9} {'recall':>7} {'f1':>6} {'false hits':>10}")
    for row in rows:
        print(
            f"{row.threshold:>9.2f} {row.precision:>9.3f} {row.recall:>7.3f} {row.f1:>6.3f} "
            f"{row.false_hit_rate:>10.3f}"
        )
    best = threshold_for_precision(rows, args.precision)
    if best is None:
        print(f"no threshold reaches precision {args.precision}")
        return EXIT_ERROR
    print(
        f"threshold for precision >= {args.precision}: {best.threshold:.2f} "
        f"(recall {best.recall:.3f}, false-hit rate {best.false_hit_rate:.3f})"
    )
    return EXIT_OK
