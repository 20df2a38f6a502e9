"""Hybrid search latency at ~100k chunks, excluding the query embedding (issue 6 target:
p50 <= 15 ms, p95 <= 50 ms), per mode, with and without a filter.

    python bench/search_bench.py [--corpus huge] [--home search] [--repeat 5] [--queries 42] [--results NAME]

Index: the corpus is a project of a shared, reused home (`codequarry_home(home,
fresh=False)`, also used by mcp_bench.py), indexed in this process with the product
defaults (local model). The first run embeds everything (long: ~100k chunks); later runs
find nothing changed and start measuring within seconds.

How the embedding is excluded: every query is embedded beforehand with the real embedder
(those calls are timed: `query_embedding_ms`). The searcher under test is the product's
own `Searcher` on the same store, given a stand-in embedder whose `embed_query` returns
that precomputed vector (a dict lookup, no thread hop). Everything else a search does
(query validation, freshness counters, the lexical and HNSW SQL queries, fusion, fetching
rows and snippets) runs and is timed exactly as in the daemon. One warm-up pass over all
queries and modes, then `--repeat` timed passes (queries and modes interleaved). For
reference, `hybrid_end_to_end_ms` is the product's Searcher with the real embedder (the
embedding included; without the daemon's result cache, which would answer repeats).

Beside the wall times, CPU ms per search of this process (the searcher's Python) and of
PostgreSQL (its processes' CPU over the search), per variant, and the load average before
and after: on a shared machine CPU time moves much less with the load than wall time. To
compare two versions of the code under the same conditions, run this script back to back
with `PYTHONPATH=<other checkout>/daemon` and `--results` of its own.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from codequarry.config import add_project, load_settings
from codequarry.embedding import Embedder, Vectors
from codequarry.errors import CodequarryError
from codequarry.logs import configure_logging
from codequarry.runtime import Runtime, open_runtime
from codequarry.search import Mode, Searcher, SearchRequest, glob_to_regex
from codequarry.store.project import Filters
from common import CORPORA, codequarry_home, corpus, emit, postgres_cpu_seconds, summary

TARGET_P50_MS, TARGET_P95_MS = 15.0, 50.0
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "lexical")

# Questions a developer would type about the `huge` corpus (numpy, sqlalchemy, fastmcp,
# pydantic), then identifiers and identifier-like queries. Latency hardly depends on
# whether a query fits the corpus, so the smaller corpora use the same list.
QUERIES = [
    "how is the shape of an array broadcast against another array",
    "compute the singular value decomposition of a matrix",
    "save an array to a binary file on disk",
    "parse a date string into a datetime64 value",
    "draw random numbers from a normal distribution",
    "fit a polynomial to points with least squares",
    "how are masked values ignored when computing the mean",
    "fast fourier transform of a real valued signal",
    "reverse the order of elements along an axis",
    "check whether two arrays are equal within a tolerance",
    "sort an array and return the indices that would sort it",
    "open a database connection from a URL string",
    "how does the session flush pending objects to the database",
    "build a select statement with a where clause and a join",
    "connection pool that recycles stale connections",
    "map a python class to a database table",
    "load related objects eagerly with a second query",
    "what happens to the transaction when an exception is raised inside it",
    "validate an email address field",
    "generate a JSON schema for a model",
    "custom validator that runs before the type is checked",
    "serialize a datetime to an ISO 8601 string",
    "how are unknown extra fields rejected",
    "register a python function as a tool on the MCP server",
    "how does the client authenticate with OAuth",
    "read a resource through a URI template",
    "run the server over stdio",
    "what happens when a tool raises an exception",
    "np.einsum",
    "ndarray.reshape",
    "linalg.solve",
    "apply_along_axis",
    "__array_function__",
    "create_engine",
    "sessionmaker",
    "relationship back_populates",
    "BaseModel.model_validate",
    "field_validator",
    "TypeAdapter",
    "ConfigDict extra forbid",
    "FastMCP",
    "ToolError",
]


class PrecomputedQueries:
    """The real embedder for everything except `embed_query`, which returns the vector
    computed for that query text beforehand (KeyError for a query not precomputed)."""

    def __init__(self, real: Embedder, vectors: dict[str, Vectors]) -> None:
        self.real = real
        self.vectors = vectors
        self.model_id = real.model_id
        self.model_name = real.model_name
        self.model_version = real.model_version
        self.dims = real.dims
        self.max_batch = real.max_batch
        self.max_tokens = real.max_tokens

    async def start(self) -> None:
        await self.real.start()

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await self.real.embed_documents(texts)

    async def embed_query(self, text: str) -> Vectors:
        return self.vectors[text]

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return self.real.token_counts(texts)

    async def aclose(self) -> None:
        """The real embedder belongs to the runtime, which closes it."""


async def index_projects(runtime: Runtime, project_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Bring registered projects up to date in this process (as `codequarry index` does:
    reconcile, chunk, embed until settled), then ANALYZE them. Nothing changed: seconds."""
    indexer = runtime.indexer
    projects = [await indexer.add_project(runtime.settings.config.project(p)) for p in project_ids]
    started = time.perf_counter()
    queued: dict[str, int] = {}
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(indexer.run)
        for project_id in project_ids:
            queued[project_id] = await indexer.reconcile(project_id)
        while not (indexer.idle() and indexer.embedding_settled()):
            await anyio.sleep(0.2)
            if indexer.embedder_fatal:
                raise CodequarryError(f"the embedder failed: {indexer.embedder_error}")
        tasks.cancel_scope.cancel()
    seconds = time.perf_counter() - started
    out: dict[str, dict[str, Any]] = {}
    for project in projects:
        await project.store.analyze()
        counts = await project.store.counts()
        chunks, embedded = await project.store.vector_counts()
        if embedded < chunks:
            raise CodequarryError(f"{project.id}: only {embedded} of {chunks} chunks have vectors")
        out[project.id] = {"files": counts.files, "chunks": chunks, "embedded": embedded,
                           "files_queued": queued[project.id]}
    for entry in out.values():
        entry |= {"index_seconds": round(seconds, 1), "embeddings_computed": indexer.progress.embedded,
                  "embeddings_reused": indexer.progress.reused}
    return out


