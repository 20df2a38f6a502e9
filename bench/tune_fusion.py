"""Tune how lexical and semantic results are fused, offline, on a labelled set.

Collects each query's candidate lists once (semantic top-N cosine, lexical top-N score,
whether a query word is the exact name of a symbol), marks which candidates hit a
relevant span, then scores fusion variants on those lists without touching the database
again. Tune on one set, report on another (bench/data/README.md says which is which).

    CODEQUARRY_HOME=... python bench/tune_fusion.py QRELS.jsonl --project P [--cache F]
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from codequarry.chunking.words import identifier_like
from codequarry.config import load_settings
from codequarry.evaluation import Query, load_qrels
from codequarry.runtime import open_runtime
from codequarry.search import lexical_weight
from codequarry.store.project import Filters

FETCH = 50
Candidates = dict[str, Any]


async def collect(qrels: Path, project: str) -> list[Candidates]:
    queries = load_qrels(qrels)
    settings = load_settings()
    out = []
    async with open_runtime(settings) as runtime:
        await runtime.embedder.start()
        searcher, model = runtime.searcher, runtime.embedder.model_id
        store = await runtime.store.project(project)
        for query in queries:
            notes: list[str] = []
            semantic = await searcher._semantic(query.text, [store], Filters(), FETCH, model, notes)
            lexical = await searcher._lexical(query.text, [store], Filters(), FETCH)
            symbols = await searcher._symbol_hits(query.text, [store])
            ids = {r.chunk_id for r in semantic} | {r.chunk_id for r in lexical}
            rows = await store.chunk_rows(sorted(ids))
            relevant = [
                i for i in ids if _hits(query, rows[i].path, rows[i].chunk.start_line, rows[i].chunk.end_line)
            ]
            out.append(
                {
                    "query": query.text,
                    "semantic": [(r.chunk_id, r.score) for r in semantic],
                    "lexical": [(r.chunk_id, r.score) for r in lexical],
                    "symbol_hit": bool(symbols),
                    "relevant": relevant,
                    "files": {i: rows[i].path for i in ids},
                }
            )
    return out


def _hits(query: Query, path: str, start: int, end: int) -> bool:
    return any(s.path == path and start <= s.end_line and end >= s.start_line for s in query.relevant)


def mrr(cases: list[Candidates], fuse: Callable[[Candidates], list[int]]) -> float:
    total = 0.0
    for case in cases:
        ranked = fuse(case)[:10]
        relevant = set(case["relevant"])
        total += next((1.0 / rank for rank, i in enumerate(ranked, 1) if i in relevant), 0.0)
    return total / len(cases)


def minmax(pairs: list[list[float]]) -> dict[int, float]:
    if not pairs:
        return {}
    top, bottom = pairs[0][1], pairs[-1][1]
    spread = top - bottom
    return {int(i): (s - bottom) / spread if spread > 0 else 1.0 for i, s in pairs}


def convex(weight_of: Callable[[Candidates], float]) -> Callable[[Candidates], list[int]]:
    def fuse(case: Candidates) -> list[int]:
        w = weight_of(case)
        scores: dict[int, float] = {}
        for weight, part in ((w, minmax(case["lexical"])), (1.0, minmax(case["semantic"]))):
            for i, s in part.items():
                scores[i] = scores.get(i, 0.0) + weight * s
        return sorted(scores, key=lambda i: -scores[i])

    return fuse


def rrf(weight_of: Callable[[Candidates], float], k: int) -> Callable[[Candidates], list[int]]:
    def fuse(case: Candidates) -> list[int]:
        w = weight_of(case)
        scores: dict[int, float] = {}
        for weight, part in ((w, case["lexical"]), (1.0, case["semantic"])):
            for rank, (i, _) in enumerate(part, 1):
                scores[int(i)] = scores.get(int(i), 0.0) + weight / (k + rank)
        return sorted(scores, key=lambda i: -scores[i])

    return fuse


def adaptive(english: float, code: float, single: float) -> Callable[[Candidates], float]:
    def weight(case: Candidates) -> float:
        tokens = case["query"].split()
        if case["symbol_hit"] or any(identifier_like(t) for t in tokens):
            return single if len(tokens) == 1 else code
        return english

    return weight


def strict(english: float, code: float, single: float) -> Callable[[Candidates], float]:
    """Like `adaptive`, but an English word that happens to name a symbol ("parse") only
    counts as code evidence in a one-word query."""
    def weight(case: Candidates) -> float:
        tokens = case["query"].split()
        if len(tokens) == 1 and (case["symbol_hit"] or identifier_like(tokens[0])):
            return single
        return code if any(identifier_like(t) for t in tokens) else english
    return weight


def report(cases: list[Candidates]) -> dict[str, float]:
    rows: dict[str, float] = {
        "semantic only": mrr(cases, lambda c: [int(i) for i, _ in c["semantic"]]),
        "lexical only": mrr(cases, lambda c: [int(i) for i, _ in c["lexical"]]),
        "shipped (search.lexical_weight)": mrr(
            cases, convex(lambda c: lexical_weight(c["query"], c["symbol_hit"]))
        ),
        "plain RRF k=60": mrr(cases, rrf(lambda c: 1.0, 60)),
    }
    for english, code in itertools.product((0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8, 1.0),
                                          (0.3, 0.6, 1.0, 1.5)):
        rows[f"convex english={english} code={code}"] = mrr(cases, convex(adaptive(english, code, 2.0)))
    for english, code in itertools.product((0.3, 0.5, 0.8), (0.6, 1.0)):
        rows[f"strict english={english} code={code}"] = mrr(cases, convex(strict(english, code, 2.0)))
    for k, english in itertools.product((10, 60), (0.1, 0.3, 0.5)):
        rows[f"rrf k={k} english={english}"] = mrr(cases, rrf(adaptive(english, 1.0, 2.0), k))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("qrels", type=Path)
    parser.add_argument("--project", required=True)
    parser.add_argument("--cache", type=Path, help="reuse or write collected candidates here")
    args = parser.parse_args()
    if args.cache and args.cache.exists():
        cases = json.loads(args.cache.read_text())
    else:
        cases = anyio.run(collect, args.qrels, args.project)
        if args.cache:
            args.cache.write_text(json.dumps(cases))
    rows = report(cases)
    best = max(rows.values())
    for name, value in sorted(rows.items(), key=lambda kv: -kv[1]):
        mark = " <- best" if math.isclose(value, best) else ""
        print(f"{value:.4f}  {name}{mark}")
    print(f"{len(cases)} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
