"""The search result cache (codequarry.search_cache): a repeated search is answered from
memory until the index changes, an edit is seen at once, and identical concurrent
searches share one run. Real store, deterministic embedder."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from codequarry.config import Settings
from codequarry.models import SearchResponse
from codequarry.runtime import Runtime, open_runtime
from codequarry.search import SearchRequest
from codequarry.search_cache import CachedSearcher

from .conftest import write_files
from .fakes import HashEmbedder
from .test_indexer import index

REPO = {
    "pkg/geometry.py": "def torus_volume(major, minor):\n    return 2 * 3.14159 ** 2 * major * minor ** 2\n",
    "pkg/names.py": "def greet(name):\n    return 'hello ' + name\n",
}


@pytest.fixture
async def runtime(make_settings: Callable[..., Settings], tmp_path: Path,
                  hash_embedder: HashEmbedder) -> AsyncIterator[Runtime]:
    repo = write_files(tmp_path / "repo", REPO)
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        yield runtime


def cache(runtime: Runtime) -> CachedSearcher:
    assert isinstance(runtime.searcher, CachedSearcher)
    return runtime.searcher


async def search(runtime: Runtime, query: str) -> SearchResponse:
    return await runtime.searcher.search(SearchRequest(query, ("demo",)), runtime.indexer.model_id)


async def test_a_repeated_search_is_answered_from_the_cache_with_the_same_results(runtime: Runtime) -> None:
    first = await search(runtime, "torus volume")
    before = cache(runtime).stats()
    second = await search(runtime, "torus volume")
    after = cache(runtime).stats()
    assert second.to_json() == first.to_json()
    assert (after["hits"], after["misses"]) == (before["hits"] + 1, before["misses"])
    other = await search(runtime, "greet by name")
    assert cache(runtime).stats()["misses"] == before["misses"] + 1
    assert other.results[0].path == "pkg/names.py"


async def test_an_edit_invalidates_the_cache_and_the_next_search_sees_it(
        runtime: Runtime, tmp_path: Path) -> None:
    before = await search(runtime, "zanzibar_quokka")
    assert not [h for h in before.results if h.symbol == "zanzibar_quokka"]
    generation = cache(runtime).generation
    (tmp_path / "repo" / "pkg" / "quokka.py").write_text("def zanzibar_quokka():\n    return 1\n")
    await index(runtime, "demo")
    assert cache(runtime).generation > generation
    misses = cache(runtime).stats()["misses"]
    hits = await search(runtime, "zanzibar_quokka")
    assert cache(runtime).stats()["misses"] == misses + 1
    assert hits.results[0].path == "pkg/quokka.py"


async def test_identical_concurrent_searches_run_once_and_share_the_answer(runtime: Runtime) -> None:
    before = cache(runtime).stats()
    answers: list[SearchResponse] = []

    async def one() -> None:
        answers.append(await search(runtime, "volume of a torus shape"))

    async with anyio.create_task_group() as tasks:
        for _ in range(5):
            tasks.start_soon(one)
    after = cache(runtime).stats()
    assert after["misses"] == before["misses"] + 1
    assert after["shared"] + after["hits"] == before["shared"] + before["hits"] + 4
    assert len({str(a.to_json()) for a in answers}) == 1


@pytest.mark.parametrize(("words", "names"), [("torus volume major", ["torus_volume", "greet"]),
                                              ("hello name", []), ("", ["nothing_here"])])
async def test_search_context_reads_term_statistics_freshness_and_symbols_matching(
        runtime: Runtime, words: str, names: list[str]) -> None:
    store = await runtime.store.project("demo")
    await store.analyze()
    context = await store.search_context(words, names)
    async with store.engine.connect() as conn:  # the same statistics counted the plain way
        lexemes = list((await conn.execute(text(
            "SELECT lexeme FROM unnest(to_tsvector('english', :q)) ORDER BY positions[1]"),
            {"q": words})).scalars())
        total = int((await conn.execute(text(f"SELECT count(*) FROM {store.s}.chunks"))).scalar() or 0)
        counts = {lexeme: int((await conn.execute(text(
            f"SELECT count(*) FROM {store.s}.chunks WHERE tsv @@ quote_literal(:l)::tsquery"),
            {"l": lexeme})).scalar() or 0) for lexeme in lexemes}
    assert context.lexemes == lexemes
    assert context.total == (total if lexemes else 0)
    assert context.freqs == pytest.approx({lexeme: n / total for lexeme, n in counts.items()}, abs=0.05)
    assert context.freshness == await store.freshness()
    assert context.symbols == await store.symbols_matching(names)