def register(config_path: Path, name: str) -> None:
    """Register corpus `name` as project `name` (idempotent)."""
    add_project(config_path, name, corpus(name))


def positive(value: str) -> int:
    """argparse type: an integer >= 1."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def default_glob(name: str) -> str:
    """A selective path filter: the last source tree of the corpus (e.g. pydantic/** in huge)."""
    source, sub = CORPORA[name][1][-1]
    return f"{sub.rstrip('/')}/**" if source == "site" else f"{sub.removeprefix('java.base/')}**"


async def filter_share(runtime: Runtime, project: str, filters: Filters) -> tuple[int, int]:
    """(chunks matching the filter, chunks) in the project."""
    store = await runtime.store.project(project)
    params: dict[str, Any] = {}
    where = filters.sql(params)
    async with store.engine.connect() as conn:
        matching = (await conn.execute(text(
            f"SELECT count(*) FROM {store.s}.chunks WHERE true{where}"), params)).scalar()
    chunks, _ = await store.vector_counts()
    return int(matching or 0), chunks


async def embed_queries(embedder: Embedder, queries: Sequence[str],
                        repeat: int) -> tuple[dict[str, Vectors], list[float]]:
    """Each query embedded once untimed (warm-up), then `repeat` timed times."""
    vectors = {q: await embedder.embed_query(q) for q in queries}
    times = []
    for _ in range(repeat):
        for query in queries:
            started = time.perf_counter()
            vectors[query] = await embedder.embed_query(query)
            times.append(time.perf_counter() - started)
    return vectors, times


async def bench(args: argparse.Namespace) -> dict[str, Any]:
    name = args.corpus
    queries = QUERIES[: args.queries]
    with codequarry_home(args.home, fresh=False) as home:
        register(home / "config.toml", name)
        settings = load_settings()
        async with open_runtime(settings) as runtime:
            await runtime.embedder.start()
            index = (await index_projects(runtime, [name]))[name]
            model_id = runtime.embedder.model_id
            vectors, embedding_times = await embed_queries(runtime.embedder, queries, args.repeat)
            searcher = Searcher(runtime.store, PrecomputedQueries(runtime.embedder, vectors))
            glob = args.path_glob or default_glob(name)
            filtered = {"languages": (args.language,), "path_glob": glob}
            variants: dict[str, tuple[Searcher, Mode, dict[str, Any]]] = {
                **{mode: (searcher, mode, {}) for mode in MODES},
                "hybrid_filtered": (searcher, "hybrid", filtered),
                # the real embedder, without the daemon's result cache (every pass repeats the
                # queries: runtime.searcher would answer all but the warm-up from its cache)
                "hybrid_end_to_end": (Searcher(runtime.store, runtime.embedder), "hybrid", {}),
            }
            times: dict[str, list[float]] = {variant: [] for variant in variants}
            empty: dict[str, int] = {variant: 0 for variant in variants}
            cpu: dict[str, list[float]] = {variant: [0.0, 0.0] for variant in variants}  # python, postgres
            load_before = os.getloadavg()
            for rep in range(args.repeat + 1):  # pass 0 is the warm-up
                for query in queries:
                    for variant, (engine, mode, extra) in variants.items():
                        request = SearchRequest(query, (name,), mode, **extra)
                        pg_before = postgres_cpu_seconds(settings.pgdata) if rep else 0.0
                        own_before = time.process_time()
                        started = time.perf_counter()
                        response = await engine.search(request, model_id)
                        elapsed = time.perf_counter() - started
                        if rep:
                            cpu[variant][0] += time.process_time() - own_before
                            cpu[variant][1] += postgres_cpu_seconds(settings.pgdata) - pg_before
                            times[variant].append(elapsed)
                            empty[variant] += not response.results
            load_after = os.getloadavg()
            matching, chunks = await filter_share(
                runtime, name, Filters((args.language,), glob_to_regex(glob)))
    search = {variant: summary(values) for variant, values in times.items()}
    hybrid = search["hybrid"]
    return {
        "corpus": name, "description": CORPORA[name][0], "home": str(home), **index,
        "queries": len(queries), "repeat": args.repeat,
        "search_excluding_embedding_ms": {v: search[v] for v in (*MODES, "hybrid_filtered")},
        "hybrid_end_to_end_ms": search["hybrid_end_to_end"],
        "query_embedding_ms": summary(embedding_times),
        "empty_results": empty,
        # the embedder's threads count in hybrid_end_to_end's python
        "cpu_ms_per_search": {v: {"python": round(1000 * c[0] / len(times[v]), 2),
                                  "postgres": round(1000 * c[1] / len(times[v]), 2)} for v, c in cpu.items()},
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in load_after],
        "filter": {"languages": [args.language], "path_glob": glob, "matching_chunks": matching,
                   "share": round(matching / chunks, 3) if chunks else 0.0},
        "target_ms": {"p50": TARGET_P50_MS, "p95": TARGET_P95_MS},
        "meets_target": hybrid["p50"] <= TARGET_P50_MS and hybrid["p95"] <= TARGET_P95_MS,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="huge", choices=sorted(CORPORA), help="default: huge")
    parser.add_argument("--home", default="search",
                        help="shared bench home under $CQ_BENCH_DIR/homes (reused; default: search)")
    parser.add_argument("--repeat", type=positive, default=5,
                        help="timed passes over the queries (default 5)")
    parser.add_argument("--queries", type=positive, default=len(QUERIES),
                        help=f"use the first N queries (default all {len(QUERIES)})")
    parser.add_argument("--language", default="python", help="language of the filtered run")
    parser.add_argument("--results", default="search",
                        help="write bench/results/NAME.json (default: search)")
    parser.add_argument("--path-glob", help="path glob of the filtered run (default: the corpus's "
                        "last source tree, e.g. pydantic/** for huge)")
    args = parser.parse_args()
    configure_logging("warning")  # warnings and errors only, on stderr
    figures = anyio.run(bench, args)
    s = figures["search_excluding_embedding_ms"]

    def pair(d: dict[str, float]) -> str:
        return f"{d['p50']}/{d['p95']}"

    line = (f"search {figures['corpus']}: {figures['chunks']} chunks, excl. embedding p50/p95 ms: "
            f"hybrid {pair(s['hybrid'])} (target {TARGET_P50_MS:g}/{TARGET_P95_MS:g}) "
            f"semantic {pair(s['semantic'])} lexical {pair(s['lexical'])} "
            f"hybrid+filter {pair(s['hybrid_filtered'])} | query embedding "
            f"{pair(figures['query_embedding_ms'])} | hybrid end to end "
            f"{pair(figures['hybrid_end_to_end_ms'])} | CPU ms python+postgres: "
            + " ".join(f"{v} {c['python']}+{c['postgres']}" for v, c in figures["cpu_ms_per_search"].items())
            + f" | load {figures['load_average_before'][0]} -> {figures['load_average_after'][0]}")
    emit(args.results, figures, line)


if __name__ == "__main__":
    main()
