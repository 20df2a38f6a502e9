"""Tune how lexical and semantic results are fused, offline, on the tuning sets.

Collects each query's candidate lists once (semantic top-N cosine, lexical top-N score,
whether a query word is the exact name of a symbol), marks which candidates hit a
relevant span, then scores fusion variants on those lists without touching the database
again. Tune on the `*-tune` sets only (bench/data/README.md says which is which); the
candidates come from the `eval` home that bench/eval_bench.py indexes.

    python bench/tune_fusion.py [--sets asked-python-tune ...] [--cache DIR]

Prints, per variant, the pooled MRR@10 over all chosen sets, its 95% bootstrap interval,
the MRR@10 of each set, and the smallest margin of the variant over the better single
mode of a set (it must stay >= 0: hybrid never below its better half).
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
from codequarry.evaluation import Query, bootstrap_interval, load_qrels
from codequarry.logs import configure_logging
from codequarry.runtime import open_runtime
from codequarry.search import _Ranked, agreement, code_like, fuse, lexical_weight
from codequarry.store.project import Filters
from common import codequarry_home
from eval_bench import DATA, all_sets, project_of

FETCH = 30  # as search.py fetches for the default limit of 10: max(limit * 3, 30)
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


def reciprocal_ranks(cases: list[Candidates], fuse: Callable[[Candidates], list[int]]) -> list[float]:
    out = []
    for case in cases:
        ranked = fuse(case)[:10]
        relevant = set(case["relevant"])
        out.append(next((1.0 / rank for rank, i in enumerate(ranked, 1) if i in relevant), 0.0))
    return out


def mrr(cases: list[Candidates], fuse: Callable[[Candidates], list[int]]) -> float:
    return sum(reciprocal_ranks(cases, fuse)) / len(cases)


def shared(case: Candidates) -> int:
    return agreement([_Ranked("p", int(i), s) for i, s in case["lexical"]],
                     [_Ranked("p", int(i), s) for i, s in case["semantic"]])


def honest(english: float, code: float, single: float, disagree: float,
           symbol_counts: bool = False) -> Callable[[Candidates], float]:
    """The shipped rule's shape (search.lexical_weight) with free parameters."""
    def weight(case: Candidates) -> float:
        tokens = case["query"].split()
        is_code = any(code_like(t) for t in tokens) or (symbol_counts and case["symbol_hit"])
        if len(tokens) == 1 and (is_code or case["symbol_hit"]):
            return single
        if is_code:
            return code
        return english * (disagree if shared(case) == 0 else 1.0)
    return weight


def minmax(pairs: list[list[float]]) -> dict[int, float]:
    if not pairs:
        return {}
    top, bottom = pairs[0][1], pairs[-1][1]
    spread = top - bottom
    return {int(i): (s - bottom) / spread if spread > 0 else 1.0 for i, s in pairs}


def zscore(pairs: list[list[float]]) -> dict[int, float]:
    if not pairs:
        return {}
    values = [s for _, s in pairs]
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    return {int(i): (s - mean) / spread if spread > 0 else 0.0 for i, s in pairs}


def topnorm(pairs: list[list[float]]) -> dict[int, float]:
    """Lexical scores over their top (0 stays 0): a weak best match stays weak."""
    if not pairs:
        return {}
    top = pairs[0][1]
    return {int(i): s / top if top > 0 else 0.0 for i, s in pairs}


def convex(weight_of: Callable[[Candidates], float], norm_lexical: Any = None,
           norm_semantic: Any = None) -> Callable[[Candidates], list[int]]:
    lex_norm, sem_norm = norm_lexical or minmax, norm_semantic or minmax

    def fuse(case: Candidates) -> list[int]:
        w = weight_of(case)
        scores: dict[int, float] = {}
        missing = {"lex": min(lex_norm(case["lexical"]).values(), default=0.0),
                   "sem": min(sem_norm(case["semantic"]).values(), default=0.0)}
        if lex_norm is minmax and sem_norm is minmax:
            missing = {"lex": 0.0, "sem": 0.0}
        for key, weight, part in (("lex", w, lex_norm(case["lexical"])),
                                  ("sem", 1.0, sem_norm(case["semantic"]))):
            for i, s in part.items():
                scores[i] = scores.get(i, 0.0) + weight * (s - missing[key])
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


Fuse = Callable[[Candidates], list[int]]


def shipped(case: Candidates) -> list[int]:
    lexical = [_Ranked("p", int(i), s) for i, s in case["lexical"]]
    semantic = [_Ranked("p", int(i), s) for i, s in case["semantic"]]
    weight = lexical_weight(case["query"], case["symbol_hit"], agreement(lexical, semantic))
    return [r.chunk_id for r in fuse(lexical, semantic, weight)]


