"""Chunking (codequarry.chunking) with the real tree-sitter grammars: line spans, coverage,
splitting and merging under the token budget, line windows for text, content hashes and
the code-aware words used by full-text search."""

from __future__ import annotations

import dataclasses
import itertools
import re

import pytest

from codequarry.chunking import Budget, Chunker, chunk_hash, embedding_text, search_text
from codequarry.chunking.budget import estimate_tokens
from codequarry.chunking.lines import line_windows
from codequarry.chunking.words import code_words, identifier_like, split_identifier
from codequarry.models import Chunk

from .test_definitions import EXPECTED, SAMPLE_FILES, SNIPPETS

# the default, the one derived for the local model (chunk_tokens = 128) and the smallest
# chunk_tokens the config allows (runtime derives min_tokens = max(16, max_tokens // 5))
BUDGETS = [Budget(), Budget(128, 25), Budget(32, 16)]


def _check_spans(text: str, chunks: list[Chunk], budget: Budget) -> None:
    """1-based spans inside the file, in order, never overlapping, content = those lines,
    every non-blank line covered, and within the budget unless a single line is longer."""
    lines = text.split("\n")
    previous_end = 0
    covered: set[int] = set()
    for chunk in chunks:
        assert 1 <= chunk.start_line <= chunk.end_line <= len(lines), chunk
        assert chunk.start_line > previous_end, f"overlap or disorder at {chunk}"
        previous_end = chunk.end_line
        assert chunk.content == "\n".join(lines[chunk.start_line - 1 : chunk.end_line])
        assert chunk.content.strip(), "empty chunk"
        assert budget.fits(chunk.content) or chunk.start_line == chunk.end_line, chunk
        covered.update(range(chunk.start_line, chunk.end_line + 1))
    non_blank = {number for number, line in enumerate(lines, 1) if line.strip()}
    assert non_blank - covered == set(), "lines dropped"


@pytest.mark.parametrize("language", sorted(SAMPLE_FILES))
def test_sample_file_chunks_cover_every_line_in_order_with_symbols(language: str) -> None:
    name = SAMPLE_FILES[language]
    text = (SNIPPETS / name).read_text(encoding="utf-8")
    names = {name for _, name, _, _ in EXPECTED[language] if name}
    for budget in BUDGETS:
        detected, chunks = Chunker(budget).chunk_file(f"src/{name}", text)
        assert detected == language
        assert chunks
        assert all(chunk.language == language for chunk in chunks)
        _check_spans(text, chunks, budget)
        symbols = [chunk.symbol for chunk in chunks if chunk.symbol]
        assert any(s in names or s.rsplit(".", 1)[-1] in names for s in symbols), symbols
        assert all(len(chunk.content_hash) == 32 for chunk in chunks)


def test_module_level_code_between_definitions_is_kept() -> None:
    text = (
        "import os\n\n\ndef first():\n    return os.getcwd()\n\n\n"
        "REGISTRY = build_registry(first, timeout=30)\n\n\n"
        "def second():\n    return REGISTRY\n\n\n"
        "if __name__ == '__main__':\n    second()\n"
    )
    budget = Budget(32, 16)
    _, chunks = Chunker(budget).chunk_file("app.py", text)
    _check_spans(text, chunks, budget)
    joined = "\n".join(chunk.content for chunk in chunks)
    assert "REGISTRY = build_registry(first, timeout=30)" in joined
    assert "if __name__ == '__main__':" in joined


def test_oversized_function_is_split_into_windows_that_keep_its_symbol() -> None:
    body = "".join(f"    total += compute_value_{i}(items, offset={i})\n" for i in range(300))
    text = "import os\n\n\ndef long_function(items):\n    total = 0\n" + body + "    return total\n"
    budget = Budget()
    _, chunks = Chunker(budget).chunk_file("m.py", text)
    _check_spans(text, chunks, budget)
    inside = [chunk for chunk in chunks if chunk.start_line >= 4]
    assert len(inside) >= 10
    assert {(chunk.symbol, chunk.kind) for chunk in inside} == {("long_function", "function")}
    assert all(estimate_tokens(chunk.content) <= budget.max_tokens for chunk in inside)
    assert inside[0].start_line == 4
    assert inside[-1].end_line == 306
    assert all(b.start_line == a.end_line + 1 for a, b in itertools.pairwise(inside))


def _big_class(methods: int) -> str:
    header = (
        "class Report:\n"
        '    """Collects the figures of one accounting period and renders them as tables,\n'
        "    charts and a printable summary for the board; every figure is normalised\n"
        '    to the same precision before it is shown."""\n\n'
        "    offset = 3\n    precision = 2\n\n"
    )
    body = "".join(
        f"    def method_{i}(self, value):\n"
        f'        """Return the value scaled by factor {i} for the report."""\n'
        f"        result = value * {i} + self.offset\n"
        f"        return self.normalise(result, precision={i})\n\n"
        for i in range(methods)
    )
    return header + body


