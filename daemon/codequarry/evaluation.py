"""`codequarry eval`: retrieval quality on labelled queries, per search mode.

Input: JSON lines `{"query": "...", "relevant": [{"path", "start_line", "end_line"}]}`.
A result hits a relevant span when its path is the same and its lines overlap. Metrics
over the top 10: MRR@10, Recall@1/5/10 (share of relevant spans found), nDCG@10 (binary
gains, each relevant span counted once). Each mean comes with a 95% percentile interval
from a bootstrap over queries (2,000 resamples, fixed seed), and hybrid is compared with
its better half by a paired bootstrap of the per-query difference.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
import numpy as np

from codequarry.config import Settings
from codequarry.errors import CodequarryError, UsageError
from codequarry.search import MODES, Mode, Searcher, SearchRequest

K = 10
RESAMPLES = 2000
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class Span:
    path: str
    start_line: int
    end_line: int

    def hit_by(self, result: dict[str, Any]) -> bool:
        return bool(result["path"] == self.path and result["start_line"] <= self.end_line
                    and result["end_line"] >= self.start_line)


@dataclass(frozen=True, slots=True)
class Query:
    text: str
    relevant: tuple[Span, ...]


@dataclass
class ModeScores:
    mode: str
    reciprocal_ranks: list[float] = field(default_factory=list)
    recall: dict[int, list[float]] = field(default_factory=lambda: {1: [], 5: [], 10: []})
    ndcg: list[float] = field(default_factory=list)
    first_ranks: list[int] = field(default_factory=list)  # 0 = not in the top 10
    seconds: list[float] = field(default_factory=list)

    def add(self, query: Query, results: Sequence[dict[str, Any]], seconds: float) -> None:
        found_at = first_hits(query, results)
        first = min(found_at.values(), default=0)
        self.first_ranks.append(first)
        self.reciprocal_ranks.append(1.0 / first if first else 0.0)
        for k in self.recall:
            self.recall[k].append(sum(1 for r in found_at.values() if r <= k) / len(query.relevant))
        dcg = sum(1.0 / math.log2(rank + 1) for rank in found_at.values())
        ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(query.relevant), K) + 1))
        self.ndcg.append(dcg / ideal)
        self.seconds.append(seconds)

    def summary(self) -> dict[str, Any]:
        """Means, plus `<metric>_ci`: [low, high] 95% bootstrap intervals of MRR@10, R@1, R@10."""
        def mean(values: list[float]) -> float:
            return round(sum(values) / len(values), 4) if values else 0.0

        return {"mrr@10": mean(self.reciprocal_ranks), "recall@1": mean(self.recall[1]),
                "recall@5": mean(self.recall[5]), "recall@10": mean(self.recall[10]),
                "ndcg@10": mean(self.ndcg), "queries": len(self.ndcg),
                "mean_ms": round(1000 * mean(self.seconds), 1),
                "p50_ms": _percentile_ms(self.seconds, 50), "p95_ms": _percentile_ms(self.seconds, 95),
                "mrr@10_ci": bootstrap_interval(self.reciprocal_ranks),
                "recall@1_ci": bootstrap_interval(self.recall[1]),
                "recall@10_ci": bootstrap_interval(self.recall[10])}


def _percentile_ms(seconds: Sequence[float], q: float) -> float:
    """The `q`th percentile (nearest rank) of per-query wall times, in ms; 0.0 for none."""
    if not seconds:
        return 0.0
    ordered = sorted(seconds)
    return round(1000 * ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))], 1)


def _resampled_means(values: Sequence[float], resamples: int, seed: int) -> np.ndarray[Any, Any]:
    data = np.asarray(values, dtype=np.float64)
    picks = np.random.default_rng(seed).integers(0, len(data), size=(resamples, len(data)))
    return np.asarray(data[picks].mean(axis=1))


def bootstrap_interval(values: Sequence[float], resamples: int = RESAMPLES, seed: int = 0,
                       confidence: float = CONFIDENCE) -> list[float]:
    """[low, high]: the percentile bootstrap interval of the mean of per-query `values`
    (queries drawn with replacement `resamples` times). [0, 0] for no values."""
    if not values:
        return [0.0, 0.0]
    means = _resampled_means(values, resamples, seed)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def paired_difference(a: Sequence[float], b: Sequence[float], resamples: int = RESAMPLES,
                      seed: int = 0, confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Mean of a - b over the same queries, its 95% paired bootstrap interval, and the share
    of resamples in which a - b < 0 (`p_below`). Raises ValueError on lists of unequal length."""
    if len(a) != len(b):
        raise ValueError(f"paired samples differ in length: {len(a)} vs {len(b)}")
    differences = [x - y for x, y in zip(a, b, strict=True)]
    if not differences:
        return {"mean": 0.0, "ci": [0.0, 0.0], "p_below": 0.0}
    means = _resampled_means(differences, resamples, seed)
    tail = (1.0 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return {"mean": round(sum(differences) / len(differences), 4),
            "ci": [round(float(low), 4), round(float(high), 4)],
            "p_below": round(float((means < 0).mean()), 4)}


def hybrid_against_halves(per_query: dict[str, list[float]]) -> dict[str, Any] | None:
    """Hybrid's MRR@10 minus that of its better half (lexical or semantic, whichever has the
    higher MRR@10 on these queries), with its paired bootstrap interval; None unless all
    three modes were measured."""
    if not {"hybrid", "lexical", "semantic"} <= per_query.keys():
        return None
    best = max(("semantic", "lexical"), key=lambda m: sum(per_query[m]))
    return {"best_half": best, **paired_difference(per_query["hybrid"], per_query[best])}


def first_hits(query: Query, results: Sequence[dict[str, Any]]) -> dict[int, int]:
    """For each relevant span (by index), the 1-based rank of the first result hitting it."""
    found: dict[int, int] = {}
    for rank, result in enumerate(results[:K], 1):
        for index, span in enumerate(query.relevant):
            if index not in found and span.hit_by(result):
                found[index] = rank
    return found


def load_qrels(path: Path) -> list[Query]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    queries = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            spans = tuple(Span(str(r["path"]), int(r["start_line"]), int(r["end_line"]))
                          for r in item["relevant"])
            if not spans or not str(item["query"]).strip():
                raise ValueError("needs a query and at least one relevant span")
            queries.append(Query(str(item["query"]), spans))
        except (ValueError, KeyError, TypeError) as exc:
            raise UsageError(f"{path}:{number}: expected "
                             '{"query": ..., "relevant": [{"path", "start_line", "end_line"}]} '
                             f"({type(exc).__name__}: {exc})") from None
    if not queries:
        raise UsageError(f"{path} holds no queries")
    return queries


async def evaluate(searcher: Searcher, model_id: str | None, queries: Sequence[Query],
                   projects: Sequence[str], modes: Sequence[Mode]) -> dict[str, Any]:
    """Scores per mode, and the queries hybrid (or the first mode) ranks worst."""
    scores = {mode: ModeScores(mode) for mode in modes}
    for query in queries:
        for mode in modes:
            started = time.perf_counter()
            response = await searcher.search(SearchRequest(query.text, tuple(projects), mode, limit=K),
                                             model_id)
            results = [hit.to_json() for hit in response.results]
            scores[mode].add(query, results, time.perf_counter() - started)
    focus = "hybrid" if "hybrid" in scores else modes[0]
    ranked = sorted(range(len(queries)), key=lambda i: scores[focus].first_ranks[i] or K + 1,
                    reverse=True)
    worst = [{"query": queries[i].text, "expected": queries[i].relevant[0].path,
              **{mode: scores[mode].first_ranks[i] or None for mode in modes}} for i in ranked]
    per_query: dict[str, list[float]] = {mode: s.reciprocal_ranks for mode, s in scores.items()}
    return {"modes": {mode: s.summary() for mode, s in scores.items()}, "worst": worst,
            "hybrid_vs_best_half": hybrid_against_halves(per_query), "reciprocal_ranks": per_query}


def run_eval_command(settings: Settings, qrels: Path, projects: list[str], modes: list[str] | None,
                     as_json: bool, worst: int) -> int:
    from codequarry.runtime import open_runtime

    queries = load_qrels(qrels)
    chosen: list[Mode] = [m for m in MODES if m in (modes or MODES)]

    async def run() -> dict[str, Any]:
        async with open_runtime(settings) as runtime:
            model_id = None
            if chosen != ["lexical"]:
                try:
                    await runtime.embedder.start()
                    model_id = runtime.embedder.model_id
                except CodequarryError as exc:
                    raise CodequarryError(f"semantic modes need the embedder: {exc}") from None
            return await evaluate(runtime.searcher, model_id, queries, projects, chosen)

    report = anyio.run(run)
    report["worst"] = report["worst"][:worst]
    report.pop("reciprocal_ranks")
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, len(queries))
    return 0


