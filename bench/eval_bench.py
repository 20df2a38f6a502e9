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

from codequarry.config import add_project, load_settings
from codequarry.evaluation import evaluate, load_qrels
from codequarry.logs import configure_logging
from codequarry.runtime import open_runtime
from codequarry.search import MODES, Mode
from common import codequarry_home, emit
from search_bench import index_projects, positive

DATA = Path(__file__).resolve().parent / "data"
QUESTIONS = "questions-"
GOAL_MRR = 0.6  # issue 6: on natural-language questions about code


def all_sets() -> list[str]:
    return sorted(path.stem for path in DATA.glob("*.jsonl"))


def project_of(set_name: str) -> str:
    """The project (and corpus directory) a set is evaluated on."""
    return set_name.removeprefix(QUESTIONS)


def role_of(set_name: str) -> str:
    return "tuning" if project_of(set_name).endswith("-tune") else "report"


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


async def bench(args: argparse.Namespace, config_path: Path) -> dict[str, Any]:
    modes: list[Mode] = [m for m in MODES if m in args.modes]
    projects = sorted({project_of(s) for s in args.sets})
    for project in projects:
        add_project(config_path, project, prepare_corpus(args.sets_dir, project))
    settings = load_settings()
    out: dict[str, Any] = {}
    async with open_runtime(settings) as runtime:
        await runtime.embedder.start()
        indexed = await index_projects(runtime, projects)
        for name in args.sets:
            queries = load_qrels(DATA / f"{name}.jsonl")[: args.max_queries]
            project = project_of(name)
            started = time.perf_counter()
            report = await evaluate(runtime.searcher, runtime.embedder.model_id, queries, [project], modes)
            scores = report["modes"]
            out[name] = {
                "role": role_of(name),
                "kind": "questions" if name.startswith(QUESTIONS) else "docstrings",
                "project": project, "corpus": str(args.sets_dir / project / "corpus"),
                "files": indexed[project]["files"], "chunks": indexed[project]["chunks"],
                "queries": len(queries), "seconds": round(time.perf_counter() - started, 1),
                "modes": scores,
                "hybrid_beats_both": ("hybrid" in scores and all(
                    scores["hybrid"]["mrr@10"] > s["mrr@10"] for m, s in scores.items() if m != "hybrid")),
                "worst": report["worst"][: args.worst],
            }
    return {"modes": modes, "goal_mrr@10": GOAL_MRR, "sets": out}


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
    args = parser.parse_args()
    configure_logging("warning")  # warnings and errors only, on stderr
    with codequarry_home(args.home, fresh=False) as home:
        figures = anyio.run(bench, args, home / "config.toml")
    parts = []
    for name, s in figures["sets"].items():
        mrr = "/".join(f"{s['modes'][m]['mrr@10']:.3f}" for m in figures["modes"])
        parts.append(f"{name} ({s['role']}, {s['queries']} q) {mrr}")
    line = f"eval MRR@10 {'/'.join(figures['modes'])}: " + " | ".join(parts)
    emit("eval", figures, line)


if __name__ == "__main__":
    main()