def test_big_class_becomes_a_header_chunk_plus_method_chunks() -> None:
    text = _big_class(12)
    budget = Budget()
    _, chunks = Chunker(budget).chunk_file("report.py", text)
    _check_spans(text, chunks, budget)
    header, *members = chunks
    assert (header.symbol, header.kind, header.start_line) == ("Report", "class", 1)
    assert "offset = 3" in header.content
    assert "def method_0" not in header.content
    assert [(c.symbol, c.kind) for c in members] == [
        (f"Report.method_{i}", "method") for i in range(12)]


def test_small_class_stays_one_chunk_with_its_methods() -> None:
    text = _big_class(2)
    _, chunks = Chunker().chunk_file("report.py", text)
    assert [(c.symbol, c.kind, c.start_line) for c in chunks] == [("Report", "class", 1)]


def test_class_header_is_not_merged_into_the_preceding_function() -> None:
    text = (SNIPPETS / "sample.py").read_text(encoding="utf-8")
    _, chunks = Chunker(Budget(128, 25)).chunk_file("sample.py", text)
    holding = next(c for c in chunks if c.start_line <= 18 <= c.end_line)  # class Outer(...)
    assert holding.symbol is not None
    assert holding.symbol.startswith("Outer")


def test_small_adjacent_definitions_are_merged_while_they_fit() -> None:
    text = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(40))
    budget = Budget()
    _, chunks = Chunker(budget).chunk_file("small.py", text)
    _check_spans(text, chunks, budget)
    assert 1 < len(chunks) < 40
    starts = {4 * i + 1 for i in range(40)}  # merges happen at definition boundaries
    assert all(chunk.start_line in starts for chunk in chunks)
    assert all(chunk.kind == "function" for chunk in chunks)
    lines = text.split("\n")

    def tokens(start: int, end: int) -> int:  # the budget's measure of a span of lines
        return sum(estimate_tokens(line) + 1 for line in lines[start - 1 : end])

    for first, second in itertools.pairwise(chunks):  # each stop has a reason
        full = tokens(first.start_line, second.end_line) > budget.max_tokens
        both_big = min(tokens(first.start_line, first.end_line),
                       tokens(second.start_line, second.end_line)) >= budget.min_tokens
        assert full or both_big, (first.start_line, second.start_line)


def test_definitions_above_the_minimum_are_not_merged() -> None:
    method = "    x = compute_something_expensive(alpha, beta, gamma, delta)\n" * 3
    text = "".join(f"def g{i}():\n{method}\n\n" for i in range(3))
    budget = Budget(256, 20)
    assert not budget.small(method)
    _, chunks = Chunker(budget).chunk_file("g.py", text)
    assert [chunk.symbol for chunk in chunks] == ["g0", "g1", "g2"]


# ------------------------------------------------------------------ line windows for text


def _sections(count: int, paragraphs: int = 8) -> str:
    return "".join(
        f"# Section {i}\n\n"
        + "".join(f"Paragraph line {j} of section {i} explaining things in detail.\n"
                  for j in range(paragraphs))
        + "\n"
        for i in range(count)
    )


def test_markdown_uses_line_windows_that_end_at_blank_lines() -> None:
    text = _sections(6)
    budget = Budget()
    language, chunks = Chunker(budget).chunk_file("docs/README.md", text)
    assert language == "markdown"
    assert len(chunks) > 1
    assert all((chunk.symbol, chunk.kind) == (None, "text") for chunk in chunks)
    _check_spans(text, chunks, budget)
    lines = text.split("\n")
    for chunk in chunks[:-1]:
        assert not lines[chunk.end_line - 1].strip() or re.match(r"#+ ", lines[chunk.end_line])


def test_markdown_windows_keep_a_heading_with_its_section() -> None:
    text = _sections(6)
    _, chunks = Chunker().chunk_file("README.md", text)
    assert len(chunks) > 1
    for chunk in chunks:
        assert chunk.content.startswith("# Section"), chunk.content[:40]
        last = [line for line in chunk.content.split("\n") if line.strip()][-1]
        assert not last.startswith("#"), f"window {chunk.start_line} ends with a heading"


def test_yaml_windows_break_between_top_level_blocks() -> None:
    block = "".join(f"  key_{j}: some configuration value number {j}\n" for j in range(10))
    text = "".join(f"service_{i}:\n{block}\n" for i in range(8))
    budget = Budget()
    language, chunks = Chunker(budget).chunk_file("deploy/values.yaml", text)
    assert language == "yaml"
    assert len(chunks) > 1
    _check_spans(text, chunks, budget)
    for chunk in chunks:
        assert chunk.content.startswith("service_")


def test_unknown_text_uses_line_windows() -> None:
    paragraph = "".join(f"word{j} " * 6 + "\n" for j in range(3))
    text = "\n".join([paragraph] * 10)
    budget = Budget(128, 25)
    language, chunks = Chunker(budget).chunk_file("NOTES", text)
    assert language == "text"
    assert len(chunks) > 2
    _check_spans(text, chunks, budget)
    lines = text.split("\n")
    assert all(not lines[chunk.end_line - 1].strip() for chunk in chunks[:-1])