def print_report(report: dict[str, Any], count: int) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=f"retrieval quality on {count} queries (top {K})")
    for column in ("mode", "MRR@10", "95% CI", "R@1", "R@5", "R@10", "nDCG@10", "ms/query"):
        table.add_column(column, justify="right" if column != "mode" else "left")
    for mode, s in report["modes"].items():
        low, high = s["mrr@10_ci"]
        table.add_row(mode, f"{s['mrr@10']:.3f}", f"{low:.3f}-{high:.3f}", f"{s['recall@1']:.3f}",
                      f"{s['recall@5']:.3f}", f"{s['recall@10']:.3f}", f"{s['ndcg@10']:.3f}",
                      f"{s['mean_ms']:.0f}")
    console.print(table)
    versus = report.get("hybrid_vs_best_half")
    if versus:
        low, high = versus["ci"]
        console.print(f"hybrid - {versus['best_half']} (MRR@10): {versus['mean']:+.3f} "
                      f"(95% CI {low:+.3f} to {high:+.3f})", markup=False)
    if report["worst"]:
        console.print("worst queries (rank of the first relevant result; - = not in the top 10):")
        for item in report["worst"]:
            ranks = " ".join(f"{m}={item.get(m) or '-'}" for m in report["modes"])
            console.print(f"  {ranks}  {item['query'][:90]!r} -> {item['expected']}", markup=False)
    sys.stdout.flush()
