"""Measure, on the asked tuning sets only, what a chunk's vector should be made of
(issue 14, behaviour 3): fragment vectors as indexed today, one vector per whole unit
(function / method / class, its text cut by the model at its token limit), both in one
list (fragments and units ranked by cosine; each hits when it overlaps the answer), or
"unit max": units ranked by the max of the unit's own vector and its fragments' vectors
(fragments outside every definition ranked as themselves). Units are leaf definitions
only (functions and methods with no definition inside): a class spans all its methods
and would count as a hit for any answer inside it. Brute-force cosine in numpy
over the vectors already stored in the `eval` home (fragments) and unit vectors computed
here with the local model (cached in /tmp/cq-bench/unit-vectors-<code>.npy).

    python bench/embed_variants.py [--sets asked-java-tune asked-python-tune]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from sqlalchemy import text

from codequarry.chunking.words import split_identifier
from codequarry.config import load_settings
from codequarry.embedding import create_embedder
from codequarry.evaluation import ModeScores, bootstrap_interval, load_qrels, paired_difference
from codequarry.logs import configure_logging
from codequarry.store.db import Store
from common import codequarry_home
from eval_bench import DATA, project_of
from make_asked import corpus_dir, definitions

K = 10


def unit_text(kind_name: str, qual: str, lines: list[str]) -> str:
    """Header (qualified name in words) and the unit's code, as embedding_text does."""
    words = " ".join(split_identifier(qual))
    return f"{kind_name} {qual} ({words})\n" + "\n".join(lines)


async def run(args: argparse.Namespace) -> dict[str, Any]:
    settings = load_settings()
    store = await Store.open(settings)
    embedder = create_embedder(settings.config.embedder)
    await embedder.start()
    out: dict[str, Any] = {}
    try:
        for name in args.sets:
            code = name.split("-")[1]
            project = await store.project(project_of(name))
            async with project.reader.connect() as conn:
                rows = (await conn.execute(text(
                    f"SELECT path, start_line, end_line, embedding FROM {project.s}.chunks "
                    "WHERE embedding IS NOT NULL ORDER BY id"))).all()
            fragments = [(r.path, r.start_line, r.end_line) for r in rows]
            fragment_vectors = np.asarray([np.asarray(
                r.embedding.to_numpy() if hasattr(r.embedding, "to_numpy") else r.embedding,
                dtype=np.float32) for r in rows])
            root = corpus_dir(code)
            units, texts = [], []
            cache: dict[str, list[str]] = {}
            for path, qual, start, end, _ in definitions(code):
                lines = cache.setdefault(path, (root / path).read_text(errors="replace").split("\n"))
                units.append((path, start, end))
                texts.append(unit_text("definition", qual, lines[start - 1:end]))
            cached = Path(f"/tmp/cq-bench/unit-vectors-{code}.npy")
            if cached.exists():
                unit_vectors = np.load(cached)
            else:
                parts = []
                for first in range(0, len(texts), 64):
                    parts.append(np.asarray(await embedder.embed_documents(texts[first:first + 64])))
                unit_vectors = np.concatenate(parts)
                np.save(cached, unit_vectors)
            # only leaf definitions (no definition inside them) are units: a class spans
            # all its methods, so ranking it would "hit" any answer inside the class
            leaves = [u for u, (path, start, end) in enumerate(units) if not any(
                o != u and p == path and start <= s and e <= end for o, (p, s, e) in enumerate(units)
                if p == path)]
            units = [units[u] for u in leaves]
            unit_vectors = unit_vectors[leaves]
            # each fragment's innermost enclosing unit (None: outside every leaf definition)
            by_path: dict[str, list[int]] = {}
            for index, (path, _, _) in enumerate(units):
                by_path.setdefault(path, []).append(index)
            owner: list[int | None] = []
            for path, start, end in fragments:
                inside = [u for u in by_path.get(path, []) if units[u][1] <= start and end <= units[u][2]]
                owner.append(min(inside, key=lambda u: units[u][2] - units[u][1]) if inside else None)
            queries = load_qrels(DATA / f"{name}.jsonl")
            variants: dict[str, ModeScores] = {
                v: ModeScores(v) for v in ("fragments", "units", "both", "unit max")}
            for query in queries:
                q = np.asarray(await embedder.embed_query(query.text), dtype=np.float32)[0]
                f_scores = fragment_vectors @ q
                u_scores = unit_vectors @ q
                pools = {
                    "fragments": [(s, fragments[i]) for i, s in enumerate(f_scores)],
                    "units": [(s, units[i]) for i, s in enumerate(u_scores)],
                }
                pools["both"] = pools["fragments"] + pools["units"]
                best = {u: float(s) for u, s in enumerate(u_scores)}
                orphans = []
                for i, s in enumerate(f_scores):
                    u = owner[i]
                    if u is None:
                        orphans.append((float(s), fragments[i]))
                    else:
                        best[u] = max(best[u], float(s))
                pools["unit max"] = [(s, units[u]) for u, s in best.items()] + orphans
                for variant, pool in pools.items():
                    top = sorted(pool, key=lambda p: -p[0])[:K]
                    results = [{"path": p, "start_line": s, "end_line": e} for _, (p, s, e) in top]
                    variants[variant].add(query, results, 0.0)
            base = variants["fragments"].reciprocal_ranks
            out[name] = {v: {"mrr@10": s.summary()["mrr@10"], "ci": bootstrap_interval(s.reciprocal_ranks),
                             "vs_fragments": paired_difference(s.reciprocal_ranks, base)}
                         for v, s in variants.items()}
            out[name]["units"]["count"] = len(units)
            print(name, json.dumps(out[name]), flush=True)
    finally:
        await embedder.aclose()
        await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sets", nargs="+", default=["asked-java-tune", "asked-python-tune"],
                        choices=["asked-java-tune", "asked-python-tune", "asked-java2-tune"])
    parser.add_argument("--home", default="eval")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "embed_variants.json")
    args = parser.parse_args()
    configure_logging("warning")
    with codequarry_home(args.home, fresh=False):
        out = anyio.run(run, args)
    args.out.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
