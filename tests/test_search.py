"""Search against the real store: lexical, semantic and hybrid modes, filters, several
projects, isolation, limits, freshness and the fields of a result. One test uses the real
local ONNX model to check that a natural-language question finds its file."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import event, text

from codequarry import search as search_module
from codequarry.chunking import Chunker, embedding_text, search_text
from codequarry.chunking.words import code_words
from codequarry.config import Settings
from codequarry.errors import UnknownProject, UsageError
from codequarry.models import ChangeKind, FileUpdate, SearchResponse
from codequarry.runtime import Runtime, open_runtime
from codequarry.scan import content_hash
from codequarry.search import MAX_LIMIT, Mode, Searcher, SearchRequest, _match_terms
from codequarry.store import project as project_store
from codequarry.store.db import Store
from codequarry.store.project import Filters, match_tsquery

from .conftest import write_files
from .fakes import HashEmbedder
from .test_indexer import index

ALPHA = {
    "src/config/loader.js": (
        "// Load settings for the web client.\n"
        "export function parseConfig(text) {\n"
        "  const raw = JSON.parse(text);\n"
        "  return { port: raw.port || 8080, host: raw.host || 'localhost' };\n"
        "}\n"),
    "src/storage/manifest.py": (
        "import json\n\n\n"
        "def read_manifest_file(path):\n"
        "    \"\"\"Return the package manifest stored at path.\"\"\"\n"
        "    with open(path) as handle:\n"
        "        return json.load(handle)\n"),
    "src/net/http_client.py": (
        "class HttpClient:\n"
        "    \"\"\"A tiny HTTP client with a config of its own.\"\"\"\n\n"
        "    def __init__(self, config):\n"
        "        self.config = config\n\n"
        "    def fetch_url(self, url):\n"
        "        return self.config.session.get(url, timeout=self.config.timeout)\n"),
    "tools/release.py": (
        "def bump_version(version):\n"
        "    major, minor, patch = version.split('.')\n"
        "    return f'{major}.{minor}.{int(patch) + 1}'\n"),
    "docs/guide.md": (
        "# Guide\n\n"
        "Edit the config file to change the port and host of the web client.\n"),
    "README.md": "# Alpha\n\nA demo project whose config lives in src/config.\n",
}
BETA = {
    "handlers/quokka.py": (
        "def zanzibarQuokkaHandler(event):\n"
        "    \"\"\"Handle the quokka event.\"\"\"\n"
        "    return event.payload\n"),
    "handlers/config.py": "def load_config(path):\n    return open(path).read()\n",
    # two one-line functions: the chunker merges small neighbours into one chunk
    "handlers/totals.py": "def wombat_total(): return 1\ndef numbat_total(): return 2\n",
}


@pytest.fixture
def repos(tmp_path: Path) -> dict[str, Path]:
    return {"alpha": write_files(tmp_path / "alpha", ALPHA), "beta": write_files(tmp_path / "beta", BETA)}


@pytest.fixture
def settings(make_settings: Callable[..., Settings], repos: dict[str, Path]) -> Settings:
    return make_settings([{"id": name, "path": str(path)} for name, path in repos.items()])


@pytest.fixture
async def runtime(settings: Settings, hash_embedder: HashEmbedder) -> AsyncIterator[Runtime]:
    """Both projects fully indexed (chunks and vectors) with the deterministic embedder."""
    async with open_runtime(settings, hash_embedder) as runtime:
        for project in ("alpha", "beta"):
            await runtime.indexer.add_project(settings.config.project(project))
            await index(runtime, project)
        yield runtime


async def search(runtime: Runtime, query: str, *projects: str, mode: Mode = "hybrid",
                 languages: tuple[str, ...] = (), path_glob: str | None = None, limit: int = 10):
    request = SearchRequest(query, projects, mode, languages, path_glob, limit)
    return await runtime.searcher.search(request, runtime.indexer.model_id)


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
async def test_every_mode_ranks_the_defining_file_first_for_an_identifier(
        runtime: Runtime, mode: Mode) -> None:
    response = await search(runtime, "read_manifest_file", "alpha", mode=mode)
    assert response.mode == mode
    assert response.results[0].path == "src/storage/manifest.py"
    assert response.results[0].symbol == "read_manifest_file"


@pytest.mark.parametrize(("query", "expected"), [("parse_config", "src/config/loader.js"),
                                                 ("readManifestFile", "src/storage/manifest.py")])
async def test_lexical_search_matches_snake_case_and_camel_case_spellings_of_an_identifier(
        runtime: Runtime, query: str, expected: str) -> None:
    response = await search(runtime, query, "alpha", mode="lexical")
    assert response.results, f"no lexical result for {query!r}"
    assert response.results[0].path == expected


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
async def test_a_language_filter_returns_only_that_language(runtime: Runtime, mode: Mode) -> None:
    python = await search(runtime, "config", "alpha", mode=mode, languages=("python",))
    assert python.results
    assert {hit.language for hit in python.results} == {"python"}
    javascript = await search(runtime, "config", "alpha", mode=mode, languages=("javascript",))
    assert [hit.path for hit in javascript.results] == ["src/config/loader.js"]


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
async def test_path_globs_restrict_results_to_matching_paths(runtime: Runtime, mode: Mode) -> None:
    under_src = await search(runtime, "config", "alpha", mode=mode, path_glob="src/**")
    assert under_src.results
    assert all(hit.path.startswith("src/") for hit in under_src.results)
    assert under_src.to_json()["path_glob"] == "src/**"  # the answer says what it covers
    markdown = await search(runtime, "config", "alpha", mode=mode, path_glob="*.md")
    assert {hit.path for hit in markdown.results} == {"docs/guide.md", "README.md"}


@pytest.mark.parametrize("projects", [("alpha", "beta"), ()])
async def test_searching_several_projects_or_all_of_them_merges_their_results(
        runtime: Runtime, projects: tuple[str, ...]) -> None:
    response = await search(runtime, "config", *projects, mode="lexical", limit=20)
    found = {(hit.project, hit.path) for hit in response.results}
    assert ("beta", "handlers/config.py") in found
    assert ("alpha", "src/config/loader.js") in found


@pytest.mark.parametrize("mode", ["lexical", "semantic", "hybrid"])
async def test_a_unique_identifier_of_one_project_never_appears_in_another(
        runtime: Runtime, mode: Mode) -> None:
    in_alpha = await search(runtime, "zanzibarQuokkaHandler", "alpha", mode=mode, limit=MAX_LIMIT)
    assert all(hit.project == "alpha" for hit in in_alpha.results)
    assert not any("quokka" in (hit.snippet + hit.path).lower() for hit in in_alpha.results)
    in_beta = await search(runtime, "zanzibarQuokkaHandler", "beta", mode=mode)
    assert in_beta.results[0].path == "handlers/quokka.py"
    assert in_beta.results[0].project == "beta"


def rounded(response: SearchResponse) -> SearchResponse:
    """`response` with its scores to 9 decimals: summing equal scores in another order
    (rows that tie in the database) changes only the last bits of a fused score."""
    return dataclasses.replace(response, results=[dataclasses.replace(hit, score=round(hit.score, 9))
                                                  for hit in response.results])


async def test_one_statement_over_several_projects_answers_exactly_as_each_project_in_turn(
        runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """store/fanout.py: the combined reads (UNION ALL over the projects' schemas) give the
    same results, scores, freshness and notes as the per-project statements, whether the
    rankings say where their candidates lie (up to SPANS_WITH_RANKINGS_UP_TO projects) or a
    statement after them does."""
    combined = Searcher(runtime.store, runtime.embedder)
    in_turn = Searcher(runtime.store, runtime.embedder, combine=False)
    queries = ["config", "read_manifest_file", "how is the web client's port configured",
               "zanzibarQuokkaHandler event", "load config path", "bump the patch version"]
    filters = (((), None), (("python",), None), ((), "handlers/**"), (("python",), "src/**"))
    compared = 0
    for number, query in enumerate(queries):
        monkeypatch.setattr(search_module, "SPANS_WITH_RANKINGS_UP_TO", 1 if number % 2 else 4)
        for mode in ("hybrid", "lexical", "semantic"):
            for languages, glob in filters:
                for projects in (("alpha", "beta"), ()):
                    request = SearchRequest(query, projects, mode, languages, glob, limit=20)  # type: ignore[arg-type]
                    one = await combined.search(request, runtime.indexer.model_id)
                    other = await in_turn.search(request, runtime.indexer.model_id)
                    assert rounded(one) == rounded(other), (query, mode, languages, glob, projects)
                    compared += bool(one.results)
    assert compared > 50  # most requests find something: the comparison is not of empty pages


async def test_a_search_reads_where_its_candidates_lie_with_their_rankings(runtime: Runtime) -> None:
    """The lexical and semantic statements return where each candidate lies (path, unit
    span, symbol, kind), so with its caches warm a hybrid search of one project reads the
    project's tables in four statements (its context, the two rankings, the page's units'
    text) and a one-sided search in three, none of them reading places apart. (The test
    above compares the answers with the reference path, which reads them apart.)"""
    searcher = Searcher(runtime.store, runtime.embedder)
    schema = (await runtime.store.project("alpha")).s
    statements: list[str] = []

    def driver_statement(record: Any) -> None:  # store/fanout.py's reads, straight on asyncpg
        statements.append(record.query)

    def checkout(dbapi_connection: Any, *_: Any) -> None:
        dbapi_connection.driver_connection.add_query_logger(driver_statement)

    def sqlalchemy_statement(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
        statements.append(statement)

    engine = runtime.store.engine.sync_engine
    event.listen(engine, "checkout", checkout)
    event.listen(engine, "before_cursor_execute", sqlalchemy_statement)
    try:
        for mode, expected in (("hybrid", 4), ("lexical", 3), ("semantic", 3)):
            request = SearchRequest("how is the web client's port configured", ("alpha",), mode)  # type: ignore[arg-type]
            await searcher.search(request, runtime.indexer.model_id)  # warms the caches
            statements.clear()
            response = await searcher.search(dataclasses.replace(request, query="read the manifest file"),
                                             runtime.indexer.model_id)
            await anyio.sleep(0.01)  # the driver calls its loggers soon after each statement
            assert response.results
            reads = [statement for statement in statements if schema in statement]  # not type lookups
            assert len(reads) == expected, (mode, reads)
    finally:
        event.remove(engine, "checkout", checkout)
        event.remove(engine, "before_cursor_execute", sqlalchemy_statement)


async def test_an_unknown_project_raises_unknown_project(runtime: Runtime) -> None:
    with pytest.raises(UnknownProject, match="nope"):
        await search(runtime, "config", "nope")
    with pytest.raises(UnknownProject):
        await search(runtime, "config", "alpha", "nope")


@pytest.mark.parametrize("projects", [("alpha",), ("alpha", "beta")])  # one, and a combined read
async def test_a_search_after_the_database_dropped_every_pooled_connection_still_answers(
        runtime: Runtime, database_url: str, projects: tuple[str, ...]) -> None:
    await search(runtime, "read_manifest_file", *projects)  # fills the pool
    pool_size = runtime.store.engine.sync_engine.pool.checkedin()
    assert pool_size > 0
    import asyncpg

    admin = await asyncpg.connect(database_url)
    try:  # what a server restart does to every idle pooled connection
        killed = await admin.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    finally:
        await admin.close()
    assert killed >= pool_size
    response = await search(runtime, "read_manifest_file", *projects)
    assert response.results[0].path == "src/storage/manifest.py"


async def test_limit_must_be_between_1_and_50_and_bounds_the_results(runtime: Runtime) -> None:
    for bad in (0, -1, MAX_LIMIT + 1):
        with pytest.raises(UsageError, match="limit"):
            await search(runtime, "config", "alpha", limit=bad)
    assert len((await search(runtime, "config", "alpha", mode="lexical", limit=2)).results) == 2
    assert len((await search(runtime, "config", "alpha", limit=MAX_LIMIT)).results) <= MAX_LIMIT
    with pytest.raises(UsageError, match="empty"):
        await search(runtime, "   ", "alpha")


async def add_unembedded_file(runtime: Runtime, path: str, source: str) -> None:
    """Write a file's chunks to project alpha as the chunk worker does; no vector yet."""
    alpha = await runtime.store.project("alpha")
    language, chunks = runtime.indexer.chunker.chunk_file(path, source)
    await alpha.apply([FileUpdate(path, len(source), 1, content_hash(source.encode()), language,
                                  chunks=tuple(chunks),
                                  search_texts=tuple(search_text(path, c) for c in chunks))],
                      model_id=runtime.indexer.model_id)


