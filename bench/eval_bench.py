"""Retrieval quality (MRR@10, Recall@1/5/10, nDCG@10) of every labelled set in bench/data,
per search mode, with the product's own `codequarry.evaluation.evaluate`.

    bench/make_sets.sh                  # once: the stripped corpora in /tmp/cq-bench/<set>/corpus
    python bench/eval_bench.py [--sets stdlib-tune questions-stdlib-tune ...] [--home eval]

Each set names its corpus (bench/data/README.md): `<set>.jsonl` uses
`<sets-dir>/<set>/corpus`, `questions-<set>.jsonl` the same corpus as `<set>`. Every
corpus is a project (id = the set name) of one shared, reused home
(`codequarry_home(home, fresh=False)`), indexed in this process with the product
defaults (local model): a second run re-embeds nothing. Sets named `*-tune*` are the
tuning sets (weights were fitted on them), `*-report*` the held-out report sets; both are
reported, marked by role. Writes bench/results/eval.json:
{"sets": {name: {"role", "queries", "modes": {mode: {"mrr@10", ...}}, ...}}}.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import anyio

from bm25 import BM25
from codequarry.config import add_project, load_settings
from codequarry.evaluation import ModeScores, evaluate, load_qrels, paired_difference
from codequarry.logs import configure_logging
from codequarry.runtime import Runtime, open_runtime
from codequarry.search import MODES, Mode
from common import codequarry_home, emit, summary
from search_bench import index_projects, positive

DATA = Path(__file__).resolve().parent / "data"
QUESTIONS = "questions-"
ASKED = "asked-"
GOAL_MRR = 0.6  # issue 6: on natural-language questions about code


def all_sets() -> list[str]:
    return sorted(path.stem for path in DATA.glob("*.jsonl"))


def project_of(set_name: str) -> str:
    """The project (and corpus directory) a set is evaluated on: `asked-<code>-<role>`
    uses `asked-<code>` (bench/make_asked.py), `questions-<set>` uses `<set>`'s corpus."""
    if set_name.startswith(ASKED):
        return set_name.rsplit("-", 1)[0]
    return set_name.removeprefix(QUESTIONS)


def role_of(set_name: str) -> str:
    return "tuning" if set_name.endswith("-tune") else "report"


def kind_of(set_name: str) -> str:
    return "asked" if set_name.startswith(ASKED) else (
        "questions" if set_name.startswith(QUESTIONS) else "docstrings")


def prepare_corpus(sets_dir: Path, project: str) -> Path:
    root = sets_dir / project / "corpus"
    if not (root / ".git").is_dir():
        raise SystemExit(f"{root} is missing: build the corpora first with bench/make_sets.sh "
                         f"(OUT={sets_dir})")
    if project == "js-report":
        # Its labels point into node_modules/ (npm's bundled undici, negotiator, debug, ...),
        # which codequarry leaves out by default like every dependency directory. A
        # .codequarryignore outranks the built-in defaults (codequarry/ignore.py), so this
        # negation puts node_modules/ back in the index of this corpus only.
        ignore = root / ".codequarryignore"
        lines = ignore.read_text().splitlines() if ignore.exists() else []
        if "!node_modules/" not in lines:
            ignore.write_text("\n".join([*lines, "!node_modules/"]) + "\n")
    return root


def set_vector_type(config_path: Path, vector_type: str) -> None:
    """Write `[index] vector_type` into the bench home's config (issue 13: halfvec vs vector)."""
    import tomlkit

    document = tomlkit.parse(config_path.read_text(encoding="utf-8") if config_path.exists() else "")
    index = document.setdefault("index", tomlkit.table())
    index["vector_type"] = vector_type
    config_path.write_text(tomlkit.dumps(document), encoding="utf-8")


async def store_vectors_as(runtime: Runtime, projects: list[str]) -> None:
    """Give every project's vectors the configured vector type: the same model's table is
    refilled from the (full-precision) embedding cache and gets its HNSW index before any
    query runs. A project already stored that way is left as it is."""
    for project in projects:
        store = await runtime.store.project(project)
        await store.set_model(runtime.embedder.model_id, runtime.embedder.dims)
        await store.finish_vectors()


def rarest_terms(lexemes: list[str], freqs: dict[str, float], total: int,
                 budget: int = 2000) -> list[str]:
    """The candidate bound shipped before this session: the rarest lexemes alone, until
    their matches would exceed `budget` rows (for --baseline and tune_lexical.py)."""
    chosen: list[str] = []
    expected = 0.0
    for lexeme in sorted(lexemes, key=lambda lex: freqs.get(lex, 0.0)):
        rows = freqs.get(lexeme, 0.0) * total
        if chosen and expected + rows > budget:
            break
        chosen.append(lexeme)
        expected += rows
    return chosen


