"""Tune how lexical and semantic results are fused, offline, on the tuning sets.

Collects each query's candidate lists once, as a hybrid search fetches them (the top
CANDIDATE_POOL chunks of each side: semantic cosine, lexical score, whether a query word
is the exact name of a symbol) with where each candidate lies (its unit's span, symbol
and kind: ProjectStore.hit_spans), then scores fusion variants on those lists without
touching the database again. A variant's fused chunks become units exactly as a search
ranks them (answers.rank_units: unit support, containers yielding to members), so the
shipped variant reproduces `codequarry eval`'s hybrid MRR@10 query for query. Tune on the
`*-tune` sets only (bench/data/README.md says which is which); the candidates come from
the `eval` home that bench/eval_bench.py indexes.

    python bench/tune_fusion.py [--sets asked-python-tune ...] [--cache DIR] [--home eval]
    python bench/tune_fusion.py --latency   # the fusion step's wall time, shipped vs whole pool

Prints, per variant, the mean MRR@10 over the chosen sets, the pooled MRR@10 and its 95%
bootstrap interval, the MRR@10 of each set, and the smallest margin of the variant over
the better single mode of a set (it must stay >= 0: hybrid never below its better half).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio

from codequarry.answers import Unit, query_words, rank_units
from codequarry.chunking.words import code_words, identifier_like
from codequarry.config import load_settings
from codequarry.evaluation import K, bootstrap_interval, load_qrels
from codequarry.logs import configure_logging
from codequarry.runtime import open_runtime
from codequarry.search import (
    CANDIDATE_POOL,
    FUSION_DEPTH,
    NAMED_FILE_BOOST,
    _Ranked,
    _symbol_names,
    agreement,
    code_like,
    file_stem,
    fuse,
    fuse_in_depth,
    lexical_weight,
)
from codequarry.store.project import Filters
from common import codequarry_home, emit, summary
from eval_bench import DATA, all_sets, project_of

FETCH = CANDIDATE_POOL  # what a search fetches per side at the default limit of 10
SHIPPED = "shipped (search.fuse_in_depth, search.lexical_weight, named files)"
Candidates = dict[str, Any]
Fused = list[tuple[int, float]]  # (chunk id, fused score), best first
Fuse = Callable[[Candidates], Fused]


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
            context = await store.search_context(code_words(query.text), _symbol_names(query.text))
            read: dict[str, dict[int, Any]] = {}  # the rankings' own spans; hit_spans below reads all
            semantic = await searcher._semantic(query.text, [store], Filters(), FETCH, model, notes, read)
            lexical = await searcher._lexical(query.text, [store], Filters(), FETCH, {project: context}, read)
            ids = sorted({r.chunk_id for r in semantic} | {r.chunk_id for r in lexical})
            spans = await store.hit_spans(ids)
            out.append(
                {
                    "query": query.text,
                    "semantic": [(r.chunk_id, r.score) for r in semantic],
                    "lexical": [(r.chunk_id, r.score) for r in lexical],
                    "symbol_hit": bool(context.symbols),
                    "relevant": [(s.path, s.start_line, s.end_line) for s in query.relevant],
                    # chunk id -> (path, unit start, unit end, start, end, symbol, kind, language)
                    "spans": {i: (sp.path, sp.unit_start, sp.unit_end, sp.start_line, sp.end_line,
                                  sp.symbol, sp.kind, sp.language) for i, sp in spans.items()},
                }
            )
    return out


def ranked_units(case: Candidates, fused: Fused) -> list[Unit]:
    """The units of `fused` chunks, best first, as Searcher._hits places them (one project)."""
    units: dict[tuple[str, int, int], Unit] = {}
    for chunk_id, score in sorted(fused, key=lambda pair: (-pair[1], int(pair[0]))):
        span = case["spans"].get(str(chunk_id))
        if span is None:
            continue
        path, unit_start, unit_end, start, end, symbol, kind, language = span
        unit = units.get((path, unit_start, unit_end))
        if unit is None:
            unit = units[(path, unit_start, unit_end)] = Unit("p", path, unit_start, unit_end, symbol, kind,
                                                              language, score)
        elif (start, end) not in unit.hits:
            unit.support.append(score)
        unit.add_hit(start, end)
    return rank_units(list(units.values()), min((score for _, score in fused), default=0.0))


def reciprocal_ranks(cases: list[Candidates], fuse: Callable[[Candidates], Fused]) -> list[float]:
    out = []
    for case in cases:
        ranked = ranked_units(case, fuse(case))[:K]
        out.append(next((1.0 / rank for rank, unit in enumerate(ranked, 1)
                         if any(path == unit.path and unit.start_line <= end and unit.end_line >= start
                                for path, start, end in case["relevant"])), 0.0))
    return out


def mrr(cases: list[Candidates], fuse: Callable[[Candidates], Fused]) -> float:
    return sum(reciprocal_ranks(cases, fuse)) / len(cases)


def unit_of(case: Candidates) -> Callable[[_Ranked], tuple[str, int, int] | None]:
    def where(r: _Ranked) -> tuple[str, int, int] | None:
        span = case["spans"].get(str(r.chunk_id))
        return None if span is None else (span[0], span[1], span[2])
    return where


def shared(case: Candidates) -> int:
    """search.agreement as shipped: counted on units (a cache without spans: on chunks)."""
    if "_shared" not in case:
        case["_shared"] = agreement([_Ranked("p", int(i), s) for i, s in case["lexical"]],
                                    [_Ranked("p", int(i), s) for i, s in case["semantic"]],
                                    unit_of=unit_of(case))
    return int(case["_shared"])


def named_files(fused: Fuse, boost: float = NAMED_FILE_BOOST) -> Fuse:
    """`fused` then search.favour_named_files: a file the query names gets `boost` more."""
    def boosted(case: Candidates) -> Fused:
        words = query_words(case["query"])
        out = []
        for chunk_id, score in fused(case):
            span = case["spans"].get(str(chunk_id))
            named = bool(words) and span is not None and file_stem(span[0]) in words
            out.append((chunk_id, score * (1 + boost) if named else score))
        return sorted(out, key=lambda pair: -pair[1])
    return boosted


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


def best_first(scores: dict[int, float]) -> Fused:
    return sorted(scores.items(), key=lambda pair: -pair[1])


def convex(weight_of: Callable[[Candidates], float], norm_lexical: Any = None,
           norm_semantic: Any = None) -> Callable[[Candidates], Fused]:
    lex_norm, sem_norm = norm_lexical or minmax, norm_semantic or minmax

    def fuse(case: Candidates) -> Fused:
        w = weight_of(case)
        scores: dict[int, float] = {}
        lexical, semantic = case["lexical"], case["semantic"]
        missing = {"lex": min(lex_norm(lexical).values(), default=0.0),
                   "sem": min(sem_norm(semantic).values(), default=0.0)}
        if lex_norm is minmax and sem_norm is minmax:
            missing = {"lex": 0.0, "sem": 0.0}
        for key, weight, part in (("lex", w, lex_norm(lexical)), ("sem", 1.0, sem_norm(semantic))):
            for i, s in part.items():
                scores[i] = scores.get(i, 0.0) + weight * (s - missing[key])
        return best_first(scores)

    return fuse


def rrf(weight_of: Callable[[Candidates], float], k: int) -> Callable[[Candidates], Fused]:
    def fuse(case: Candidates) -> Fused:
        w = weight_of(case)
        scores: dict[int, float] = {}
        for weight, part in ((w, case["lexical"]), (1.0, case["semantic"])):
            for rank, (i, _) in enumerate(part, 1):
                scores[int(i)] = scores.get(int(i), 0.0) + weight / (k + rank)
        return best_first(scores)

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



def ranked(case: Candidates, side: str) -> list[_Ranked]:
    return [_Ranked("p", int(i), s) for i, s in case[side]]


def single(side: str) -> Fuse:
    return lambda case: [(r.chunk_id, r.score) for r in ranked(case, side)]


def in_depth(weight_of: Callable[[Candidates], float], depth: int = FUSION_DEPTH,
             cap: float | None = None) -> Fuse:
    """search.fuse_in_depth with `weight_of` the lexical weight, each side normalised over
    its top `depth` candidates (FUSION_DEPTH as shipped; at FETCH, search.fuse over the
    whole pool); `cap` bounds each side's normalised score (an outlier on one side counts
    at most `cap` standard deviations)."""
    def fused(case: Candidates) -> Fused:
        lexical, semantic = ranked(case, "lexical"), ranked(case, "semantic")
        if cap is not None:
            lexical, semantic = capped(lexical, depth, cap), capped(semantic, depth, cap)
        return [(r.chunk_id, r.score) for r in fuse_in_depth(lexical, semantic, weight_of(case), depth)]
    return fused


def capped(side: list[_Ranked], depth: int, cap: float) -> list[_Ranked]:
    """`side` with scores above `cap` standard deviations (over its top `depth`) over its
    lowest fetched score clipped there; search.fuse measures from that lowest score too."""
    values = [r.score for r in side[:depth]]
    if len(values) < 2:
        return side
    mean = sum(values) / len(values)
    spread = (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5
    bottom = min(values)
    return [_Ranked(r.project, r.chunk_id, min(r.score, bottom + cap * spread)) for r in side]


def shipped_weight(case: Candidates) -> float:
    return lexical_weight(case["query"], case["symbol_hit"], shared(case))


def variants() -> dict[str, Fuse]:
    rows: dict[str, Fuse] = {
        "semantic only": single("semantic"),
        "lexical only": single("lexical"),
        SHIPPED: named_files(in_depth(shipped_weight)),
        "shipped without the named-file boost": in_depth(shipped_weight),
        "whole pool (search.fuse over all 100 of each side)": named_files(in_depth(shipped_weight, FETCH)),
        "before issue 14 (english 0.8, code 0.6, symbol hit = code)": convex(adaptive(0.8, 0.6, 2.0)),
        "plain RRF k=60": rrf(lambda c: 1.0, 60),
    }
    # the shipped rule's shape (z-score fusion at FUSION_DEPTH, named files) with other weights
    for english, disagree in itertools.product((0.6, 0.7, 0.8, 0.9, 1.0, 1.2), (1.0, 0.75, 0.5, 0.25)):
        rows[f"in depth english={english} disagree={disagree}"] = named_files(in_depth(
            honest(english, 1.0, 2.0, disagree)))
    for code, single_ in itertools.product((0.6, 0.8, 1.0, 1.2, 1.5), (1.0, 1.5, 2.0, 3.0)):
        rows[f"in depth code={code} single identifier={single_}"] = named_files(in_depth(
            honest(0.8, code, single_, 0.5)))
    for boost in (0.0, 0.1, 0.3):
        rows[f"shipped, named-file boost {boost}"] = named_files(in_depth(shipped_weight), boost)
    for cap in (2.0, 3.0, 4.0):
        rows[f"in depth, scores capped at {cap} sd"] = named_files(in_depth(shipped_weight, cap=cap))
    for english, code, disagree in itertools.product((0.2, 0.4, 0.6, 0.8, 1.0), (0.6, 1.0), (1.0, 0.5)):
        rows[f"min-max english={english} code={code} disagree={disagree}"] = convex(
            honest(english, code, 2.0, disagree))
    for k, english in itertools.product((10, 60), (0.3, 0.5, 0.8, 1.0)):
        rows[f"rrf k={k} english={english}"] = rrf(adaptive(english, 1.0, 2.0), k)
    return rows


def report(sets: dict[str, list[Candidates]]) -> list[dict[str, Any]]:
    rows = []
    singles = {name: max(mrr(cases, single("semantic")), mrr(cases, single("lexical")))
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


def latency(sets: dict[str, list[Candidates]], repeat: int = 3) -> None:
    """Wall time of the fusion step alone (the lexical weight given) as shipped
    (search.fuse_in_depth at FUSION_DEPTH) and over the whole pool (search.fuse),
    interleaved per query, after one warm-up pass; writes bench/results/fusion-latency.json."""
    inputs = [(ranked(case, "lexical"), ranked(case, "semantic"), shipped_weight(case))
              for cases in sets.values() for case in cases]
    rules: dict[str, Callable[[list[_Ranked], list[_Ranked], float], list[_Ranked]]] = {
        "shipped (search.fuse_in_depth, top 30)": lambda lexical, semantic, weight: fuse_in_depth(
            lexical, semantic, weight, FUSION_DEPTH),
        "whole pool (search.fuse)": fuse}
    times: dict[str, list[float]] = {label: [] for label in rules}
    load_before = os.getloadavg()
    for round_ in range(repeat):
        for lexical, semantic, weight in inputs:
            for label, rule in rules.items():
                started = time.perf_counter()
                rule(lexical, semantic, weight)
                if round_:
                    times[label].append(time.perf_counter() - started)
    figures = {"queries": len(inputs), "repeat": repeat - 1,
               "load_average_before": load_before, "load_average_after": os.getloadavg(),
               **{label: summary(values) for label, values in times.items()}}
    emit("fusion-latency", figures, " | ".join(
        f"{label} p50/p95 {figures[label]['p50']}/{figures[label]['p95']} ms" for label in rules))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tune = [name for name in all_sets() if name.endswith("-tune")]
    parser.add_argument("--sets", nargs="+", choices=tune, default=tune)
    parser.add_argument("--home", default="eval")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/cq-bench/fusion-unit-spans"),
                        help="collected candidates per set are kept here (delete to collect again)")
    parser.add_argument("--top", type=int, default=25, help="variants printed (default 25)")
    parser.add_argument("--latency", action="store_true",
                        help="time the fusion step as shipped and over the top 30 instead of scoring")
    args = parser.parse_args()
    configure_logging("warning")
    args.cache.mkdir(parents=True, exist_ok=True)
    sets: dict[str, list[Candidates]] = {}
    with codequarry_home(args.home, fresh=False):
        for name in args.sets:
            cached = args.cache / f"{name}.json"
            if not cached.exists():
                cached.write_text(json.dumps(anyio.run(collect, DATA / f"{name}.jsonl", project_of(name))))
            sets[name] = json.loads(cached.read_text())  # chunk ids as JSON keys: strings
    if args.latency:
        latency(sets)
        return
    rows = sorted(report(sets), key=lambda r: -r["macro"])
    names = list(sets)
    print("MRR@10 mean of sets | pooled [95% CI] | " + " | ".join(names)
          + " | worst margin over best half | variant")
    fixed = {"semantic only", "lexical only", SHIPPED,
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