async def test_freshness_reports_pending_files_and_vector_coverage(runtime: Runtime) -> None:
    fresh = (await search(runtime, "config", "alpha")).freshness
    assert fresh.pending_files == 0
    assert fresh.vector_coverage == 1.0
    assert fresh.last_indexed_change is not None

    alpha = await runtime.store.project("alpha")
    await alpha.record_events([("src/new.py", ChangeKind.CREATED, None),
                               ("src/new.py", ChangeKind.MODIFIED, None),
                               ("tools/release.py", ChangeKind.MODIFIED, None)])
    await add_unembedded_file(runtime, "src/brand_new.py", "def brand_new_function():\n    return 42\n")
    response = await search(runtime, "brand_new_function", "alpha")
    assert isinstance(response.freshness.pending_files, int)
    assert response.freshness.pending_files == 2
    assert 0.0 < response.freshness.vector_coverage < 1.0
    assert any("vectors cover" in note for note in response.notes)
    lexical = await search(runtime, "brand_new_function", "alpha", mode="lexical")
    assert lexical.results[0].path == "src/brand_new.py"  # found before its vector exists
    both = await search(runtime, "config", "alpha", "beta")
    assert both.freshness.pending_files == 2  # summed over projects
    assert both.freshness.vector_coverage == response.freshness.vector_coverage  # the worst project


