"""Agent answers: what a coding agent gets from search_code and find_symbol.

For the hand-written agent questions (bench/data/agent-questions/*.jsonl) over three code
bases (starlette: Python, java.util.concurrent.locks: Java, npm's lib/: JavaScript), at
limit 10 and default detail: unit hit@1, hit@3, MRR@10, distinct units in the top 10 and
tokens per answer (characters / 4 of the text content an MCP client's model reads). Then
find_symbol exact-name hit@1 on 50 random definitions (seed 0).

Runs against whichever codequarry is importable, so the same script measures main
(PYTHONPATH=/work/main/daemon) and a branch; code without the answers module is
measured as it answered before: the JSON of search_code as text content.

    .venv/bin/python bench/agent_bench.py labels          # .src -> .jsonl (spans by tree-sitter)
    .venv/bin/python bench/agent_bench.py run --tag after  # index (reused) + measure
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from agent_defs import definitions
from codequarry.config import add_project, load_settings
from codequarry.logs import configure_logging
from codequarry.runtime import open_runtime
from codequarry.search import SearchRequest
from common import codequarry_home
from search_bench import index_projects

DATA = Path(__file__).resolve().parent / "data" / "agent-questions"
CORPORA = Path("/tmp/cq-agent/corpora")
PROJECTS = ("starlette", "java", "npm")
SYMBOL_SAMPLE = 50


def build_corpora(root: Path) -> None:
    """starlette from this venv, java.util.concurrent.locks from the JDK, npm's lib/."""
    import shutil
    import sysconfig
    import zipfile

    if all((root / p / ".git").exists() for p in PROJECTS):
        return
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    site = Path(sysconfig.get_paths()["purelib"])
    shutil.copytree(site / "starlette", root / "starlette",
                    ignore=shutil.ignore_patterns("__pycache__"))
    zip_path = next(Path("/usr/lib/jvm").glob("temurin-25*/lib/src.zip"))
    with zipfile.ZipFile(zip_path) as zipped:
        for member in zipped.namelist():
            if member.startswith("java.base/java/util/concurrent/locks/") and member.endswith(".java"):
                out = root / "java" / member[len("java.base/"):]
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(zipped.read(member))
    shutil.copytree("/usr/lib/node_modules/npm/lib", root / "npm" / "lib")
    for project in PROJECTS:
        git = ["git", "-C", str(root / project), "-c", "user.email=b@b", "-c", "user.name=b"]
        subprocess.run([*git, "init", "-q"], check=True)
        subprocess.run([*git, "add", "-A"], check=True)
        subprocess.run([*git, "commit", "-qm", "corpus"], check=True)


def make_labels(root: Path) -> None:
    """`question|path|qualified name[;path|name...]` lines -> JSONL with spans."""
    for project in PROJECTS:
        spans: dict[tuple[str, str], list[tuple[int, int]]] = {}
        for path, name, _kind, start, end in definitions(root / project):
            spans.setdefault((path, name), []).append((start, end))
        out = []
        for number, line in enumerate((DATA / f"{project}.src").read_text().splitlines(), 1):
            question, _, rest = line.partition("|")
            relevant = []
            for label in rest.split(";"):
                path, name = label.split("|")
                found = spans.get((path, name))
                if not found:
                    raise SystemExit(f"{project}.src:{number}: no definition {name} in {path}")
                relevant += [{"path": path, "start_line": s, "end_line": e, "symbol": name}
                             for s, e in found]
            out.append(json.dumps({"id": f"{project}-{number:02d}", "project": project,
                                   "query": question, "relevant": relevant}))
        (DATA / f"{project}.jsonl").write_text("\n".join(out) + "\n")
        print(f"{project}: {len(out)} questions")


def answer_text(answer: dict[str, Any]) -> str:
    """The text content an MCP client's model reads for this answer."""
    try:
        from codequarry.answer_text import render_text  # compact text (issue 12)
    except ImportError:  # before it: FastMCP serialised the returned dict as compact JSON
        return json.dumps(answer, separators=(",", ":"), ensure_ascii=False)
    return render_text(answer)


class Units:
    """The innermost definition containing a span: what counts as one unit."""

    def __init__(self, root: Path, project: str) -> None:
        self.by_path: dict[str, list[tuple[int, int]]] = {}
        for path, _name, _kind, start, end in definitions(root / project):
            self.by_path.setdefault(path, []).append((start, end))

    def of(self, path: str, start: int, end: int) -> tuple[str, int, int]:
        inside = [(s, e) for s, e in self.by_path.get(path, []) if s <= start and end <= e]
        if not inside:
            return (path, start, end)
        s, e = min(inside, key=lambda span: span[1] - span[0])
        return (path, s, e)


def hits_label(result: dict[str, Any], relevant: list[dict[str, Any]]) -> bool:
    """A result answers when it lies inside a labelled unit or contains one."""
    for label in relevant:
        if result["path"] != label["path"]:
            continue
        inside = label["start_line"] <= result["start_line"] and result["end_line"] <= label["end_line"]
        contains = result["start_line"] <= label["start_line"] and label["end_line"] <= result["end_line"]
        if inside or contains:
            return True
    return False