def test_line_windows_are_contiguous_and_a_huge_line_gets_its_own_window() -> None:
    lines = ["short line"] * 5 + ["x" * 3000] + ["short line"] * 5
    chunks = line_windows(lines, "text", Budget(64, 16), first_line=10)
    assert chunks[0].start_line == 10
    assert chunks[-1].end_line == 10 + len(lines) - 1
    assert all(b.start_line == a.end_line + 1 for a, b in itertools.pairwise(chunks))
    assert any(chunk.content == "x" * 3000 for chunk in chunks)


def test_whitespace_only_file_gives_no_chunks() -> None:
    assert Chunker().chunk_file("blank.md", "\n\n   \n") == ("markdown", [])
    assert Chunker().chunk_file("blank.py", "\n\n") == ("python", [])


# ------------------------------------------------------------------ hashes and texts

FUNCTION = 'def parse_config(path):\n    """Load the file."""\n    return load(path)\n'


def test_same_code_in_two_paths_has_the_same_content_hash() -> None:
    chunker = Chunker()
    _, first = chunker.chunk_file("src/config.py", FUNCTION)
    _, second = chunker.chunk_file("vendor/copy/settings_loader.py", FUNCTION)
    assert [c.content_hash for c in first] == [c.content_hash for c in second]


def test_different_code_has_a_different_content_hash() -> None:
    chunker = Chunker()
    _, first = chunker.chunk_file("a.py", FUNCTION)
    _, second = chunker.chunk_file("a.py", FUNCTION.replace("load(path)", "load(path, 1)"))
    assert first[0].content_hash != second[0].content_hash


def test_content_hash_depends_on_the_language() -> None:
    text = "Some notes about retrying requests.\nUse exponential backoff.\n"
    _, as_text = Chunker().chunk_file("notes.txt", text)
    _, as_markdown = Chunker().chunk_file("notes.md", text)
    assert as_text[0].content == as_markdown[0].content
    assert as_text[0].content_hash != as_markdown[0].content_hash


def test_embedding_text_spells_out_the_symbol_and_leaves_the_path_out() -> None:
    _, chunks = Chunker().chunk_file("src/secret_dir_name/config.py", FUNCTION)
    text = embedding_text(chunks[0])
    assert text == "function parse_config (parse config)\n" + FUNCTION.rstrip("\n")
    assert "secret_dir_name" not in text
    plain = Chunk(1, 1, "just text", "text")
    assert embedding_text(plain) == "just text"


def test_search_text_holds_code_words_of_symbol_path_and_body() -> None:
    chunk = Chunk(1, 3, "def parseConfig(filePath): pass", "python", "ConfigLoader.parseConfig",
                  "method")
    words = search_text("src/configLoader.py", chunk)
    assert words.symbol == "configloader config loader parseconfig parse config"
    assert words.path == "src configloader config loader py"
    assert "parseconfig parse config" in words.body
    assert "filepath file path" in words.body


def test_chunk_file_fills_in_the_hash_of_the_embedding_text() -> None:
    _, chunks = Chunker().chunk_file("a.py", FUNCTION)
    bare = dataclasses.replace(chunks[0], content_hash="")
    assert chunks[0].content_hash == chunk_hash(bare)
    renamed = dataclasses.replace(bare, symbol="load_config")  # the symbol is embedded too
    assert chunk_hash(renamed) != chunks[0].content_hash


# ------------------------------------------------------------------ code words


@pytest.mark.parametrize("identifier", ["parse_config", "parseConfig", "ParseConfig",
                                        "PARSE_CONFIG", "_parse_config_"])
def test_identifier_spellings_all_give_the_same_words(identifier: str) -> None:
    assert code_words(identifier) == "parseconfig parse config"


@pytest.mark.parametrize(
    ("identifier", "words"),
    [
        ("HTTPServerError", "httpservererror http server error"),
        ("XMLHttpRequest", "xmlhttprequest xml http request"),
        ("getHTTPResponse2", "gethttpresponse2 get http response 2"),
        ("__init__", "init"),
        ("os.path.join", "os path join"),
    ],
)
def test_acronyms_digits_and_dots_split_into_words(identifier: str, words: str) -> None:
    assert code_words(identifier) == words


def test_query_words_are_found_among_the_document_words() -> None:
    document = set(code_words("def parse_config(path: Path) -> Config:\n    return load(path)").split())
    for query in ("parseConfig", "ParseConfig loader", "parse config"):
        assert set(code_words(query).split()) - {"loader"} <= document, query


def test_code_words_stops_at_the_limit() -> None:
    assert len(code_words("alpha " * 100, limit=10).split()) == 10


def test_split_identifier_lowercases_the_parts() -> None:
    assert split_identifier("ConfigLoader.parseConfig") == ["config", "loader", "parse", "config"]


@pytest.mark.parametrize("token", ["parse_config", "parseConfig", "ParseConfig", "os.path",
                                   "run()", "std::vector", "self->next"])
def test_code_tokens_are_identifier_like(token: str) -> None:
    assert identifier_like(token)


@pytest.mark.parametrize("token", ["parse", "config", "Config", "retry", "requests", "How"])
def test_english_words_are_not_identifier_like(token: str) -> None:
    assert not identifier_like(token)