async def test_hybrid_search_ranks_a_just_chunked_function_first_for_its_exact_name(runtime: Runtime) -> None:
    await add_unembedded_file(runtime, "src/brand_new.py", "def brand_new_function():\n    return 42\n")
    response = await search(runtime, "brand_new_function", "alpha", mode="hybrid")
    assert response.results[0].path == "src/brand_new.py"


@pytest.mark.parametrize("mode", ["lexical", "hybrid"])
async def test_a_chunk_of_two_small_functions_is_named_after_the_one_the_query_matches(
        runtime: Runtime, mode: Mode) -> None:
    for name in ("numbat_total", "wombat_total"):
        hit = (await search(runtime, name, "beta", mode=mode)).results[0]
        assert (hit.path, hit.start_line, hit.end_line) == ("handlers/totals.py", 1, 2)
        assert (hit.symbol, hit.kind) == (name, "function")


async def test_a_result_carries_project_path_lines_symbol_language_score_and_snippet(
        runtime: Runtime, repos: dict[str, Path]) -> None:
    response = await search(runtime, "fetch_url", "alpha")
    hit = response.results[0]
    assert (hit.project, hit.path, hit.symbol, hit.language) == (
        "alpha", "src/net/http_client.py", "HttpClient", "python")  # the class fits in one chunk
    assert hit.kind == "class"
    assert isinstance(hit.score, float)
    assert hit.score > 0
    lines = (repos["alpha"] / hit.path).read_text().split("\n")
    assert 1 <= hit.start_line <= hit.end_line <= len(lines)
    shown = [n for start, end in hit.snippet_ranges for n in range(start, end + 1)]
    assert shown[0] == hit.start_line  # the signature first
    assert hit.snippet == "\n".join(lines[n - 1] for n in shown)
    assert "def fetch_url(self, url):" in hit.snippet  # the line the query names
    assert {"project", "path", "start_line", "end_line", "symbol", "kind", "language", "score",
            "snippet"} <= set(hit.to_json())
    assert [r.score for r in response.results] == sorted((r.score for r in response.results), reverse=True)