async def measure(root: Path) -> dict[str, Any]:
    settings = load_settings()
    out: dict[str, Any] = {}
    async with open_runtime(settings) as runtime:
        await runtime.embedder.start()
        indexed = await index_projects(runtime, list(PROJECTS))
        model_id = runtime.embedder.model_id
        per_set: dict[str, Any] = {}
        totals: dict[str, list[float]] = {"hit@1": [], "hit@3": [], "mrr@10": [], "distinct": [],
                                          "tokens": []}
        for project in PROJECTS:
            units = Units(root, project)
            questions = [json.loads(line) for line in (DATA / f"{project}.jsonl").read_text().splitlines()]
            figures: dict[str, list[float]] = {key: [] for key in totals}
            firsts: dict[str, int | None] = {}
            for q in questions:
                request = SearchRequest(q["query"], (project,), "hybrid", (), None, 10)
                answer = (await runtime.searcher.search(request, model_id)).to_json()
                results = answer["results"]
                ranks = [i for i, r in enumerate(results, 1) if hits_label(r, q["relevant"])]
                first = ranks[0] if ranks else None
                firsts[q["id"]] = first
                figures["hit@1"].append(1.0 if first == 1 else 0.0)
                figures["hit@3"].append(1.0 if first and first <= 3 else 0.0)
                figures["mrr@10"].append(1.0 / first if first else 0.0)
                figures["distinct"].append(len({units.of(r["path"], r["start_line"], r["end_line"])
                                                for r in results}))
                figures["tokens"].append(len(answer_text(answer)) / 4)
            per_set[project] = {k: round(sum(v) / len(v), 3) for k, v in figures.items()} | {
                "questions": len(questions), "chunks": indexed[project]["chunks"], "first_hit": firsts}
            for key, values in figures.items():
                totals[key].extend(values)
        out["search"] = {k: round(sum(v) / len(v), 3) for k, v in totals.items()} | {
            "questions": len(totals["hit@1"])}
        out["sets"] = per_set
        out["find_symbol"] = await symbol_hits(runtime, root, model_id)
    return out


async def symbol_hits(runtime: Any, root: Path, model_id: str | None) -> dict[str, Any]:
    """find_symbol hit@1 on 50 random named definitions (seed 0), asked by qualified name
    ("Cache.exec", what an agent copies from code) and by bare name ("exec", often shared
    by many definitions). Main has no find_symbol: there the proxy is search_code(name) in
    lexical mode."""
    pool = [(project, *row) for project in PROJECTS for row in definitions(root / project)]
    sample = random.Random(0).sample(pool, SYMBOL_SAMPLE)
    try:
        from codequarry.code_tools import CodeTools
        tools: Any = CodeTools(runtime.store, runtime.settings.config.projects)
        how = "find_symbol"
    except ImportError:
        tools, how = None, "search_code lexical (no find_symbol)"
    out: dict[str, Any] = {"how": how, "sample": SYMBOL_SAMPLE}
    for label, qualified in (("qualified", True), ("bare", False)):
        hit, misses = 0, []
        for project, path, name, _kind, start, end in sample:
            asked = name if qualified else name.rsplit(".", 1)[-1]
            if tools is not None:
                found = (await tools.find_symbol(asked, None, [project], 10))["definitions"]
                top = found[0] if found else None
            else:
                request = SearchRequest(asked, (project,), "lexical", (), None, 10)
                results = (await runtime.searcher.search(request, model_id)).to_json()["results"]
                top = results[0] if results else None
            if top and top["path"] == path and top["start_line"] <= end and start <= top["end_line"]:
                hit += 1
            else:
                misses.append(f"{project}:{path}:{start} {name}")
        out[f"hit@1_{label}"] = round(hit / SYMBOL_SAMPLE, 3)
        out[f"misses_{label}"] = misses
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=["labels", "run"])
    parser.add_argument("--corpora", type=Path, default=CORPORA)
    parser.add_argument("--tag", default="run", help="name of this measurement in the output")
    parser.add_argument("--home", default="agent", help="bench home under $CQ_BENCH_DIR/homes (reused)")
    args = parser.parse_args()
    build_corpora(args.corpora)
    if args.action == "labels":
        make_labels(args.corpora)
        return
    configure_logging("warning")
    with codequarry_home(args.home, fresh=False) as home:
        config = home / "config.toml"
        for project in PROJECTS:
            add_project(config, project, args.corpora / project)
        started = time.perf_counter()
        figures = anyio.run(measure, args.corpora)
    figures["seconds"] = round(time.perf_counter() - started, 1)
    s = figures["search"]
    print(json.dumps({"tag": args.tag, **figures}, indent=2))
    print(f"agent[{args.tag}] hit@1 {s['hit@1']:.3f} hit@3 {s['hit@3']:.3f} MRR@10 {s['mrr@10']:.3f} "
          f"distinct/10 {s['distinct']:.2f} tokens/answer {s['tokens']:.0f} "
          f"{figures['find_symbol']['how']} hit@1 qualified {figures['find_symbol']['hit@1_qualified']:.2f} "
          f"bare {figures['find_symbol']['hit@1_bare']:.2f}",
          file=sys.stderr)


if __name__ == "__main__":
    main()
