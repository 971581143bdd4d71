"""The commands that measure semantic decisions on labelled pairs: `llm-pgcache eval`
(the cache's threshold, look-alike guard and judge, pair by pair or as a stream through
the cache) and `llm-pgcache tune-threshold` (a threshold from the similarities alone,
and labelled pairs loaded as judgments).
"""

from __future__ import annotations

import argparse
import json
import random
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from llm_pgcache.cache.facade import Cache
from llm_pgcache.config import Settings
from llm_pgcache.errors import EXIT_ERROR, EXIT_OK, InvalidInputError
from llm_pgcache.semantic.embedders import Embedder, named_embedder
from llm_pgcache.semantic.guard import LookAlikeGuard
from llm_pgcache.semantic.judges import CrossEncoderJudge, Judge, JudgeCase, LLMJudge
from llm_pgcache.semantic.search import SearchOptions
from llm_pgcache.semantic.tuning import (
    Pair,
    evaluate,
    quality,
    read_pairs,
    similarities,
    threshold_for_precision,
)


class LabelledJudge:
    """A judge that knows the labels of an eval's pairs and is right with probability
    `accuracy` (seeded): what a judge of that accuracy does to the cache's figures.

    It says yes when the stored text is the query itself or labelled as matching it."""

    def __init__(self, pairs: Sequence[Pair], accuracy: float, seed: int = 0) -> None:
        self.accuracy = accuracy
        self._matching = matching_texts(pairs)
        self._random = random.Random(seed)  # noqa: S311 - a simulation, not a secret

    async def judge(self, case: JudgeCase) -> bool:
        truth = answers(case.candidate, case.query, self._matching)
        return truth if self._random.random() < self.accuracy else not truth


def matching_texts(pairs: Sequence[Pair]) -> set[tuple[str, str]]:
    """The (a, b) pairs labelled as matching, both ways round, casefolded."""
    matching = {(p.a.casefold(), p.b.casefold()) for p in pairs if p.match}
    return matching | {(b, a) for a, b in matching}


def answers(stored: str, query: str, matching: set[tuple[str, str]]) -> bool:
    """Whether the answer stored for `stored` answers `query`, by the labels."""
    stored, query = stored.casefold(), query.casefold()
    return stored == query or (stored, query) in matching


def judge_named(spec: str | None, pairs: Sequence[Pair]) -> Judge | None:
    """The judge `--judge` names: "labels" or "labels:ACCURACY" (`LabelledJudge`),
    "llm:MODEL" (`LLMJudge` on the OpenAI-compatible server of OPENAI_BASE_URL), or
    "cross-encoder:PATH" (`CrossEncoderJudge`, the `local` extra)."""
    if spec is None:
        return None
    kind, _, arg = spec.partition(":")
    if kind == "labels":
        accuracy = float(arg) if arg else 1.0
        if not 0.0 <= accuracy <= 1.0:
            raise InvalidInputError(f"a judge's accuracy is between 0 and 1, got {arg}")
        return LabelledJudge(pairs, accuracy)
    if kind == "llm" and arg:
        from openai import AsyncOpenAI  # noqa: PLC0415 - only this judge needs it

        return LLMJudge(AsyncOpenAI(), model=arg)
    if kind == "cross-encoder" and arg:
        return CrossEncoderJudge(arg)
    raise InvalidInputError(
        f"--judge takes labels[:ACCURACY], llm:MODEL or cross-encoder:PATH, got {spec!r}"
    )


async def evaluate_pairs(args: argparse.Namespace, settings: Settings) -> int:
    """`llm-pgcache eval`."""
    pairs = read_pairs(args.pairs)[: args.limit]
    judge = judge_named(args.judge, pairs)
    # as the cache does: the guard on without a judge, off with one, unless told
    guard = LookAlikeGuard() if args.guard or (judge is None and not args.no_guard) else None
    if args.verify == "background" and (judge is None or not args.stream):
        raise InvalidInputError("--verify background needs --judge and --stream")
    bound = args.max_false_hit_rate
    evidence: list[dict[str, Any]] = []
    if args.stream:
        async with Cache.connect(args.dsn, strict=True) as probe:
            embedder = named_embedder(args.embedder, probe.embedding_dim)
        stream = Stream(
            embedder=embedder,
            threshold=args.threshold,
            guard=guard,
            judge=judge,
            verify=args.verify,
            bound=bound,
        )
        outcomes = await stream.outcomes(args.dsn, pairs)
        threshold = args.threshold
        evidence = stream.evidence
    else:
        embedder = named_embedder(args.embedder, settings.embedding_dim)
        threshold = args.threshold or getattr(embedder, "suggested_threshold", None) or 0.9
        outcomes = await pair_outcomes(embedder, pairs, threshold, guard, judge)
    kinds = sorted({p.kind for p in pairs})
    labelled = list(zip(outcomes, pairs, strict=True))
    report = {
        "embedder": embedder.name,
        "threshold": threshold,
        "guard": guard is not None,
        "judge": args.judge,
        "verify": args.verify if judge is not None else None,
        "max_false_hit_rate": bound,
        "mode": "stream" if args.stream else "pair",
        "all": asdict(quality(outcomes)),
        "by_kind": {
            kind: asdict(quality([o for o, p in labelled if p.kind == kind])) for kind in kinds
        }
        if len(kinds) > 1
        else {},
        "serve_threshold": evidence,
    }
    if args.json:
        print(json.dumps(report))
        return EXIT_OK
    print(
        f"{len(pairs)} pairs, embedder {embedder.name}, threshold "
        f"{threshold if threshold is not None else 'default'}, "
        f"{'guard' if guard else 'no guard'}, "
        f"{f'judge {args.judge} ({args.verify})' if judge else 'no judge'}, {report['mode']} mode"
    )
    for name, q in [("all", report["all"]), *report["by_kind"].items()]:
        print(f"  {name}: {q['lookups']} lookups ({q['matching']} should hit)")
        for key in ("false_hit_rate", "recall", "precision", "wrong_answer_rate"):
            rate, low, high = q[key]
            print(f"    {key.replace('_', ' '):<17} {rate:.3f}  [{low:.3f}, {high:.3f}]")
    if evidence:
        print(f"  serve threshold at the end: {evidence[-1]['summary']}")
    return EXIT_OK