def variants() -> dict[str, Fuse]:
    rows: dict[str, Fuse] = {
        "semantic only": lambda c: [int(i) for i, _ in c["semantic"]],
        "lexical only": lambda c: [int(i) for i, _ in c["lexical"]],
        "shipped (search.fuse, search.lexical_weight)": shipped,
        "before issue 14 (english 0.8, code 0.6, symbol hit = code)": convex(adaptive(0.8, 0.6, 2.0)),
        "plain RRF k=60": rrf(lambda c: 1.0, 60),
    }
    for english, code, disagree in itertools.product((0.2, 0.4, 0.6, 0.7, 0.8, 0.9, 1.0, 1.2),
                                                     (0.4, 0.6, 1.0), (1.0, 0.5, 0.25, 0.0)):
        rows[f"honest english={english} code={code} disagree={disagree}"] = convex(
            honest(english, code, 2.0, disagree))
    for english in (0.2, 0.3, 0.4):
        rows[f"honest english={english} code=0.6 disagree=0.5 symbol-hit=code"] = convex(
            honest(english, 0.6, 2.0, 0.5, symbol_counts=True))
    for english, code, disagree in itertools.product((0.5, 0.6, 0.7, 0.8, 1.0), (0.6, 1.0), (1.0, 0.5, 0.25)):
        rows[f"zscore english={english} code={code} disagree={disagree}"] = convex(
            honest(english, code, 2.0, disagree), zscore, zscore)
    for english, code in itertools.product((0.2, 0.3, 0.5, 0.8, 1.0), (0.6, 1.0)):
        rows[f"lexical/top english={english} code={code}"] = convex(honest(english, code, 2.0, 1.0), topnorm)
    for k, english in itertools.product((10, 60), (0.1, 0.3, 0.5, 0.8, 1.0)):
        rows[f"rrf k={k} english={english}"] = rrf(adaptive(english, 1.0, 2.0), k)
    return rows


def report(sets: dict[str, list[Candidates]]) -> list[dict[str, Any]]:
    rows = []
    singles = {name: max(mrr(cases, lambda c: [int(i) for i, _ in c["semantic"]]),
                         mrr(cases, lambda c: [int(i) for i, _ in c["lexical"]]))
               for name, cases in sets.items()}
    for label, fused in variants().items():
        pooled: list[float] = []
        per_set = {}
        for name, cases in sets.items():
            rr = reciprocal_ranks(cases, fused)
            per_set[name] = sum(rr) / len(rr)
            pooled += rr
        rows.append({"variant": label, "mrr@10": sum(pooled) / len(pooled),
                     "macro": sum(per_set.values()) / len(per_set),
                     "ci": bootstrap_interval(pooled), "sets": per_set,
                     "worst_margin": min(per_set[n] - singles[n] for n in sets)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tune = [name for name in all_sets() if name.endswith("-tune")]
    parser.add_argument("--sets", nargs="+", choices=tune, default=tune)
    parser.add_argument("--home", default="eval")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cq-bench/fusion-cache"),
                        help="collected candidates per set are kept here (delete to collect again)")
    parser.add_argument("--top", type=int, default=25, help="variants printed (default 25)")
    args = parser.parse_args()
    configure_logging("warning")
    args.cache.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[Candidates]] = {}
    with codequarry_home(args.home, fresh=False):
        for name in args.sets:
            cached = args.cache / f"{name}.json"
            if cached.exists():
                sets[name] = json.loads(cached.read_text())
            else:
                sets[name] = anyio.run(collect, DATA / f"{name}.jsonl", project_of(name))
                cached.write_text(json.dumps(sets[name]))
    rows = sorted(report(sets), key=lambda r: -r["macro"])
    names = list(sets)
    print("MRR@10 mean of sets | pooled [95% CI] | " + " | ".join(names)
          + " | worst margin over best half | variant")
    fixed = {"semantic only", "lexical only", "shipped (search.fuse, search.lexical_weight)",
             "before issue 14 (english 0.8, code 0.6, symbol hit = code)"}
    for rank, row in enumerate(rows):
        if rank < args.top or row["variant"] in fixed:
            per_set = " | ".join(f"{row['sets'][n]:.3f}" for n in names)
            best = " <- best" if math.isclose(row["macro"], rows[0]["macro"]) else ""
            low, high = row["ci"]
            print(f"{row['macro']:.4f} | {row['mrr@10']:.4f} [{low:.3f},{high:.3f}] | {per_set} | "
                  f"{row['worst_margin']:+.3f} | {row['variant']}{best}")
    print(f"{sum(len(c) for c in sets.values())} queries", file=sys.stderr)


if __name__ == "__main__":
    main()
