"""Tune the lexical ranking (ProjectStore.lexical) on the tuning sets, against the
reference BM25 of bench/bm25.py computed in the same run.

Scores MRR@10 of lexical-only search (chunks, top 10) for each variant of the candidate
bound and the BM25F parameters (field weights, k1, b; the term frequency ts_rank's
saturating count as shipped, or with `"tf": "count"` the occurrences summed), on the
`*-tune` sets only, reusing the `eval` home that bench/eval_bench.py indexes (lexical
needs no vectors, so this runs while the embeddings are still being computed). Next to
them: the reference BM25, the ranking shipped before issue 14, and the one shipped at
97bc076 (ts_rank as the term frequency, b 0.15, the rarest-terms bound).

The tuning sets' corpora hold 4-7k chunks, where the 2,000-row candidate budget never
binds; `--budget-scale 0.05` shrinks budget and cap to what they are relative to a
100k-chunk index, to see what the bound costs there.

    python bench/tune_lexical.py [--sets asked-python-tune ...] [--home eval] [--budget-scale S]
    python bench/tune_lexical.py --latency     # lexical half: pre-issue-14, 97bc076, now
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
from codequarry.store.project import (
    BM25_B,
    BM25_K1,
    FIELD_WEIGHTS,
    Filters,
    ProjectStore,
    match_tsquery,
)
from common import codequarry_home, summary
from eval_bench import DATA, all_sets, project_of, rarest_terms, shipped_lexical_sql

K = 10


async def shipped_before(store: ProjectStore, query: str, limit: int = K) -> list[int]:
    """The lexical ranking as shipped before issue 14 (sum of idf * ts_rank normalised 1)."""
    lexemes, total, freqs = await store.query_terms(code_words(query))
    if not lexemes:
        return []
    terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
    match = rarest_terms(lexemes, freqs, total)
    params: dict[str, Any] = {"match": match_tsquery(match),
                              "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms],
                              "cap": 2000, "k": limit}
    async with store.reader.connect() as conn:
        rows = await conn.execute(text(shipped_lexical_sql(store.s)), params)
        return [row.id for row in rows]


async def shipped_97bc076(store: ProjectStore, query: str, limit: int = K, budget: int = 2000,
                          cap: int = 2000) -> list[int]:
    """The lexical ranking at 97bc076 (this session's "before"): BM25 over ts_rank
    (weights {0.3, 0.2, 0.4, 1.0}, k1 1.2, b 0.15) on the rarest-terms candidate bound."""
    lexemes, total, freqs = await store.query_terms(code_words(query))
    if not lexemes:
        return []
    terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
    params: dict[str, Any] = {
        "match": match_tsquery(rarest_terms(lexemes, freqs, total, budget)),
        "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms], "cap": cap, "k": limit,
        "fw": [0.3, 0.2, 0.4, 1.0], "avglen": await store._average_length()}
    async with store.reader.connect() as conn:
        rows = await conn.execute(text(
            f"WITH cand AS (SELECT id, tsv FROM {store.s}.chunks "
            "WHERE tsv @@ CAST(:match AS tsquery) LIMIT :cap) "
            "SELECT c.id, sum(t.w * r.tf * 2.2 / (r.tf + 1.2 * (0.85 + 0.15 * length(c.tsv) "
            "/ CAST(:avglen AS float8)))) AS score "
            "FROM cand c CROSS JOIN unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) "
            "AS t(lexeme, w) CROSS JOIN LATERAL (SELECT ts_rank(CAST(:fw AS float4[]), c.tsv, "
            "quote_literal(t.lexeme)::tsquery, 0) AS tf) r "
            "WHERE c.tsv @@ quote_literal(t.lexeme)::tsquery "
            "GROUP BY c.id ORDER BY score DESC LIMIT :k"), params)
        return [row.id for row in rows]


async def variant(store: ProjectStore, query: str, options: dict[str, Any]) -> list[int]:
    """ProjectStore.lexical with `options`: fw, k1, b, budget, cap, bound ("pairs", the
    shipped _match_terms, or "rarest"), tf ("count": each lexeme's occurrences summed with
    the field weights, i.e. BM25F, instead of ts_rank's saturating count)."""
    lexemes, total, freqs = await store.query_terms(code_words(query))
    if not lexemes:
        return []
    terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
    budget = options.get("budget", 2000)
    match: list[str | tuple[str, ...]] = (
        list(rarest_terms(lexemes, freqs, total, budget)) if options.get("bound") == "rarest"
        else _match_terms(lexemes, freqs, total, budget))
    if options.get("tf") == "count":
        return await counted(store, terms, match, options)
    hits = await store.lexical(terms, match, Filters(), K, cap=options.get("cap", 2000),
                               field_weights=options.get("fw", FIELD_WEIGHTS),
                               k1=options.get("k1", BM25_K1), b=options.get("b", BM25_B))
    return [i for i, _ in hits]


async def counted(store: ProjectStore, terms: list[tuple[str, float]], match: list[str | tuple[str, ...]],
                  options: dict[str, Any]) -> list[int]:
    """ProjectStore.lexical's statement with ts_rank_cd of each lexeme alone (normalisation
    0: the sum of its occurrences' weights) as the term frequency: BM25F. Its weights must
    be <= 1, so they are scaled to the largest and the term frequency scaled back."""
    weights = [float(w) for w in options.get("fw", FIELD_WEIGHTS)]
    top = max(weights)
    sql, params = store.lexical_statement(
        terms, match, Filters(), K, await store._average_length(), cap=options.get("cap", 2000),
        field_weights=[w / top for w in weights], k1=options.get("k1", BM25_K1), b=options.get("b", BM25_B))
    shipped = "SELECT ts_rank(CAST(:fw AS float4[])"
    assert shipped in sql, "ProjectStore.lexical_statement changed: update counted()"
    sql = sql.replace(shipped, "SELECT CAST(:top AS float8) * ts_rank_cd(CAST(:fw AS float4[])")
    async with store.reader.connect() as conn:
        rows = await conn.execute(text(sql), {**params, "top": top})
        return [row.id for row in rows]


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
        scale = args.budget_scale
        budget = max(1, round(2000 * scale))
        await measure("shipped before issue 14", lambda s: lambda q: shipped_before(s, q))
        await measure(f"shipped at 97bc076 (budget {budget})",
                      lambda s: lambda q: shipped_97bc076(s, q, budget=budget, cap=budget))
        grid = json.loads(args.grid) if args.grid else [
            {"fw": fw, "k1": k1, "b": b, "bound": bound}
            for fw, k1, b, bound in itertools.product(
                ([0.3, 0.2, 0.4, 1.0], [0.4, 0.2, 0.4, 1.0], [0.45, 0.2, 0.4, 1.0], [0.4, 0.2, 0.2, 1.0]),
                (1.2, 3.0, 5.0), (0.15, 0.3), ("pairs", "rarest"))]
        for options in grid:
            options = {**options, "budget": round(options.get("budget", 2000) * scale),
                       "cap": round(options.get("cap", 2000) * scale)}
            await measure(json.dumps(options), lambda s, o=options: lambda q: variant(s, q, o))
    finally:
        await store.close()
    return out


async def latency(sets: dict[str, list[Query]], stores: dict[str, ProjectStore]) -> dict[str, Any]:
    """Wall time of the lexical half (query_terms + lexical SQL, fetch 100 as a search does)
    as shipped before issue 14, at 97bc076 and now, interleaved per query after one warm-up
    pass: p50/p95 in ms."""
    from codequarry.search import CANDIDATE_POOL, Searcher

    fetch = CANDIDATE_POOL
    searcher = Searcher(None, None)  # type: ignore[arg-type]  # one store: _lexical reads no other state
    times: dict[str, list[float]] = {"before issue 14": [], "97bc076": [], "now": []}
    for warm in (True, False):
        for name, queries in sets.items():
            for query in queries:
                for label in times:
                    started = time.perf_counter()
                    if label == "before issue 14":
                        await shipped_before(stores[name], query.text, limit=fetch)
                    elif label == "97bc076":
                        await shipped_97bc076(stores[name], query.text, limit=fetch)
                    else:
                        await searcher._lexical(query.text, [stores[name]], Filters(), fetch, {}, {})
                    if not warm:
                        times[label].append(time.perf_counter() - started)
    out = {label: summary(v) for label, v in times.items()}
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
    parser.add_argument("--budget-scale", type=float, default=1.0,
                        help="scale the 2,000-row candidate budget and cap (0.05: a 100k-chunk index "
                             "seen from a 5k-chunk one)")
    parser.add_argument("--out", type=Path, help="write the scores here as JSON")
    args = parser.parse_args()
    configure_logging("warning")
    with codequarry_home(args.home, fresh=False):
        out = anyio.run(run, args)
    if args.out:
        args.out.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