def shipped_lexical_sql(schema: str, where: str = "") -> str:
    """The lexical statement as shipped before issue 14 (sum of idf * ts_rank, normalisation
    1, default field weights) over `schema`'s chunks; parameters :match, :terms, :weights,
    :cap, :k and those of `where` (Filters.sql)."""
    return (f"WITH cand AS (SELECT id, tsv FROM {schema}.chunks "
            f"WHERE tsv @@ CAST(:match AS tsquery){where} LIMIT :cap) "
            "SELECT c.id, sum(ts_rank(c.tsv, quote_literal(t.lexeme)::tsquery, 1) * t.w) AS score "
            "FROM cand c CROSS JOIN unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) "
            "AS t(lexeme, w) WHERE c.tsv @@ quote_literal(t.lexeme)::tsquery "
            "GROUP BY c.id ORDER BY score DESC LIMIT :k")


def use_baseline() -> None:
    """Rank as shipped before issue 14, for the "before" figures of the same run: lexical
    scoring by idf * ts_rank (normalisation 1, default field weights), fusion weights
    english 0.8 / code 0.6 / lone identifier 2.0 with any symbol hit counted as code."""
    from codequarry import search
    from codequarry.chunking.words import identifier_like
    from codequarry.store.project import LEXICAL_CANDIDATES, Filters, ProjectStore, match_tsquery

    # the statement, not ProjectStore.lexical: searches read through store/fanout.py,
    # which runs each store's lexical_statement
    def lexical_statement(self: ProjectStore, terms: Any, match: Any, filters: Filters, limit: int,
                          avglen: float, **_: Any) -> tuple[str, dict[str, Any]]:
        params: dict[str, Any] = {
            "match": match_tsquery(match),
            "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms],
            "cap": LEXICAL_CANDIDATES, "k": limit}
        where = filters.sql(params)
        return shipped_lexical_sql(self.s, where), params

    def lexical_weight(query: str, symbol_hit: bool, shared: int | None = None) -> float:
        tokens = query.split()
        if symbol_hit or any(identifier_like(t) for t in tokens):
            return 2.0 if len(tokens) == 1 else 0.6
        return 0.8

    ProjectStore.lexical_statement = lexical_statement  # type: ignore[method-assign]
    search.lexical_weight = lexical_weight
    search._match_terms = rarest_terms  # type: ignore[assignment]


async def bench(args: argparse.Namespace, config_path: Path) -> dict[str, Any]:
    modes: list[Mode] = [m for m in MODES if m in args.modes]
    projects = sorted({project_of(s) for s in args.sets})
    for project in projects:
        add_project(config_path, project, prepare_corpus(args.sets_dir, project))
    settings = load_settings()
    out: dict[str, Any] = {}
    async with open_runtime(settings) as runtime:
        await runtime.embedder.start()
        if args.vector_type:
            await store_vectors_as(runtime, projects)
        if args.no_index:
            indexed = {}
            for project in projects:
                store = await runtime.store.project(project)
                chunks, embedded = await store.vector_counts()
                if embedded < chunks:
                    raise SystemExit(f"{project}: only {embedded} of {chunks} chunks have vectors")
                indexed[project] = {"files": (await store.counts()).files, "chunks": chunks}
        else:
            indexed = await index_projects(runtime, projects)
        references: dict[str, BM25] = {}
        for name in args.sets:
            queries = load_qrels(DATA / f"{name}.jsonl")[: args.max_queries]
            project = project_of(name)
            started = time.perf_counter()
            report = await evaluate(runtime.searcher, runtime.embedder.model_id, queries, [project], modes)
            scores = report["modes"]
            per_query = report["reciprocal_ranks"]
            if not args.no_bm25:
                if project not in references:
                    references[project] = await BM25(await runtime.store.project(project)).load()
                bm25 = ModeScores("bm25")
                for query in queries:
                    hits = await references[project].search(query.text)
                    bm25.add(query, [hit.to_json() for hit in hits], 0.0)
                scores["bm25"] = bm25.summary()
                per_query["bm25"] = bm25.reciprocal_ranks
            compared = {}
            if report["hybrid_vs_best_half"]:
                compared["hybrid_vs_best_half"] = report["hybrid_vs_best_half"]
            if "lexical" in per_query and "bm25" in per_query:
                compared["lexical_vs_bm25"] = paired_difference(per_query["lexical"], per_query["bm25"])
            out[name] = {
                "role": role_of(name),
                "kind": kind_of(name),
                "project": project, "corpus": str(args.sets_dir / project / "corpus"),
                "files": indexed[project]["files"], "chunks": indexed[project]["chunks"],
                "vector_type": (await (await runtime.store.project(project)).space()).type,
                "queries": len(queries), "seconds": round(time.perf_counter() - started, 1),
                "modes": scores,
                "hybrid_beats_both": ("hybrid" in scores and all(
                    scores["hybrid"]["mrr@10"] > s["mrr@10"]
                    for m, s in scores.items() if m in ("lexical", "semantic"))),
                "compared": compared,
                "worst": report["worst"][: args.worst],
                "reciprocal_ranks": per_query,
            }
        embedding = await query_embedding_seconds(runtime, args.sets, args.max_queries)
    ranking = "before issue 14" if args.baseline else "current"
    return {"modes": modes, "goal_mrr@10": GOAL_MRR, "ranking": ranking,
            "query_embedding_ms": summary(embedding), "sets": out}