async def test_without_a_ready_embedder_hybrid_search_answers_lexically_and_says_so(runtime: Runtime) -> None:
    request = SearchRequest("read_manifest_file", ("alpha",), "hybrid")
    response = await runtime.searcher.search(request, None)
    assert response.results[0].path == "src/storage/manifest.py"
    assert any("embedder is not available" in note for note in response.notes)


async def test_path_filters_never_starve_semantic_search(
        make_settings: Callable[..., Settings], hash_embedder: HashEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """2,000 chunks close to the query, 200 far ones under far/ and one under only/. A
    filter matching more than EXACT_FILTERED_CHUNKS walks the HNSW index (pgvector's
    iterative scan keeps going past filtered-out candidates); one matching fewer ranks its
    chunks exactly. Either way the filtered search is full."""
    store = await Store.open(make_settings())
    try:
        assert store.iterative_scans
        project = await store.ensure_project("many", "/many")
        await project.set_model(hash_embedder.model_id, hash_embedder.dims)
        chunker = Chunker()
        body = "(request):\n    return request.respond(status=200)\n"
        files = {f"handlers/h{i:04}.py": f"def handler_{i}{body}" for i in range(2000)}
        files.update({f"far/z{i:03}.py": f"def zebra_{i}():\n    return 'xylophone'\n" for i in range(200)})
        files["only/target.py"] = "def quagga():\n    return 'marimba'\n"
        updates = []
        for path, source in files.items():
            language, chunks = chunker.chunk_file(path, source)
            updates.append(FileUpdate(path, len(source), 1, content_hash(source.encode()), language,
                                      chunks=tuple(chunks),
                                      search_texts=tuple(search_text(path, c) for c in chunks)))
        await project.apply(updates, model_id=hash_embedder.model_id)
        todo = await project.unembedded(10_000)
        vectors = await hash_embedder.embed_documents([embedding_text(c) for c in todo])
        await store.save_vectors(hash_embedder.model_id,
                                 {c.content_hash: vectors[i] for i, c in enumerate(todo)}, [project])
        assert await project.ensure_hnsw()
        await project.analyze()
        query = "request respond status"
        table = f"{project.s}.{(await project.space()).table}"
        async with store.engine.connect() as conn:  # the premise: a broad filter goes through HNSW
            await conn.execute(text(f"ANALYZE {table}"))
            plan = "\n".join((await conn.execute(text(
                f"EXPLAIN SELECT v.chunk_id FROM {table} v JOIN {project.s}.chunks c ON c.id = v.chunk_id "
                "WHERE c.path ~ '^(handlers|far)/' ORDER BY v.embedding <=> CAST(:q AS halfvec) LIMIT 30"),
                {"q": hash_embedder.vectors([query])[0]})).scalars())
        assert "hnsw" in plan

        async with store.engine.begin() as conn:  # the 10 nearest of far/, by an exact scan
            await conn.execute(text("SET LOCAL enable_indexscan = off"))
            nearest = set((await conn.execute(text(
                f"SELECT c.path FROM {table} v JOIN {project.s}.chunks c ON c.id = v.chunk_id "
                "WHERE c.path ~ '^far/' ORDER BY v.embedding <=> CAST(:q AS halfvec) LIMIT 10"),
                {"q": hash_embedder.vectors([query])[0]})).scalars())
        searcher = Searcher(store, hash_embedder)
        for exact_up_to in (project_store.EXACT_FILTERED_CHUNKS, 100):  # far/ ranked exactly, then by HNSW
            monkeypatch.setattr(project_store, "EXACT_FILTERED_CHUNKS", exact_up_to)
            far = await searcher.search(SearchRequest(query, ("many",), "semantic", path_glob="far/**",
                                                      limit=10), hash_embedder.model_id)
            assert len(far.results) == 10
            assert all(hit.path.startswith("far/") for hit in far.results)
            if exact_up_to >= 200:
                assert {hit.path for hit in far.results} == nearest
        only = await searcher.search(SearchRequest(query, ("many",), "semantic", path_glob="only/**"),
                                     hash_embedder.model_id)
        assert [hit.path for hit in only.results] == ["only/target.py"]
        unfiltered = await searcher.search(SearchRequest(query, ("many",), "semantic", limit=MAX_LIMIT),
                                           hash_embedder.model_id)
        assert all(hit.path.startswith("handlers/") for hit in unfiltered.results)
    finally:
        await store.close()


LOCAL_REPO = {
    "app/retry.py": (
        "import random\nimport time\n\n\n"
        "def call_with_backoff(operation, attempts=5, base_delay=0.5):\n"
        "    for attempt in range(attempts):\n"
        "        try:\n"
        "            return operation()\n"
        "        except ConnectionError:\n"
        "            if attempt == attempts - 1:\n"
        "                raise\n"
        "            time.sleep(base_delay * 2 ** attempt * random.uniform(0.5, 1.5))\n"),
    "app/slug.py": (
        "import re\n\n\n"
        "def slugify(title):\n"
        "    lowered = title.strip().lower()\n"
        "    return re.sub(r'[^a-z0-9]+', '-', lowered).strip('-')\n"),
    "app/csv_export.py": (
        "import csv\n\n\n"
        "def export_rows(rows, destination):\n"
        "    with open(destination, 'w', newline='') as handle:\n"
        "        writer = csv.writer(handle)\n"
        "        for row in rows:\n"
        "            writer.writerow(row)\n"),
    "app/passwords.py": (
        "import hashlib\nimport os\n\n\n"
        "def hash_password(password):\n"
        "    salt = os.urandom(16)\n"
        "    digest = hashlib.pbkdf2_hmac('sha256', password.encode(), salt, 200_000)\n"
        "    return salt + digest\n"),
}


async def test_the_local_model_ranks_the_answer_to_a_natural_language_question_first(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    repo = write_files(tmp_path / "local", LOCAL_REPO)
    settings = make_settings([{"id": "local", "path": str(repo)}])
    async with open_runtime(settings) as runtime:  # the configured default: the local ONNX model
        assert runtime.embedder.model_id.startswith("local:")
        await runtime.indexer.add_project(settings.config.project("local"))
        await index(runtime, "local")
        response = await search(runtime, "retry a flaky network call, waiting longer after each failure",
                                "local", mode="hybrid")
    assert response.freshness.vector_coverage == 1.0
    assert response.results[0].path == "app/retry.py"


async def test_a_long_english_question_ranks_the_chunk_holding_most_of_its_words_first(
        runtime: Runtime) -> None:
    # "manifest" is in two chunks, "package" and "stored" only in the reader's docstring:
    # every non-stop word of the question counts, not only the rarest one
    response = await search(runtime, "where is the package manifest that was stored on disk read",
                            "alpha", mode="lexical")
    assert response.results[0].path == "src/storage/manifest.py"


def test_a_long_question_matches_its_rarest_word_alone_and_its_commoner_words_in_pairs() -> None:
    # 10,000 chunks, a budget of 200 rows: "actual" (10 rows) fits alone; "read" (500)
    # does not, so the commoner words become pairs, smallest expected overlap first
    freqs = {"actual": 0.001, "read": 0.05, "line": 0.06, "file": 0.08}
    clauses = _match_terms(["read", "file", "line", "actual"], freqs, 10_000, budget=200)
    assert clauses == ["actual", ("read", "line"), ("read", "file")]  # line & file: 48 > what is left
    assert match_tsquery(clauses) == "'actual' | ('read' & 'line') | ('read' & 'file')"


async def test_a_pair_clause_admits_only_chunks_holding_both_of_its_words(runtime: Runtime) -> None:
    store = await runtime.store.project("alpha")
    terms = [("config", 1.0), ("client", 1.0)]
    either = {i for i, _ in await store.lexical(terms, ["config", "client"], Filters(), 20)}
    both = {i for i, _ in await store.lexical(terms, [("config", "client")], Filters(), 20)}
    rows = await store.chunk_rows(sorted(either))

    def words(i: int) -> set[str]:  # what the chunk's full-text entry is made of
        row = rows[i]
        return set(code_words(f"{row.path} {row.chunk.symbol or ''} {row.chunk.content}").split())

    assert both
    assert both < either
    assert all({"config", "client"} <= words(i) for i in both)
    assert all(not {"config", "client"} <= words(i) for i in either - both)


async def test_a_word_in_the_symbol_outranks_the_same_word_in_a_body(runtime: Runtime) -> None:
    # "config" is the body of several chunks, but the name of only load_config and parseConfig
    response = await search(runtime, "config", "beta", mode="lexical")
    assert response.results[0].path == "handlers/config.py"
