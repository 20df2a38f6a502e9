"""Answers shaped for agents (codequarry.answers, search.py) and the follow-up tools
(codequarry.code_tools, mcp_code_tools): whole units, detail levels, the token budget,
pages, filters that never fail silently, find_symbol, read_code, find_references, over a
real store and through the MCP SDK client."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from fastmcp import Client as FastMCPClient
from fastmcp.exceptions import ToolError

from codequarry.answer_text import render_text
from codequarry.answers import tokens
from codequarry.api import DaemonApi
from codequarry.client import DaemonClient
from codequarry.code_tools import CodeTools, render_code, render_references
from codequarry.config import Settings
from codequarry.errors import UsageError
from codequarry.mcp_server import build_server
from codequarry.models import Freshness, SearchHit, SearchResponse
from codequarry.runtime import Runtime, open_runtime
from codequarry.search import SearchRequest, glob_to_regex, normalise_language

from .conftest import running_daemon, until, write_files
from .fakes import HashEmbedder
from .test_indexer import index

# A long function: with 48-token chunks it is split into several windows sharing its symbol
MARKS = {3: "  # wombat checkpoint", 36: "  # platypus checkpoint"}
LONG_BODY = "".join(
    f"    step_{i} = compute_quokka_total(step_{i - 1} if {i} else 0, {i}){MARKS.get(i, '')}\n"
    for i in range(1, 40))
REPO = {
    "src/ledger.py": (
        "import math\n\n\n"
        f"def reconcile_quokka_ledger(entries):\n    step_0 = 0\n{LONG_BODY}"
        "    return step_39\n\n\n"
        "def compute_quokka_total(previous, amount):\n    return previous + amount\n\n\n"
        "class Wallet:\n"
        "    def deposit(self, amount):\n        self.total = compute_quokka_total(self.total, amount)\n\n"
        "    def withdraw(self, amount):\n        self.total -= amount\n"),
    "src/report.py": "".join(
        f"def quokka_report_{i}(rows):\n    return [compute_quokka_total(r, {i}) for r in rows]\n\n\n"
        for i in range(12)),
    "src/compute_quokka_totals_later.py": "def unrelated():\n    return 'compute_quokka_total_later'\n",
    "web/app.js": "function quokkaHandler(event) {\n  return event.quokka;\n}\n",
    "README.md": "# Quokka ledger\n\nKeeps the quokka totals.\n",
    ".env": "SECRET_TOKEN=compute_quokka_total\n",
    "build/out.py": "def compute_quokka_total():\n    pass\n",
    ".gitignore": "build/\n",
}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = write_files(tmp_path / "ledger", REPO)
    os.symlink("ledger.py", root / "src" / "ledger_link.py")  # the same file twice
    return root


@pytest.fixture
def settings(make_settings: Callable[..., Settings], repo: Path) -> Settings:
    return make_settings([{"id": "ledger", "path": str(repo)}], index={"chunk_tokens": 48})


@pytest.fixture
async def runtime(settings: Settings, hash_embedder: HashEmbedder) -> AsyncIterator[Runtime]:
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("ledger"))
        await index(runtime, "ledger")
        yield runtime


async def search(runtime: Runtime, query: str, **fields: Any) -> SearchResponse:
    request = SearchRequest(query, ("ledger",), **fields)
    return await runtime.searcher.search(request, runtime.indexer.model_id)


# ---- whole units ------------------------------------------------------------------------


async def test_a_long_function_hit_in_several_places_comes_back_once_as_its_whole_span(
        runtime: Runtime) -> None:
    response = await search(runtime, "reconcile_quokka_ledger compute_quokka_total step", mode="lexical",
                            limit=20)
    ledger = [h for h in response.results if h.symbol == "reconcile_quokka_ledger"]
    assert len(ledger) == 1
    unit = ledger[0]
    assert (unit.start_line, unit.end_line) == (4, 45)  # def line to return line
    assert unit.hits == ((4, 45),)  # every window matched: the marks join into the unit
    assert "hits" not in unit.to_json()  # and are not repeated when they equal its span
    keys = [(h.path, h.start_line, h.end_line) for h in response.results]
    assert len(keys) == len(set(keys))


async def test_the_matching_windows_of_a_unit_are_marked(runtime: Runtime) -> None:
    response = await search(runtime, "wombat platypus", mode="lexical")
    unit = next(h for h in response.results if h.symbol == "reconcile_quokka_ledger")
    assert (unit.start_line, unit.end_line) == (4, 45)
    assert len(unit.hits) == 2
    assert unit.hits[0][0] <= 8 <= unit.hits[0][1] < 41  # the wombat is on line 8
    assert 8 < unit.hits[1][0] <= 41 <= unit.hits[1][1]  # the platypus on line 41
    assert "hit " in render_text(response.to_json())


async def test_a_file_reached_through_a_symlink_appears_once(runtime: Runtime) -> None:
    response = await search(runtime, "reconcile_quokka_ledger", mode="lexical", limit=20)
    spans = [(h.start_line, h.end_line) for h in response.results if h.symbol == "reconcile_quokka_ledger"]
    assert spans == [(4, 45)]


async def test_a_nested_project_does_not_repeat_its_files(
        make_settings: Callable[..., Settings], repo: Path, hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "outer", "path": str(repo)},
                              {"id": "inner", "path": str(repo / "web")}])
    async with open_runtime(settings, hash_embedder) as runtime:
        for project in ("outer", "inner"):
            await runtime.indexer.add_project(settings.config.project(project))
            await index(runtime, project)
        request = SearchRequest("quokkaHandler", ("outer", "inner"), "lexical")
        response = await runtime.searcher.search(request, runtime.indexer.model_id)
    assert [h.symbol for h in response.results].count("quokkaHandler") == 1


async def test_a_class_with_a_long_header_yields_to_its_matching_method(
        runtime: Runtime, repo: Path) -> None:
    # the header (docstring and fields) matches in every window; the method is what answers
    doc = "".join(f"    Feeding schedule {i}: the keeper rations the budgie seed at dawn.\n"
                  for i in range(12))
    (repo / "src" / "aviary.py").write_text(
        f'class Aviary:\n    """The aviary.\n\n{doc}    """\n\n    perches = 4\n\n'
        "    def dispense(self, budgie):\n        return self.keeper.rations(budgie.seed)\n")
    await index(runtime, "ledger")
    response = await search(runtime, "how does the keeper ration budgie seed", mode="lexical")
    symbols = [(h.symbol, h.kind) for h in response.results]
    assert symbols[:2] == [("Aviary.dispense", "method"), ("Aviary", "class")]
    scores = [h.score for h in response.results]
    assert scores == sorted(scores, reverse=True)


async def test_a_hit_inside_a_nested_function_is_named_by_its_enclosing_method(
        runtime: Runtime, repo: Path) -> None:
    # the method is the unit (chunking.tree.UNIT_KINDS); the nested function's chunk carries
    # its own symbol, and it is the only one that matches
    body = "".join(f"        self.tally_{i} = {i}\n" for i in range(30))
    (repo / "src" / "middleware.py").write_text(
        "class Middleware:\n"
        f"    def handle(self, scope):\n{body}"
        "        def send_wrapper(message):\n"
        "            return message.get('marmoset_cookie_header')\n"
        "        return send_wrapper\n")
    await index(runtime, "ledger")
    response = await search(runtime, "marmoset_cookie_header", mode="lexical")
    top = response.results[0]
    assert top.path == "src/middleware.py"
    assert (top.symbol, top.kind) == ("Middleware.handle", "method")
    assert (top.start_line, top.end_line) == (2, 35)


# ---- detail, budget, pages --------------------------------------------------------------


async def test_detail_paths_has_no_code_snippet_is_bounded_and_full_is_the_whole_unit(
        runtime: Runtime, repo: Path) -> None:
    lines = (repo / "src/ledger.py").read_text().split("\n")
    paths = await search(runtime, "reconcile_quokka_ledger", detail="paths", mode="lexical")
    assert paths.results
    assert all(h.snippet == "" for h in paths.results)
    snippet = await search(runtime, "reconcile_quokka_ledger", mode="lexical")
    top = snippet.results[0]
    assert top.symbol == "reconcile_quokka_ledger"
    assert 1 <= len(top.snippet.split("\n")) <= 4
    assert top.snippet.split("\n")[0] == "def reconcile_quokka_ledger(entries):"
    full = await search(runtime, "reconcile_quokka_ledger", detail="full", mode="lexical",
                        max_tokens=5000)
    whole = full.results[0]
    assert whole.snippet == "\n".join(lines[3:45])
    assert len(render_text(paths.to_json())) < len(render_text(snippet.to_json())) < len(
        render_text(full.to_json()))


@pytest.mark.parametrize("detail", ["snippet", "full"])
async def test_the_text_answer_respects_max_tokens_and_the_next_page_starts_after_it(
        runtime: Runtime, detail: str) -> None:
    response = await search(runtime, "quokka report rows", detail=detail, max_tokens=150, limit=10)
    text = render_text(response.to_json())
    assert tokens(text) <= 150
    assert response.results
    assert response.next_offset == len(response.results)
    assert any("max_tokens" in note for note in response.notes)


async def test_pages_are_stable_and_never_repeat_a_unit(runtime: Runtime) -> None:
    whole = await search(runtime, "quokka report rows", limit=8, detail="paths")
    keys = [(h.path, h.start_line) for h in whole.results]
    assert len(keys) == 8
    pages = []
    offset: int | None = 0
    while offset is not None and offset < 8:
        page = await search(runtime, "quokka report rows", limit=3, offset=offset, detail="paths")
        again = await search(runtime, "quokka report rows", limit=3, offset=offset, detail="paths")
        assert page.to_json() == again.to_json()
        pages += [(h.path, h.start_line) for h in page.results]
        offset = page.next_offset
    assert pages[:8] == keys


async def test_the_answer_states_shared_fields_once_and_rounds_scores(runtime: Runtime) -> None:
    response = await search(runtime, "quokka totals", languages=("Python",))
    answer = response.to_json()
    assert (answer["project"], answer["language"]) == ("ledger", "python")
    for hit in answer["results"]:
        assert "project" not in hit
        assert "language" not in hit
        assert hit["score"] == round(hit["score"], 3)
    text = render_text(answer)
    assert text.split("\n")[0].startswith(f"{len(answer['results'])} results")
    assert "\"" not in text.split("\n")[1]  # location lines, not JSON
    located = [line for line in text.split("\n") if line.startswith("src/")]
    assert [line.split(" ")[0] for line in located] == [
        f"{h['path']}:{h['start_line']}-{h['end_line']}" for h in answer["results"]]
    assert answer["kind"] == "function"  # every result is one: said once
    assert all("kind" not in hit for hit in answer["results"])


def test_a_kind_every_result_shares_is_said_once_in_the_text_and_the_json() -> None:
    hits = [SearchHit("p", f"m{i}.py", 1, 9, f"C.m{i}", "method", "python", 0.5, "def m():")
            for i in range(3)]
    answer = SearchResponse(hits, Freshness(0, 1.0, None), "hybrid", shared={"kind": "method"}).to_json()
    assert answer["kind"] == "method"
    assert all("kind" not in hit for hit in answer["results"])
    text = render_text(answer)
    assert "kind method" in text.split("\n")[0]
    assert "(method)" not in text


# ---- filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(("typed", "canonical"), [
    ("Python", "python"), ("py", "python"), ("JS", "javascript"), ("ts", "typescript"),
    ("tsx", "tsx"), ("rs", "rust"), ("golang", "go"), ("C++", "cpp"), ("c#", "csharp"),
    ("cs", "csharp"), ("kt", "kotlin"), ("rb", "ruby"), ("sh", "bash"), ("Markdown", "markdown")])
def test_language_names_are_case_insensitive_and_take_aliases(typed: str, canonical: str) -> None:
    assert normalise_language(typed) == canonical


def test_an_unknown_language_is_one_line_listing_the_known_ones() -> None:
    with pytest.raises(UsageError) as caught:
        SearchRequest("x", languages=("klingon",)).validate()
    message = str(caught.value)
    assert "\n" not in message
    assert "unknown language 'klingon'" in message
    assert "python" in message
    assert "javascript" in message


@pytest.mark.parametrize("glob", ["src/[ab", "*.{py,js", "[z-a].py"])
def test_a_malformed_glob_is_an_error(glob: str) -> None:
    with pytest.raises(UsageError, match="invalid path glob"):
        SearchRequest("x", path_glob=glob).validate()


def test_brace_globs_match_each_alternative() -> None:
    import re

    pattern = re.compile(glob_to_regex("*.{ts,tsx}"))
    assert [bool(pattern.search(p)) for p in ("src/a.ts", "b.tsx", "c.js")] == [True, True, False]


async def test_a_valid_filter_matching_no_indexed_file_says_so(runtime: Runtime) -> None:
    response = await search(runtime, "quokka", languages=("rust",))
    assert response.results == []
    assert "no indexed file matches language rust" in response.notes
    globbed = await search(runtime, "quokka", path_glob="lib/**")
    assert any("no indexed file matches path glob 'lib/**'" in note for note in globbed.notes)


# ---- follow-up tools --------------------------------------------------------------------


def tools(runtime: Runtime) -> CodeTools:
    return CodeTools(runtime.store, runtime.settings.config.projects)


async def test_find_symbol_finds_exact_then_qualified_then_prefix_then_similar_names(
        runtime: Runtime) -> None:
    exact = await tools(runtime).find_symbol("compute_quokka_total")
    first = exact["definitions"][0]
    assert (first["path"], first["start_line"], first["end_line"]) == ("src/ledger.py", 48, 49)
    assert first["signature"] == "def compute_quokka_total(previous, amount):"
    method = (await tools(runtime).find_symbol("deposit"))["definitions"][0]
    assert (method["qualified_name"], method["kind"]) == ("Wallet.deposit", "method")
    qualified = (await tools(runtime).find_symbol("wallet.withdraw"))["definitions"][0]
    assert qualified["qualified_name"] == "Wallet.withdraw"
    prefix = await tools(runtime).find_symbol("quokka_report_1")
    assert prefix["definitions"][0]["name"] == "quokka_report_1"
    assert {d["name"] for d in prefix["definitions"]} >= {"quokka_report_10", "quokka_report_11"}
    similar = await tools(runtime).find_symbol("reconcile_quoka_ledger")
    assert similar["definitions"][0]["name"] == "reconcile_quokka_ledger"
    assert "no exact match" in similar["notes"][0]


async def test_read_code_reads_the_current_disk_text_bounded_with_line_numbers(
        runtime: Runtime, repo: Path) -> None:
    (repo / "src/ledger.py").write_text((repo / "src/ledger.py").read_text().replace(
        "def compute_quokka_total(previous, amount):", "def compute_quokka_total(previous, amount=0):"))
    answer = await tools(runtime).read_code("src/ledger.py", 48, 49)
    assert answer["content"].split("\n")[0] == "def compute_quokka_total(previous, amount=0):"
    assert (answer["start_line"], answer["end_line"], answer["next_start_line"]) == (48, 49, None)
    # the location as answers print it ("… more lines: read_code src/ledger.py:48-49") works as is
    assert await tools(runtime).read_code("src/ledger.py:48-49") == answer
    by_symbol = await tools(runtime).read_code(symbol="Wallet.deposit")
    # (today's spans come from chunks: a merged class header line may lead the method)
    assert "    def deposit(self, amount):" in by_symbol["content"].split("\n")[:2]
    assert by_symbol["content"].endswith("self.total = compute_quokka_total(self.total, amount)")
    whole = await tools(runtime).read_code("src/ledger.py")  # counted as `wc -l` does
    assert whole["total_lines"] == (repo / "src/ledger.py").read_text().count("\n")
    assert whole["content"].split("\n")[-1] != ""
    bounded = await tools(runtime).read_code("src/ledger.py", max_tokens=100)
    assert bounded["end_line"] < bounded["total_lines"]
    assert bounded["next_start_line"] == bounded["end_line"] + 1
    following = bounded["next_start_line"]
    assert render_code(bounded).endswith(f"note: continue with start_line={following}")
    assert render_code(bounded, cli=True).endswith(
        f"note: continue with codequarry show src/ledger.py:{following}-")


@pytest.mark.parametrize(("path", "reason"), [
    (".env", "looks like a secret"), ("build/out.py", "excluded by the ignore rules"),
    ("../outside.py", "outside every"),
    ("src/escape.py", "outside every"), ("missing.py", "does not exist")])
async def test_read_code_refuses_what_is_outside_the_trees_or_excluded(
        runtime: Runtime, repo: Path, path: str, reason: str) -> None:
    (repo.parent / "outside.py").write_text("secret = 1\n")
    os.symlink(repo.parent / "outside.py", repo / "src" / "escape.py")
    with pytest.raises(UsageError, match=reason):
        await tools(runtime).read_code(path)


async def test_find_references_lists_whole_identifier_occurrences_grouped_by_file(
        runtime: Runtime) -> None:
    answer = await tools(runtime).find_references("compute_quokka_total")
    files = {f["path"]: f for f in answer["files"]}
    assert set(files) >= {"src/ledger.py", "src/report.py"}
    assert "src/compute_quokka_totals_later.py" not in files  # only inside longer identifiers
    assert ".env" not in files  # a secret: never quoted
    assert "build/out.py" not in files  # ignored: never indexed
    ledger_lines = {ref["line"]: ref for ref in files["src/ledger.py"]["lines"]}
    assert ledger_lines[48]["definition"] is True
    assert files["src/report.py"]["count"] == 12
    assert answer["total"] == sum(f["count"] for f in answer["files"])
    text = render_references(answer)
    assert "(* = definition)" in text.split("\n")[0]
    assert "  48* def compute_quokka_total(previous, amount):" in text.split("\n")
    assert text.startswith(f"{answer['total']} references to compute_quokka_total in {len(files)} files")
    lone = {"total": 1, "name": "beta_two", "file_count": 1, "files": [], "notes": []}
    assert render_references(lone) == "1 reference to beta_two in 1 file"


# ---- through the MCP SDK client -----------------------------------------------------------


async def test_the_mcp_tools_answer_with_compact_text_and_matching_structured_content(
        settings: Settings, hash_embedder: HashEmbedder) -> None:
    async with running_daemon(settings, hash_embedder) as daemon, \
            FastMCPClient(build_server(DaemonApi(daemon.runtime, daemon))) as client:
        names = {tool.name for tool in await client.list_tools()}
        assert {"find_symbol", "read_code", "find_references", "search_code"} <= names
        async def defined() -> bool:
            answer = await client.call_tool("find_symbol", {"name": "compute_quokka_total"})
            return bool(answer.structured_content and answer.structured_content["definitions"])

        await until(defined, 60, "the daemon indexed the repository")  # it indexes in the background
        found = await client.call_tool("find_symbol", {"name": "compute_quokka_total"})
        assert found.content[0].text.split("\n")[1].startswith("src/ledger.py:48-49 ")
        read = await client.call_tool("read_code", {"path": "src/ledger.py", "start_line": 48,
                                                     "end_line": 49, "project": "ledger"})
        assert read.content[0].text.split("\n")[1] == "48 def compute_quokka_total(previous, amount):"
        refs = await client.call_tool("find_references", {"name": "compute_quokka_total"})
        assert "src/report.py (12)" in refs.content[0].text
        searched = await client.call_tool("search_code", {"query": "reconcile quokka ledger",
                                                          "project": "ledger", "limit": 3})
        structured = searched.structured_content
        assert structured is not None
        text = searched.content[0].text
        assert text == render_text(structured)
        assert not text.lstrip().startswith("{")
        client_of_cli = DaemonClient(settings.socket_path)  # the JSON routes the CLI uses
        symbol = await anyio.to_thread.run_sync(lambda: client_of_cli.post(
            "/api/symbol", {"name": "Wallet.deposit", "project": "ledger"}))
        assert symbol["definitions"][0]["qualified_name"] == "Wallet.deposit"
        read = await anyio.to_thread.run_sync(lambda: client_of_cli.post(
            "/api/read", {"path": "src/ledger.py", "start_line": 1, "end_line": 1, "project": "ledger"}))
        assert read["content"] == "import math"
        refs = await anyio.to_thread.run_sync(lambda: client_of_cli.post(
            "/api/references", {"name": "quokkaHandler", "language": "js"}))
        assert [f["path"] for f in refs["files"]] == ["web/app.js"]
        with pytest.raises(ToolError, match="unknown language"):
            await client.call_tool("search_code", {"query": "x", "language": "klingon"})
        with pytest.raises(ToolError, match="looks like a secret"):
            await client.call_tool("read_code", {"path": ".env", "project": "ledger"})


def test_follow_ups_are_named_as_tool_arguments_for_agents_and_as_commands_at_the_cli() -> None:
    hit = {"path": "pkg/a.py", "start_line": 10, "end_line": 40, "symbol": "f", "score": 0.9,
           "snippet": "def f():\n    return 1", "snippet_ranges": [[10, 11]], "truncated": True}
    answer = {"mode": "hybrid", "offset": 0, "next_offset": 10, "results": [hit], "notes": []}
    agent, person = render_text(answer), render_text(answer, cli=True)
    assert "more: offset=10" in agent
    assert "29 more lines: read_code pkg/a.py:12-40" in agent
    assert "more: --offset 10" in person
    assert "29 more lines: codequarry show pkg/a.py:12-40" in person
    assert agent.replace("offset=", "--offset ").replace("read_code", "codequarry show") == person


def test_a_coverage_short_of_whole_never_reads_100_percent() -> None:
    from codequarry.answer_text import coverage_percent

    assert coverage_percent(1.0) == "100%"
    assert coverage_percent(1143 / 1144) == "99.9%"
    assert coverage_percent(99_999 / 100_000) == "99.9%"
    assert coverage_percent(0.42) == "42%"
    text = render_text({"results": [], "freshness": {"pending_files": 0, "vector_coverage": 1143 / 1144}})
    assert "vectors cover 99.9%" in text
