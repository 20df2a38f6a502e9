"""Cold index throughput against the raw embedder, time to the first lexical hit, the
unchanged re-index against `git status`, and search latency, per corpus size.

    python bench/index_bench.py [small medium large] [--end-to-end]

For each corpus: a fresh store; the embedder is loaded first (not timed); then the
pipeline runs from the first scan to the last vector. The raw embedder then embeds a
random sample (up to 2,000) of the same chunk texts in the same process, three times
(median): the ratio of
the two throughputs is the pipeline's efficiency (1.0 = the embedder never waits).

`--end-to-end` adds, per corpus, what a person sees: a cold `codequarry index TREE`
(subprocess, no daemon, a fresh home: PostgreSQL's initdb and start, the model's load,
chunking, embedding, the vector index) against embedding every chunk text of that
index once in this process (model loaded beforehand), right after it.
"""

from __future__ import annotations

import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from codequarry.chunking import embedding_text
from codequarry.config import add_project, load_settings
from codequarry.runtime import open_runtime
from codequarry.search import SearchRequest
from common import codequarry_home, corpus, emit, git_status_seconds, summary

RAW_SAMPLE = 2000
RAW_REPEATS = 3
RECONCILE_REPEATS = 5
QUERIES = {
    "small": ["how are routes matched to a request path", "send a file as a streaming response",
              "parse form data from the request body", "middleware that handles CORS preflight"],
    "medium": ["draw a progress bar", "how wide is the terminal", "render markdown in the console",
               "highlight source code with a theme"],
    "large": ["sort a list with a comparator", "hash map resize when the table is full",
              "parse a date from a string", "iterate over the elements in reverse order"],
}


async def bench_corpus(name: str) -> dict[str, Any]:
    repo = corpus(name)
    with codequarry_home(f"index-{name}") as home:
        add_project(home / "config.toml", name, repo)
        settings = load_settings()
        async with open_runtime(settings) as runtime:
            await runtime.embedder.start()
            indexer = runtime.indexer
            project = await indexer.add_project(settings.config.project(name))
            started = time.perf_counter()
            first_hit = lexically_complete = None
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(indexer.run)
                tasks.start_soon(indexer.reconcile, name)
                probe = SearchRequest(QUERIES[name][0], (name,), "lexical", limit=1)
                while not (indexer.idle() and indexer.embedding_settled()
                           and time.perf_counter() - started > 1):
                    await anyio.sleep(0.1)
                    if first_hit is None and (await runtime.searcher.search(probe, None)).results:
                        first_hit = time.perf_counter() - started
                    if lexically_complete is None and indexer.progress.files_total and indexer.idle():
                        lexically_complete = time.perf_counter() - started
                tasks.cancel_scope.cancel()
            seconds = time.perf_counter() - started
            counts = await project.store.counts()
            chunks, embedded = await project.store.vector_counts()
            texts = await _chunk_texts(project.store)
            sample = random.Random(0).sample(texts, min(RAW_SAMPLE, len(texts)))
            raw_rates = []
            for _ in range(RAW_REPEATS):  # this VM's speed drifts by ~10%: take the median
                raw_started = time.perf_counter()
                await runtime.embedder.embed_documents(sample)
                raw_rates.append(len(sample) / (time.perf_counter() - raw_started))
            raw_per_second = statistics.median(raw_rates)
            busy = await _embedding_seconds(runtime.store) / seconds
            await project.store.analyze()
            queued = await indexer.reconcile(name)  # warm-up; nothing changed, so 0 queued
            reconcile_runs = []
            for _ in range(RECONCILE_REPEATS):
                unchanged_started = time.perf_counter()
                queued += await indexer.reconcile(name)
                reconcile_runs.append(time.perf_counter() - unchanged_started)
            reconcile_seconds = statistics.median(reconcile_runs)
            latencies = []
            for _ in range(5):
                for query in QUERIES[name]:
                    t = time.perf_counter()
                    await runtime.searcher.search(SearchRequest(query, (name,)), indexer.model_id)
                    latencies.append(time.perf_counter() - t)
        cli = _time_cli_index(repo, name)
        git = git_status_seconds(repo)
    pipeline_per_second = chunks / seconds
    return {
        "corpus": name, "files": counts.files, "skipped": counts.skipped_files, "chunks": chunks,
        "embedded": embedded, "cold_index_seconds": round(seconds, 1),
        "files_per_second": round(counts.files / seconds, 2),
        "chunks_per_second": round(pipeline_per_second, 2),
        "raw_embedder_chunks_per_second": round(raw_per_second, 2), "raw_sample": len(sample),
        "raw_embedder_runs": [round(r, 2) for r in raw_rates],
        "throughput_ratio": round(pipeline_per_second / raw_per_second, 3),
        "embedder_busy_fraction": round(busy, 3),
        "first_lexical_hit_seconds": round(first_hit or float("nan"), 2),
        "lexically_complete_seconds": round(lexically_complete or float("nan"), 2),
        "unchanged_reconcile_seconds": round(reconcile_seconds, 4), "unchanged_queued": queued,
        "unchanged_reconcile_runs": [round(r, 4) for r in reconcile_runs],
        "unchanged_cli_index_seconds": round(cli, 2), "git_status_seconds": round(git, 4),
        "reconcile_vs_git_status": round(reconcile_seconds / git, 2),
        "search_hybrid_ms": summary(latencies),
    }


