"""`codequarry eval` metrics: hits by overlapping line spans, MRR, Recall@k, nDCG@10, and
clear errors for malformed label files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from codequarry.errors import UsageError
from codequarry.evaluation import (
    ModeScores,
    Query,
    Span,
    bootstrap_interval,
    hybrid_against_halves,
    load_qrels,
    paired_difference,
)


def result(path: str, start: int, end: int) -> dict[str, object]:
    return {"path": path, "start_line": start, "end_line": end}


def test_a_result_hits_a_span_of_the_same_path_whose_lines_overlap() -> None:
    span = Span("a.py", 10, 20)
    assert span.hit_by(result("a.py", 20, 25))
    assert span.hit_by(result("a.py", 1, 10))
    assert not span.hit_by(result("a.py", 21, 25))
    assert not span.hit_by(result("b.py", 10, 20))


def test_scores_follow_the_ranks_of_the_first_hit_of_each_relevant_span() -> None:
    query = Query("q", (Span("a.py", 1, 5), Span("b.py", 1, 5)))
    results = [result("x.py", 1, 9), result("a.py", 3, 4), result("a.py", 1, 2), result("y.py", 1, 9),
               result("b.py", 5, 9)]
    scores = ModeScores("hybrid")
    scores.add(query, results, 0.01)
    scores.add(Query("miss", (Span("z.py", 1, 2),)), results, 0.01)
    summary = scores.summary()
    assert summary["mrr@10"] == pytest.approx((1 / 2 + 0) / 2, abs=1e-4)
    assert summary["recall@1"] == 0.0
    assert summary["recall@5"] == pytest.approx((1.0 + 0) / 2)
    ndcg_first = (1 / math.log2(3) + 1 / math.log2(6)) / (1 / math.log2(2) + 1 / math.log2(3))
    assert summary["ndcg@10"] == pytest.approx(ndcg_first / 2, abs=1e-4)
    assert scores.first_ranks == [2, 0]
    assert (summary["p50_ms"], summary["p95_ms"]) == (10.0, 10.0)  # per-query wall times, in ms


def test_a_hit_below_rank_10_does_not_count() -> None:
    query = Query("q", (Span("a.py", 1, 5),))
    scores = ModeScores("lexical")
    scores.add(query, [result("x.py", 1, 1)] * 10 + [result("a.py", 1, 5)], 0.0)
    assert scores.summary()["mrr@10"] == 0.0


def test_a_malformed_line_is_an_error_naming_the_file_and_line(tmp_path: Path) -> None:
    qrels = tmp_path / "q.jsonl"
    qrels.write_text('{"query": "ok", "relevant": [{"path": "a", "start_line": 1, "end_line": 2}]}\n'
                     '{"query": "no spans", "relevant": []}\n')
    with pytest.raises(UsageError, match=r"q\.jsonl:2: expected"):
        load_qrels(qrels)
    with pytest.raises(UsageError, match="cannot read"):
        load_qrels(tmp_path / "missing.jsonl")


def test_the_bootstrap_interval_brackets_the_mean_and_is_reproducible() -> None:
    values = [1.0, 0.5, 0.0, 0.0, 1.0, 0.25, 0.0, 1.0, 0.33, 0.0] * 5
    low, high = bootstrap_interval(values)
    mean = sum(values) / len(values)
    assert low < mean < high
    assert [low, high] == bootstrap_interval(values)
    assert bootstrap_interval([0.5] * 20) == [0.5, 0.5]
    assert bootstrap_interval([]) == [0.0, 0.0]


def test_a_paired_difference_is_zero_for_equal_modes_and_signed_for_unequal_ones() -> None:
    a = [1.0, 0.5, 0.0, 1.0, 0.2] * 10
    same = paired_difference(a, a)
    assert same["mean"] == 0.0
    assert same["ci"] == [0.0, 0.0]
    better = paired_difference([x + 0.1 for x in a], a)
    assert better["mean"] == pytest.approx(0.1)
    assert better["ci"][0] > 0
    assert better["p_below"] == 0.0
    with pytest.raises(ValueError, match="differ in length"):
        paired_difference(a, a[:-1])


def test_hybrid_is_compared_with_whichever_half_scores_higher() -> None:
    per_query = {"lexical": [0.0, 0.0, 1.0], "semantic": [1.0, 0.5, 0.0], "hybrid": [1.0, 0.5, 0.5]}
    versus = hybrid_against_halves(per_query)
    assert versus is not None
    assert versus["best_half"] == "semantic"
    assert versus["mean"] == pytest.approx(0.5 / 3, abs=1e-4)
    assert hybrid_against_halves({"hybrid": [1.0]}) is None
