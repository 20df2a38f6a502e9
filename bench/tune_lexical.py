"""Tune the lexical ranking (ProjectStore.lexical) on the tuning sets, against the
reference BM25 of bench/bm25.py computed in the same run.

Scores MRR@10 of lexical-only search for each variant of the candidate bound and the
BM25-style scoring parameters (field weights, k1, b), on the `*-tune` sets only, reusing
the `eval` home that bench/eval_bench.py indexes (lexical needs no vectors, so this runs
while the embeddings are still being computed).

    python bench/tune_lexical.py [--sets asked-python-tune ...] [--home eval]
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from bm25 import BM25
from codequarry.chunking.words import code_words
from codequarry.config import load_settings
from codequarry.evaluation import ModeScores, Query, bootstrap_interval, load_qrels
from codequarry.logs import configure_logging
from codequarry.search import _idf, _match_terms
from codequarry.store.db import Store
from codequarry.store.project import Filters, ProjectStore, _tsquery_literal
from common import codequarry_home
from eval_bench import DATA, all_sets, project_of

K = 10


async def shipped_before(store: ProjectStore, query: str, limit: int = K) -> list[int]:
    """The lexical ranking as shipped before issue 14 (sum of idf * ts_rank normalised 1)."""
    lexemes, total, freqs = await store.query_terms(code_words(query))
    if not lexemes:
        return []
    terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
    match = _match_terms(lexemes, freqs, total)
    params: dict[str, Any] = {"match": " | ".join(_tsquery_literal(lex) for lex in match),
                              "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms],
                              "cap": 2000, "k": limit}
    async with store.reader.connect() as conn:
        rows = await conn.execute(text(
            f"WITH cand AS (SELECT id, tsv FROM {store.s}.chunks "
            f"WHERE tsv @@ CAST(:match AS tsquery) LIMIT :cap) "
            "SELECT c.id, sum(ts_rank(c.tsv, quote_literal(t.lexeme)::tsquery, 1) * t.w) AS score "
            "FROM cand c CROSS JOIN unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) "
            "AS t(lexeme, w) WHERE c.tsv @@ quote_literal(t.lexeme)::tsquery "
            "GROUP BY c.id ORDER BY score DESC LIMIT :k"), params)
        return [row.id for row in rows]


async def variant(store: ProjectStore, query: str, options: dict[str, Any]) -> list[int]:
    lexemes, total, freqs = await store.query_terms(code_words(query))
    if not lexemes:
        return []
    terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
    budget = options.get("budget", 2000)
    match = _match_terms(lexemes, freqs, total, budget)
    hits = await store.lexical(terms, match, Filters(), K, cap=options.get("cap", 2000),
                               field_weights=options["fw"], k1=options["k1"], b=options["b"])
    return [i for i, _ in hits]


async def score(store: ProjectStore, queries: Sequence[Query], ranked: Any) -> list[float]:
    scores = ModeScores("lexical")
    for query in queries:
        ids = await ranked(query.text)
        rows = await store.chunk_rows(ids)
        results = [{"path": rows[i].path, "start_line": rows[i].chunk.start_line,
                    "end_line": rows[i].chunk.end_line} for i in ids if i in rows]
        scores.add(query, results, 0.0)
    return scores.reciprocal_ranks


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    store = await Store.open(settings)
    sets = {name: load_qrels(DATA / f"{name}.jsonl")[: args.max_queries] for name in args.sets}
    stores = {name: await store.project(project_of(name)) for name in sets}
    out: dict[str, Any] = {}

    async def measure(label: str, make: Any) -> None:
        started = time.perf_counter()
        per_set = {}
        pooled: list[float] = []
        for name, queries in sets.items():
            rr = await score(stores[name], queries, make(stores[name]))
            per_set[name] = round(sum(rr) / len(rr), 4)
            pooled += rr
        out[label] = {"mean": round(sum(pooled) / len(pooled), 4), "ci": bootstrap_interval(pooled),
                      "sets": per_set}
        print(f"{out[label]['mean']:.4f} {per_set} {label} ({time.perf_counter() - started:.0f} s)",
              flush=True)

    try:
        if args.latency:
            return await latency(sets, stores)
        references = {name: await BM25(stores[name]).load() for name in sets}

        def bm25(name_store: ProjectStore) -> Any:
            name = next(n for n, s in stores.items() if s is name_store)

            async def ranked(q: str) -> list[int]:
                hits = await references[name].search(q, K)
                return [h.chunk_id for h in hits]
            return ranked

        await measure("bm25 (reference)", bm25)
        await measure("shipped before", lambda s: lambda q: shipped_before(s, q))
        grid = json.loads(args.grid) if args.grid else [
            {"fw": fw, "k1": k1, "b": b, "budget": budget, "cap": budget}
            for fw, k1, b, budget in itertools.product(
                ([0.1, 0.2, 0.4, 1.0], [0.3, 0.2, 0.4, 1.0], [0.6, 0.2, 0.6, 1.0], [1.0, 1.0, 1.0, 1.0]),
                (0.5, 1.2, 3.0), (0.3, 0.75), (2000, 10000))]
        for options in grid:
            await measure(json.dumps(options), lambda s, o=options: lambda q: variant(s, q, o))
    finally:
        await store.close()
    return out


async def latency(sets: dict[str, list[Query]], stores: dict[str, ProjectStore]) -> dict[str, Any]:
    """Wall time of the lexical half before and after issue 14 (query_terms + lexical SQL +
    fetch 30), interleaved per query, after one warm-up pass: p50/p95 in ms."""
    from codequarry.search import Searcher

    times: dict[str, list[float]] = {"before": [], "after": []}
    for warm in (True, False):
        for name, queries in sets.items():
            for query in queries:
                for label in ("before", "after"):
                    started = time.perf_counter()
                    if label == "before":
                        await shipped_before(stores[name], query.text, limit=30)
                    else:
                        await Searcher._lexical(None, query.text, [stores[name]], Filters(), 30)  # type: ignore[arg-type]
                    if not warm:
                        times[label].append(time.perf_counter() - started)
    out = {label: {"p50_ms": round(1000 * sorted(v)[len(v) // 2], 2),
                   "p95_ms": round(1000 * sorted(v)[int(len(v) * 0.95)], 2), "n": len(v)}
           for label, v in times.items()}
    print(json.dumps(out))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    tune = [s for s in all_sets() if s.endswith("-tune")]
    parser.add_argument("--sets", nargs="+", choices=tune, default=tune)
    parser.add_argument("--home", default="eval")
    parser.add_argument("--max-queries", type=int, default=None)
    parser.add_argument("--grid", help="JSON list of variants (default: the built-in grid)")
    parser.add_argument("--latency", action="store_true",
                        help="time the lexical half before and after instead of scoring it")
    parser.add_argument("--out", type=Path, help="write the scores here as JSON")
    args = parser.parse_args()
    configure_logging("warning")
    with codequarry_home(args.home, fresh=False):
        out = anyio.run(run, args)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