async def pair_outcomes(
    embedder: Embedder,
    pairs: Sequence[Pair],
    threshold: float,
    guard: LookAlikeGuard | None,
    judge: Judge | None,
) -> list[tuple[bool, bool, bool]]:
    """Each pair alone: (should hit, served, served right): b is served a's answer when
    similar enough, the guard passes and the judge (if any) accepts."""
    scores = await similarities(embedder, pairs)
    outcomes = []
    for pair, score in zip(pairs, scores, strict=True):
        served = bool(score >= threshold) and (guard is None or guard.check(pair.b, pair.a) is None)
        if served and judge is not None:
            case = JudgeCase(
                query=pair.b,
                candidate=pair.a,
                response={"choices": [{"message": {"content": pair.a}}]},
                similarity=float(score),
                request={"messages": [{"role": "user", "content": pair.b}]},
            )
            served = await judge.judge(case)
        outcomes.append((pair.match, served, pair.match))  # its own pair: right if they match
    return outcomes


@dataclass
class Stream:
    """Stream mode: every pair's `a` stored in a scratch namespace (deleted after), every
    `b` looked up through a cache with these settings."""

    embedder: Embedder
    threshold: float | None
    guard: LookAlikeGuard | None
    judge: Judge | None = None
    verify: str = "inline"
    bound: float | None = None
    settle_every: int = 20  # background mode: lookups between waits for the verdicts
    evidence: list[dict[str, Any]] = field(default_factory=list)  # the serve threshold

    async def outcomes(
        self, dsn: str | None, pairs: Sequence[Pair]
    ) -> list[tuple[bool, bool, bool]]:
        """(should hit, served, served right) per pair. Served right: the stored text
        served is `b` itself or labelled as matching it (sets reuse sentences)."""
        matching = matching_texts(pairs)
        namespace = f"llm-pgcache-eval-{uuid.uuid4().hex[:12]}"
        options: dict[str, Any] = {"namespace": namespace, "embedder": self.embedder}
        options["search"] = SearchOptions(timeout=30.0)  # quality, not latency, is measured
        if self.judge is not None:
            options.update(judge=self.judge, verify=self.verify, judge_timeout=30.0)
        if self.bound is not None:
            options["max_false_hit_rate"] = self.bound
        async with Cache.connect(
            dsn,
            strict=True,
            guard=self.guard,
            similarity_threshold=self.threshold,
            lookup_timeout=30.0,
            **options,
        ) as cache:
            bounded = cache.max_false_hit_rate is not None
            try:
                for text in sorted({p.a for p in pairs}):
                    request = {"model": "eval", "messages": [{"role": "user", "content": text}]}
                    await cache.set(request, {"choices": [{"message": {"content": text}}]})
                outcomes = []
                for n, pair in enumerate(pairs):
                    if bounded and n % self.settle_every == 0:
                        await cache.drain()
                        threshold = await cache.refresh_serve_threshold()
                        self.evidence.append(
                            {"lookups": n, "summary": threshold.summary(), **asdict(threshold)}
                        )
                    request = {"model": "eval", "messages": [{"role": "user", "content": pair.b}]}
                    hit = await cache.get(request)
                    served = (
                        None if hit is None else hit.response["choices"][0]["message"]["content"]
                    )
                    right = served is not None and answers(served, pair.b, matching)
                    outcomes.append((pair.match, hit is not None, right))
                if bounded:
                    await cache.drain()
                    threshold = await cache.refresh_serve_threshold()
                    self.evidence.append(
                        {"lookups": len(pairs), "summary": threshold.summary(), **asdict(threshold)}
                    )
            finally:
                await cache.invalidate(namespace=namespace)
        return outcomes


async def tune(args: argparse.Namespace, settings: Settings) -> int:
    """`llm-pgcache tune-threshold`."""
    pairs = read_pairs(args.pairs)
    embedder = named_embedder(args.embedder, settings.embedding_dim)
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
    if args.load:
        async with Cache.connect(args.dsn, strict=True) as cache:
            loaded = await cache.record_judgments(
                zip((float(s) for s in scores), (p.match for p in pairs), strict=True),
                namespace=args.namespace,
                embedder=embedder.name,
            )
        print(f"recorded {loaded} judgments for {embedder.name} in namespace {args.namespace}")
    best = threshold_for_precision(rows, args.precision)
    if best is None:
        print(f"no threshold reaches precision {args.precision}")
        return EXIT_ERROR
    print(
        f"threshold for precision >= {args.precision}: {best.threshold:.2f} "
        f"(recall {best.recall:.3f}, false-hit rate {best.false_hit_rate:.3f})"
    )
    return EXIT_OK