async def query_embedding_seconds(runtime: Runtime, sets: list[str], limit: int | None) -> list[float]:
    """Wall time of embedding each query of `sets` alone with the running embedder (what a
    search adds to its SQL and fusion; search_bench.py and million_bench.py exclude it),
    after a warm-up of 5 queries."""
    texts = [q.text for name in sets for q in load_qrels(DATA / f"{name}.jsonl")[:limit]]
    for warm in texts[:5]:
        await runtime.embedder.embed_query(warm)
    seconds = []
    for query in texts:
        started = time.perf_counter()
        await runtime.embedder.embed_query(query)
        seconds.append(time.perf_counter() - started)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", choices=all_sets(), default=all_sets(),
                        help="labelled sets of bench/data to evaluate (default: all)")
    parser.add_argument("--sets-dir", type=Path, default=Path("/tmp/cq-bench"),
                        help="where bench/make_sets.sh wrote the corpora (its OUT; default /tmp/cq-bench)")
    parser.add_argument("--home", default="eval",
                        help="shared bench home under $CQ_BENCH_DIR/homes (reused; default: eval)")
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    parser.add_argument("--max-queries", type=positive, default=None,
                        help="only the first N queries of each set (smoke tests; default all)")
    parser.add_argument("--worst", type=int, default=10, help="worst queries kept per set (default 10)")
    parser.add_argument("--baseline", action="store_true",
                        help="rank as shipped before issue 14 (the 'before' figures)")
    parser.add_argument("--no-index", action="store_true",
                        help="evaluate the home as it is (every chunk must have its vector)")
    parser.add_argument("--no-bm25", action="store_true", help="skip the reference BM25 (bench/bm25.py)")
    parser.add_argument("--vector-type", choices=("halfvec", "vector"),
                        help="store the home's vectors as this type first (the same model's vectors, "
                             "converted from the embedding cache; default: as they are)")
    parser.add_argument("--results", default="eval",
                        help="write bench/results/<this>.json (default eval; e.g. eval-before)")
    args = parser.parse_args()
    configure_logging("warning")  # warnings and errors only, on stderr
    if args.baseline:
        use_baseline()
    with codequarry_home(args.home, fresh=False) as home:
        if args.vector_type:
            set_vector_type(home / "config.toml", args.vector_type)
        figures = anyio.run(bench, args, home / "config.toml")
    parts = []
    for name, s in figures["sets"].items():
        shown = [m for m in [*figures["modes"], "bm25"] if m in s["modes"]]
        mrr = "/".join(f"{s['modes'][m]['mrr@10']:.3f}" for m in shown)
        versus = s["compared"].get("hybrid_vs_best_half")
        margin = (f" hybrid-{versus['best_half'][:3]} {versus['mean']:+.3f} "
                  f"[{versus['ci'][0]:+.3f},{versus['ci'][1]:+.3f}]") if versus else ""
        parts.append(f"{name} ({s['role']}, {s['queries']} q) {'/'.join(shown)} {mrr}{margin}")
    embedding = figures["query_embedding_ms"]
    line = ("eval MRR@10: " + " | ".join(parts)
            + f" | query embedding p50/p95 {embedding['p50']}/{embedding['p95']} ms")
    emit(args.results, figures, line)


if __name__ == "__main__":
    main()