async def _chunk_texts(store: Any) -> list[str]:
    from sqlalchemy import text

    from codequarry.models import Chunk

    async with store.engine.connect() as conn:
        rows = await conn.execute(text(
            f"SELECT language, symbol, kind, content FROM {store.s}.chunks"))
        return [embedding_text(Chunk(0, 0, r.content, r.language, r.symbol, r.kind)) for r in rows]


async def _embedding_seconds(store: Any) -> float:
    """Time spent inside the embedder during the index, from embedding_metadata."""
    from sqlalchemy import text

    async with store.engine.connect() as conn:
        return float((await conn.execute(text(
            "SELECT coalesce(sum(seconds), 0) FROM codequarry.embedding_metadata"))).scalar())


def _time_cli_index(repo: Path, name: str) -> float:
    """Wall time of `codequarry index` on the unchanged repo (no daemon): process start,
    embedded PostgreSQL start, stat scan, nothing embedded."""
    executable = Path(sys.executable).with_name("codequarry")
    started = time.perf_counter()
    subprocess.run([str(executable), "index", str(repo), "--project", name], check=True,
                   capture_output=True)
    return time.perf_counter() - started


def end_to_end(name: str) -> dict[str, Any]:
    """A cold `codequarry index` subprocess in a fresh home against one raw embedding of
    all its chunk texts, same run (see the module doc)."""
    repo = corpus(name)
    with codequarry_home(f"e2e-{name}") as home:
        add_project(home / "config.toml", name, repo)
        executable = Path(sys.executable).with_name("codequarry")
        started = time.perf_counter()
        subprocess.run([str(executable), "index", str(repo), "--project", name], check=True,
                       capture_output=True)
        cli = time.perf_counter() - started

        async def embed_once() -> tuple[int, float]:
            async with open_runtime(load_settings()) as runtime:
                await runtime.embedder.start()
                texts = await _chunk_texts(await runtime.store.project(name))
                began = time.perf_counter()
                await runtime.embedder.embed_documents(texts)
                return len(texts), time.perf_counter() - began

        chunks, embed = anyio.run(embed_once)
    return {"chunks": chunks, "cold_cli_index_seconds": round(cli, 2),
            "embed_all_once_seconds": round(embed, 2), "cli_vs_embedding": round(cli / embed, 3)}


def main() -> None:
    names = [a for a in sys.argv[1:] if not a.startswith("--")] or ["small", "medium", "large"]
    results = [anyio.run(bench_corpus, name) for name in names]
    if "--end-to-end" in sys.argv:
        for result in results:
            result["end_to_end"] = end_to_end(result["corpus"])
    line = " | ".join(
        f"{r['corpus']}: {r['chunks']} chunks {r['chunks_per_second']}/s "
        f"raw {r['raw_embedder_chunks_per_second']}/s "
        f"ratio {r['throughput_ratio']} first-hit {r['first_lexical_hit_seconds']}s re-index "
        f"{r['unchanged_reconcile_seconds']}s vs git {r['git_status_seconds']}s"
        + (f"; cold CLI index {r['end_to_end']['cli_vs_embedding']}x embedding once"
           if "end_to_end" in r else "")
        for r in results)
    emit("index", {"corpora": results}, line)


if __name__ == "__main__":
    main()
