"""What the recount at a project's start costs (ProjectStore.recount, called by
Indexer.add_project): the counters checked against count(*) of the chunks and of the
vectors, under the project's advisory lock, at a few sizes.

    python bench/recount_bench.py [--steps 10000,100000] [--repeat 7]

The workspace is written through the product's API (Store.ensure_project, set_model,
save_vectors into the embedding cache, ProjectStore.apply, analyze; no HNSW index, which
count(*) never reads and which, once built, makes every later insert slow):
synthetic Python-like chunks of ~12 lines, random unit vectors of 384 dimensions under a
made-up model id (no model is loaded). At each step it times recount() when the counters
are right (every start) and once when they drifted (a repair), and prints p50/p95/max in ms
with the load average; results in bench/results/recount.json.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from typing import Any

import anyio
import numpy as np
from sqlalchemy import text

from codequarry.chunking import search_text
from codequarry.config import load_settings
from codequarry.models import Chunk, FileUpdate
from codequarry.store.db import Store
from codequarry.store.project import ProjectStore
from common import codequarry_home, emit, summary

MODEL = "bench:recount:384"
DIMS = 384
CHUNKS_PER_FILE = 10
FILES_PER_APPLY = 100


def synthetic_file(number: int) -> FileUpdate:
    path = f"pkg{number // 500:03d}/mod{number:06d}.py"
    chunks = []
    for i in range(CHUNKS_PER_FILE):
        body = "\n".join(f"    value_{number}_{i}_{n} = compute_{n}(item, {n})" for n in range(10))
        content = f"def handler_{number}_{i}(item):\n{body}\n    return value_{number}_{i}_0\n"
        digest = hashlib.blake2b(content.encode(), digest_size=16).hexdigest()
        chunks.append(Chunk(1 + i * 12, 12 + i * 12, content, "python", f"handler_{number}_{i}",
                            "function", digest))
    return FileUpdate(path, sum(len(c.content) for c in chunks), 0,
                      hashlib.blake2b(path.encode(), digest_size=16).hexdigest(), "python",
                      chunks=tuple(chunks), search_texts=tuple(search_text(path, c) for c in chunks))


async def grow(store: Store, project: ProjectStore, files_from: int, files_to: int,
               rng: np.random.Generator) -> None:
    for start in range(files_from, files_to, FILES_PER_APPLY):
        batch = [synthetic_file(n) for n in range(start, min(start + FILES_PER_APPLY, files_to))]
        hashes = [c.content_hash for update in batch for c in update.chunks]
        vectors = rng.normal(size=(len(hashes), DIMS)).astype(np.float32)
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        await store.save_vectors(MODEL, dict(zip(hashes, vectors, strict=True)), [])
        if await project.apply(batch, model_id=MODEL):
            raise RuntimeError("chunks found no vector in the cache")


async def run(steps: list[int], repeat: int) -> dict[str, Any]:
    out: dict[str, Any] = {"steps": {}}
    with codequarry_home("recount"):
        store = await Store.open(load_settings())
        try:
            project = await store.ensure_project("recount", "/nonexistent/recount")
            await project.set_model(MODEL, DIMS)
            rng = np.random.default_rng(7)
            files = 0
            for step in steps:
                target = step // CHUNKS_PER_FILE
                began = time.perf_counter()
                await grow(store, project, files, target, rng)
                files = target
                await project.analyze()
                build = time.perf_counter() - began
                right = []
                for _ in range(repeat):
                    started = time.perf_counter()
                    assert await project.recount() is None
                    right.append(time.perf_counter() - started)
                async with project.engine.begin() as conn:
                    await conn.execute(text(f"UPDATE {project.s}.stats SET chunks = chunks + 3"))
                started = time.perf_counter()
                repaired = await project.recount()
                repair = time.perf_counter() - started
                assert repaired is not None
                assert repaired[1] == (step, step), repaired
                figures = {"chunks": step, "build_seconds": round(build, 1),
                           "recount_ms": summary(right), "repair_ms": round(repair * 1000, 2),
                           "load_average": [round(x, 2) for x in os.getloadavg()]}
                out["steps"][str(step)] = figures
                print(f"recount {step}: {figures}", flush=True)
        finally:
            await store.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", default="10000,100000", help="chunks, cumulative")
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    out = anyio.run(run, steps, args.repeat)
    last = out["steps"][str(steps[-1])]
    emit("recount", out, f"recount at {steps[-1]:,} chunks: p50 {last['recount_ms']['p50']} ms, "
                         f"repair {last['repair_ms']} ms, load {last['load_average']}")


if __name__ == "__main__":
    main()
