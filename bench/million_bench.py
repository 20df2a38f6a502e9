"""A workspace of a million chunks (issue 13, behaviour 5): hybrid search latency with and
without a language + path filter, PostgreSQL size on disk and in memory, and build time,
at 100k, 300k and 1M chunks, with all chunks in 1 project and spread over 100 projects.

    python bench/million_bench.py [--steps 100000,300000,1000000] [--layouts one,many]
                                  [--corpus huge] [--sample 2000] [--queries 42] [--repeat 3]
                                  [--search-only]

How the workspace is made (nothing is generated but paths and vector noise):

- Chunks: the real files of a corpus (default `huge`: numpy + sqlalchemy + fastmcp +
  pydantic, ~100k chunks) are chunked by the product's Chunker once; copy k of a file
  lives at `copy<k>/<path>` with the same content, so full-text statistics are those of
  a codebase that vendors its dependencies many times over (a realistic monorepo shape).
  Each copy's chunks get their own content hash (`<hash>:<k>`), hence their own vector.
- Vectors: `--sample` distinct chunk texts are embedded with the real local model (timed
  apart); every chunk's vector is the vector of a sampled chunk (chosen by a hash of its
  content hash) plus Gaussian noise (sigma 0.05 per dimension, then renormalised: cosine
  ~0.8-0.9 to its source), so the HNSW graph sees clustered, model-shaped data.
- Everything is written through the product's API, as the indexer writes it:
  `Store.ensure_project`, `ProjectStore.set_model`, `Store.save_vectors` (into the shared
  embedding cache), `ProjectStore.apply(FileUpdate...)` (which takes each chunk's vector
  from that cache, as for a chunk seen before), then `ProjectStore.finish_vectors` (the
  HNSW index, built once the backlog is embedded, as the daemon does; part of the build
  time) and `ProjectStore.analyze` -- no SQL on table names, so the benchmark follows the
  store's layout when it changes.
- Layouts: `one` = project `mono` holds every chunk; `many` = projects `p000`..`p099`
  share them evenly (a search without --project visits all of them).

At each step (cumulative: the workspace grows from one step to the next) it measures:
build seconds and chunks/s for that step; hybrid and hybrid + filter (`--language python
--path 'copy0*/**'`, the share it matches is reported) p50/p95 over `--queries` queries x
`--repeat` passes, excluding the query embedding (the product's Searcher with the query
vectors computed beforehand, as search_bench.py does); the database size on disk
(pg_database_size) and the PostgreSQL processes' resident memory (sum of USS) after the
searches. Each layout uses its own home (`$CQ_BENCH_DIR/homes/million-<layout>`, fresh).
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import numpy as np
from sqlalchemy import text

from codequarry.chunking import Chunker, search_text
from codequarry.config import load_settings
from codequarry.embedding import Embedder
from codequarry.logs import configure_logging
from codequarry.models import Chunk, FileUpdate
from codequarry.runtime import open_runtime
from codequarry.search import Searcher, SearchRequest
from codequarry.store.db import Store
from codequarry.store.project import ProjectStore
from common import CORPORA, codequarry_home, corpus, emit, postgres_cpu_seconds, summary
from search_bench import QUERIES, PrecomputedQueries, embed_queries

TARGET_P95_MS = 50.0
NOISE_SIGMA = 0.05
FILES_PER_APPLY = 200


def load_files(tree: Path) -> list[tuple[str, str, list[Chunk]]]:
    """(path, language, chunks) of every text file of the corpus, chunked by the product."""
    chunker = Chunker()
    out = []
    for path in sorted(tree.rglob("*")):
        if not path.is_file() or ".git" in path.parts:
            continue
        try:
            content = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        rel = path.relative_to(tree).as_posix()
        language, chunks = chunker.chunk_file(rel, content)
        if chunks:
            out.append((rel, language, chunks))
    return out


def copy_update(rel: str, language: str, chunks: list[Chunk], copy: int) -> FileUpdate:
    """Copy `copy` of a file: its own path and content hashes, the same text."""
    path = f"copy{copy:03d}/{rel}"
    renamed = tuple(dataclasses.replace(c, content_hash=f"{c.content_hash}:{copy}") for c in chunks)
    digest = hashlib.blake2b(f"{rel}:{copy}".encode(), digest_size=16).hexdigest()
    return FileUpdate(path=path, size=sum(len(c.content) for c in chunks), mtime_ns=0,
                      content_hash=digest, language=language, chunks=renamed,
                      search_texts=tuple(search_text(path, c) for c in renamed))


def perturbed(sample: np.ndarray, hashes: Sequence[str], rng: np.random.Generator) -> dict[str, Any]:
    """A vector per hash: a sampled model vector (picked by the hash) plus noise, unit length."""
    picks = [int(hashlib.blake2b(h.encode(), digest_size=4).hexdigest(), 16) % len(sample) for h in hashes]
    vectors = sample[picks] + rng.normal(0.0, NOISE_SIGMA, (len(picks), sample.shape[1])).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return dict(zip(hashes, vectors.astype(np.float32), strict=True))


class Workspace:
    """Grows a workspace chunk by chunk through the Store API."""

    def __init__(self, store: Store, embedder: Embedder, files: list[tuple[str, str, list[Chunk]]],
                 sample: np.ndarray, projects: list[str], root: Path) -> None:
        self.store, self.embedder, self.files, self.sample = store, embedder, files, sample
        self.project_ids = projects
        self.root = root
        self.stores: dict[str, ProjectStore] = {}
        self.chunks = 0
        self.next_file = 0  # position in the endless sequence copy0 files, copy1 files, ...
        self.rng = np.random.default_rng(13)

    async def open(self) -> None:
        for project in self.project_ids:
            store = await self.store.ensure_project(project, str(self.root / project))
            await store.set_model(self.embedder.model_id, self.embedder.dims)
            self.stores[project] = store

    async def grow_to(self, target: int) -> None:
        batch: list[FileUpdate] = []
        turn = 0
        while self.chunks < target:
            rel, language, chunks = self.files[self.next_file % len(self.files)]
            copy = self.next_file // len(self.files)
            self.next_file += 1
            batch.append(copy_update(rel, language, chunks, copy))
            self.chunks += len(chunks)
            if len(batch) >= FILES_PER_APPLY or self.chunks >= target:
                project = self.stores[self.project_ids[turn % len(self.project_ids)]]
                turn += 1
                await self._write(project, batch)
                batch = []

    async def _write(self, project: ProjectStore, batch: list[FileUpdate]) -> None:
        """Vectors into the embedding cache first, then the files: apply() takes each chunk's
        vector from the cache as it inserts it (the indexer's path for a known chunk), so
        no chunk row is written twice."""
        model_id = self.embedder.model_id
        hashes = sorted({c.content_hash for update in batch for c in update.chunks})
        await self.store.save_vectors(model_id, perturbed(self.sample, hashes, self.rng), [])
        missing = await project.apply(batch, model_id=model_id)
        if missing:
            raise RuntimeError(f"{len(missing)} chunks found no vector in the cache")

    async def finish(self) -> None:
        """What the daemon does once a project's backlog is embedded: build the HNSW index
        (from then on maintained row by row), then ANALYZE. Without the index, vector
        search scans every vector exactly."""
        for store in self.stores.values():
            await store.finish_vectors()
            await store.analyze()


async def database_figures(store: Store, pgdata: Path) -> dict[str, float]:
    import psutil

    async with store.engine.connect() as conn:
        size = (await conn.execute(text("SELECT pg_database_size(current_database())"))).scalar()
    uss = 0.0
    try:
        postmaster = psutil.Process(int((pgdata / "postmaster.pid").read_text().split()[0]))
        for member in [postmaster, *postmaster.children(recursive=True)]:
            uss += member.memory_full_info().uss
    except (OSError, ValueError, psutil.Error):
        uss = float("nan")
    return {"database_mb": round(int(size or 0) / 2**20, 1), "postgres_uss_mb": round(uss / 2**20, 1)}


async def time_searches(searcher: Searcher, model_id: str, queries: Sequence[str], repeat: int,
                        projects: tuple[str, ...], in_turn: Searcher | None = None,
                        pgdata: Path | None = None) -> dict[str, Any]:
    """p50/p95 of hybrid and hybrid_filtered; with `in_turn` (a Searcher reading each
    project in turn, as before store/fanout.py) also hybrid_in_turn, one pass. CPU ms per
    search of this process (the searcher's Python) and of PostgreSQL (with `pgdata`), per
    variant: robust to a shared machine's load, unlike wall times."""
    variants: dict[str, Any] = {"hybrid": {}, "hybrid_filtered": {"languages": ("python",),
                                                                  "path_glob": "copy0*/**"}}
    times: dict[str, list[float]] = {v: [] for v in [*variants, *(["hybrid_in_turn"] if in_turn else [])]}
    empty = dict.fromkeys(times, 0)
    cpu: dict[str, list[float]] = {v: [0.0, 0.0] for v in times}
    for rep in range(repeat + 1):  # pass 0 warms the caches
        for query in queries:
            runs = [(v, extra, searcher) for v, extra in variants.items()]
            if in_turn is not None and rep <= 1:
                runs.append(("hybrid_in_turn", {}, in_turn))
            for variant, extra, which in runs:
                request = SearchRequest(query, projects, "hybrid", **extra)
                pg_before = postgres_cpu_seconds(pgdata) if pgdata and rep else 0.0
                own_before = time.process_time()
                started = time.perf_counter()
                response = await which.search(request, model_id)
                if rep:
                    times[variant].append(time.perf_counter() - started)
                    cpu[variant][0] += time.process_time() - own_before
                    cpu[variant][1] += postgres_cpu_seconds(pgdata) - pg_before if pgdata else 0.0
                    empty[variant] += not response.results
    return {**{f"{v}_ms": summary(t) for v, t in times.items()}, "empty_results": empty,
            "cpu_ms_per_search": {v: {"python": round(1000 * c[0] / len(times[v]), 2),
                                      "postgres": round(1000 * c[1] / len(times[v]), 2)}
                                  for v, c in cpu.items()}}


async def run_layout(layout: str, steps: list[int], tree: Path, args: argparse.Namespace) -> dict[str, Any]:
    projects = ["mono"] if layout == "one" else [f"p{i:03d}" for i in range(100)]
    out: dict[str, Any] = {"projects": len(projects), "steps": {}}
    with codequarry_home(f"million-{layout}", fresh=not args.search_only) as home:
        settings = load_settings()
        async with open_runtime(settings) as runtime:
            embedder = runtime.embedder
            await embedder.start()
            if args.search_only:
                out["steps"] = await measure_existing(runtime.store, embedder, projects, args,
                                                      settings.pgdata)
                return out
            started = time.perf_counter()
            files = load_files(tree)
            distinct = {c.content_hash: c for _, _, chunks in files for c in chunks}
            out["source"] = {"files": len(files), "chunks": sum(len(c) for _, _, c in files),
                             "chunking_seconds": round(time.perf_counter() - started, 1)}
            from codequarry.chunking import embedding_text

            picked = list(distinct.values())[:: max(1, len(distinct) // args.sample)][: args.sample]
            started = time.perf_counter()
            sample = np.asarray(await embedder.embed_documents([embedding_text(c) for c in picked]),
                                dtype=np.float32)
            out["source"]["sample_embedded"] = len(picked)
            out["source"]["sample_embedding_seconds"] = round(time.perf_counter() - started, 1)
            queries = QUERIES[: args.queries]
            vectors, embedding_times = await embed_queries(embedder, queries, 1)
            out["query_embedding_ms"] = summary(embedding_times)
            workspace = Workspace(runtime.store, embedder, files, sample, projects, home)
            await workspace.open()
            searcher = Searcher(runtime.store, PrecomputedQueries(embedder, vectors))
            # the reference: each project's reads in turn, as before store/fanout.py
            in_turn = (Searcher(runtime.store, PrecomputedQueries(embedder, vectors), combine=False)
                       if args.in_turn and len(projects) > 1 else None)
            for step in steps:
                began = time.perf_counter()
                before = workspace.chunks
                await workspace.grow_to(step)
                await workspace.finish()
                build = time.perf_counter() - began
                figures: dict[str, Any] = {
                    "chunks": workspace.chunks, "build_seconds": round(build, 1),
                    "build_chunks_per_second": round((workspace.chunks - before) / build, 1)}
                figures |= await time_searches(searcher, embedder.model_id, queries, args.repeat, (), in_turn,
                                               settings.pgdata)
                figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
                figures |= await database_figures(runtime.store, settings.pgdata)
                out["steps"][str(step)] = figures
                print(f"million {layout} {step}: {figures}", flush=True)
    return out


async def measure_existing(store: Store, embedder: Embedder, projects: list[str], args: argparse.Namespace,
                           pgdata: Path) -> dict[str, Any]:
    """--search-only: the searches and database figures of the workspace a previous run left
    in the layout's home, at the size it has (after code changes, without the hour of
    building it again)."""
    chunks = sum([(await (await store.project(project)).counts()).chunks for project in projects])
    queries = QUERIES[: args.queries]
    vectors, embedding_times = await embed_queries(embedder, queries, 1)
    searcher = Searcher(store, PrecomputedQueries(embedder, vectors))
    figures: dict[str, Any] = {"chunks": chunks, "query_embedding_ms": summary(embedding_times)}
    figures |= await time_searches(searcher, embedder.model_id, queries, args.repeat, (), None, pgdata)
    figures["load_average"] = [round(x, 2) for x in os.getloadavg()]
    figures |= await database_figures(store, pgdata)
    print(f"million existing {chunks}: {figures}", flush=True)
    return {str(chunks): figures}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", default="100000,300000,1000000",
                        help="cumulative workspace sizes in chunks (default 100000,300000,1000000)")
    parser.add_argument("--layouts", default="one,many", help="one (1 project), many (100 projects)")
    parser.add_argument("--corpus", default="huge", choices=sorted(CORPORA))
    parser.add_argument("--sample", type=int, default=2000, help="chunk texts embedded for real")
    parser.add_argument("--queries", type=int, default=42)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--results", default="million",
                        help="write bench/results/<RESULTS>.json (default million)")
    parser.add_argument("--in-turn", action="store_true",
                        help="also time hybrid reading each project in turn (one pass; many projects only)")
    parser.add_argument("--search-only", action="store_true",
                        help="build nothing: measure the workspace a previous run left in each layout's home")
    args = parser.parse_args()
    configure_logging("warning")
    steps = sorted(int(s) for s in args.steps.split(","))
    tree = corpus(args.corpus)
    results = {layout: anyio.run(run_layout, layout, steps, tree, args)
               for layout in args.layouts.split(",")}
    figures = {"corpus": args.corpus, "description": CORPORA[args.corpus][0], "noise_sigma": NOISE_SIGMA,
               "sample": args.sample, "layouts": results, "target_p95_ms": TARGET_P95_MS}
    parts = []
    for layout, result in results.items():
        for step, f in result["steps"].items():
            build = f", build {f['build_seconds']} s" if "build_seconds" in f else ""
            parts.append(f"{layout}({result['projects']}p) {int(step) // 1000}k: hybrid "
                         f"{f['hybrid_ms']['p50']}/{f['hybrid_ms']['p95']} filtered "
                         f"{f['hybrid_filtered_ms']['p50']}/{f['hybrid_filtered_ms']['p95']} ms, "
                         + (f"in turn {f['hybrid_in_turn_ms']['p50']}/{f['hybrid_in_turn_ms']['p95']} ms, "
                            if "hybrid_in_turn_ms" in f else "") +
                         f"{f['database_mb']} MB{build}")
    emit(args.results, figures, "million: " + "; ".join(parts) + f" (target p95 <= {TARGET_P95_MS:g} ms)")


if __name__ == "__main__":
    main()
