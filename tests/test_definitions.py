"""Definitions found by codequarry.chunking.definitions, and language detection.

The expected lists were checked by hand against the snippet files in data/snippets
(tree-sitter-language-pack 0.13.0); tuples are (kind, name, start_line, end_line).
"""

from __future__ import annotations

import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from tree_sitter_language_pack import get_language

from codequarry.chunking.definitions import Definition, find_definitions, parse
from codequarry.chunking.languages import AST_LANGUAGES, LANGUAGES, detect_language

SNIPPETS = Path(__file__).parent / "data" / "snippets"

Expected = tuple[str, str | None, int, int]

SAMPLE_FILES = {
    "python": "sample.py", "javascript": "sample.js", "typescript": "sample.ts",
    "tsx": "sample_tsx.tsx", "go": "sample.go", "rust": "sample.rs", "java": "Sample.java",
    "c": "sample.c", "cpp": "sample.cpp", "csharp": "sample.cs", "ruby": "sample.rb",
    "php": "sample.php", "kotlin": "sample.kt", "swift": "sample.swift",
    "scala": "sample.scala", "bash": "sample.sh",
}

EXPECTED: dict[str, list[Expected]] = {
    "python": [
        ("function", "cached", 5, 9), ("function", "fetch", 12, 15),
        ("function", "inner", 13, 14), ("class", "Outer", 18, 36), ("class", "Inner", 21, 23),
        ("method", "inner_method", 22, 23), ("method", "value", 25, 27),
        ("method", "static_one", 29, 32), ("method", "run", 34, 36), ("class", "Point", 39, 45),
        ("method", "norm", 44, 45),
    ],
    "javascript": [
        ("function", "add", 4, 9), ("function", "exported", 11, 13),
        ("function", "defaultFn", 15, 17), ("function", "arrow", 19, 19),
        ("function", "funcExpr", 20, 20), ("function", "exportedArrow", 21, 23),
        ("function", "gen", 25, 27), ("class", "Animal", 29, 47),
        ("method", "constructor", 31, 34), ("method", "speak", 36, 38),
        ("method", "create", 40, 42), ("method", "upper", 44, 44), ("method", "handler", 46, 46),
        ("class", "Dog", 49, 51), ("method", "bark", 50, 50), ("class", "default", 53, 55),
        ("method", "anon", 54, 54), ("function", "Widget", 57, 57),
        ("function", "module.exports.helper", 59, 59),
    ],
    "typescript": [
        ("interface", "Shape", 4, 8), ("type", "Alias", 10, 10), ("type", "Union", 11, 11),
        ("enum", "Color", 13, 13), ("enum", "Direction", 14, 14),
        ("namespace", "Geometry", 16, 23), ("function", "distance", 17, 19),
        ("namespace", "Inner", 20, 22), ("module", "foo", 25, 27), ("class", "Base", 29, 46),
        ("method", "constructor", 36, 36), ("method", "area", 38, 39), ("method", "name", 43, 43),
        ("method", "handle", 45, 45), ("function", "typedArrow", 48, 48),
        ("function", "overload", 51, 51), ("class", "Impl", 53, 55), ("method", "render", 54, 54),
    ],
    "tsx": [
        ("interface", "Shape", 4, 8), ("type", "Alias", 10, 10), ("type", "Union", 11, 11),
        ("enum", "Color", 13, 13), ("enum", "Direction", 14, 14),
        ("namespace", "Geometry", 16, 23), ("function", "distance", 17, 19),
        ("namespace", "Inner", 20, 22), ("module", "foo", 25, 27), ("class", "Base", 29, 46),
        ("method", "constructor", 36, 36), ("method", "area", 38, 39), ("method", "name", 43, 43),
        ("method", "handle", 45, 45), ("function", "typedArrow", 48, 48),
        ("function", "overload", 51, 51), ("class", "Impl", 53, 55), ("method", "render", 54, 54),
        ("function", "Button", 57, 59), ("function", "App", 61, 63),
    ],
    "go": [
        ("interface", "Shape", 6, 9), ("struct", "Rect", 11, 14), ("type", "ID", 17, 17),
        ("struct", "Pair", 18, 18), ("type", "Handler", 21, 21), ("method", "Area", 23, 26),
        ("method", "String", 28, 30), ("function", "Map", 32, 39), ("method", "Push", 41, 44),
        ("function", "main", 46, 48),
    ],
    "rust": [
        ("struct", "Point", 4, 9), ("struct", "Unit", 11, 11), ("struct", "Tuple", 12, 12),
        ("enum", "Color", 14, 18), ("trait", "Shape", 20, 25), ("method", "describe", 22, 24),
        ("impl", "Point", 27, 32), ("method", "new", 28, 31), ("impl", "Point", 34, 38),
        ("method", "fmt", 35, 37), ("impl", "Wrapper", 40, 42), ("method", "area", 41, 41),
        ("module", "geometry", 44, 49), ("function", "helper", 45, 48),
        ("function", "nested", 46, 46), ("type", "Alias", 51, 51), ("struct", "MyUnion", 53, 53),
        ("function", "square", 55, 57), ("function", "it_works", 59, 62),
    ],
    "java": [
        ("class", "Sample", 5, 35), ("method", "Sample", 13, 15), ("method", "run", 17, 21),
        ("method", "generic", 23, 25), ("class", "Nested", 27, 29),
        ("method", "nestedMethod", 28, 28), ("enum", "State", 31, 34), ("method", "isOn", 33, 33),
        ("interface", "Greeter", 37, 40), ("method", "greet", 38, 38),
        ("method", "hello", 39, 39), ("class", "Pair", 42, 48), ("method", "Pair", 44, 46),
        ("method", "sum", 47, 47), ("interface", "MyAnnotation", 50, 52),
    ],
    "c": [
        ("struct", "point", 3, 7), ("struct", "box_t", 9, 11), ("struct", "node_t", 13, 15),
        ("enum", "color", 17, 17), ("struct", "value", 19, 19), ("function", "add", 21, 26),
        ("function", "get_name", 28, 30), ("function", "get_names", 32, 34),
        ("function", "get_handler", 36, 38), ("function", "const_ptr", 43, 43),
        ("function", "main", 45, 48),
    ],
    "cpp": [
        ("namespace", "geo", 3, 44), ("class", "Shape", 6, 14),
        ("method", "inlineMethod", 12, 12), ("struct", "Point", 16, 19),
        ("method", "Point", 18, 18), ("method", "Shape::Shape", 21, 21),
        ("method", "Shape::~Shape", 23, 23), ("method", "Shape::operator=", 25, 25),
        ("function", "max_of", 27, 30), ("class", "Box", 32, 38), ("method", "get", 35, 35),
        ("namespace", "inner", 40, 42), ("function", "make_int", 41, 41),
        ("method", "geo::Shape::helper", 46, 46), ("method", "geo::Box<int>::get", 48, 49),
        ("enum", "Mode", 51, 51), ("function", "main", 55, 57),
    ],
    "csharp": [
        ("namespace", "App.Models", 3, 40), ("class", "Person", 5, 25),
        ("method", "Person", 11, 11), ("method", "Greet", 13, 15), ("class", "Inner", 17, 20),
        ("method", "Helper", 19, 19), ("method", "~Person", 22, 22),
        ("method", "operator +", 24, 24), ("interface", "IEntity", 27, 31),
        ("method", "Save", 30, 30), ("struct", "Vec", 33, 33), ("method", "Length", 33, 33),
        ("enum", "Status", 35, 35), ("class", "Rec", 37, 37), ("type", "Handler", 39, 39),
        ("class", "Extensions", 44, 52), ("method", "Double", 46, 46),
        ("method", "Local", 48, 51), ("function", "Square", 50, 50),
    ],
    "ruby": [
        ("module", "Utils", 4, 43), ("class", "Helper", 6, 38), ("method", "initialize", 10, 12),
        ("method", "build", 14, 17), ("method", "singleton_in_eigen", 20, 22),
        ("method", "==", 25, 27), ("method", "valid?", 29, 31), ("method", "secret!", 35, 37),
        ("module", "Nested::Deep", 40, 42), ("method", "deep_fn", 41, 41),
        ("function", "top_level", 45, 47), ("method", "singleton_on_obj", 50, 52),
        ("class", "Foo::Bar", 54, 56), ("method", "baz", 55, 55),
    ],
    "php": [
        ("function", "helper", 6, 11), ("class", "User", 13, 35),
        ("method", "__construct", 20, 24), ("method", "create", 26, 31),
        ("method", "render", 33, 34), ("interface", "Repository", 37, 40),
        ("method", "find", 39, 39), ("trait", "Loggable", 42, 45), ("method", "log", 44, 44),
        ("enum", "Suit", 47, 51), ("method", "label", 50, 50), ("namespace", "Other", 53, 55),
        ("function", "braced", 54, 54),
    ],
    "kotlin": [
        ("class", "User", 5, 19), ("method", "greet", 10, 10), ("object", "Companion", 12, 14),
        ("method", "create", 13, 13), ("class", "Inner", 16, 18), ("method", "innerFn", 17, 17),
        ("interface", "Shape", 21, 23), ("method", "area", 22, 22), ("class", "Result", 25, 25),
        ("enum", "Color", 26, 26), ("method", "lower", 26, 26), ("object", "Singleton", 28, 31),
        ("method", "instance", 29, 30), ("function", "fetch", 33, 39),
        ("function", "local", 37, 37), ("function", "shout", 41, 41), ("type", "Handler", 43, 43),
        ("class", "Base", 45, 49), ("method", "area", 46, 46), ("interface", "Runner", 51, 51),
        ("method", "run", 51, 51),
    ],
    "swift": [
        ("interface", "Drawable", 3, 7), ("class", "Shape", 9, 34), ("method", "init", 14, 16),
        ("method", "deinit", 18, 20), ("method", "draw", 22, 24), ("method", "make", 26, 27),
        ("class", "Nested", 29, 31), ("method", "nestedFn", 30, 30),
        ("method", "subscript", 33, 33), ("struct", "Point", 36, 39), ("method", "move", 38, 38),
        ("enum", "Direction", 41, 44), ("method", "opposite", 43, 43), ("impl", "Point", 46, 48),
        ("method", "==", 47, 47), ("class", "Counter", 50, 52), ("method", "inc", 51, 51),
        ("function", "topLevel", 54, 57), ("type", "Callback", 59, 59),
    ],
    "scala": [
        ("trait", "Shape", 5, 9), ("method", "describe", 8, 8), ("object", "Shape", 11, 15),
        ("method", "apply", 13, 13), ("class", "Circle", 17, 24), ("method", "area", 19, 19),
        ("class", "Inner", 21, 23), ("method", "innerMethod", 22, 22), ("class", "Base", 26, 28),
        ("method", "get", 27, 27), ("trait", "Tree", 30, 30), ("enum", "Color", 31, 33),
        ("function", "topLevel", 34, 34), ("object", "Main", 36, 42),
        ("method", "helper", 37, 40), ("function", "nested", 38, 38), ("type", "Alias", 44, 44),
        ("object", "intOrd", 46, 46), ("impl", "String", 48, 49), ("method", "shout", 49, 49),
    ],
    "bash": [
        ("function", "greet", 4, 7), ("function", "cleanup", 9, 11),
        ("function", "with_parens", 13, 17), ("function", "inner", 15, 15),
        ("function", "my-func", 19, 19), ("function", "main", 21, 24),
    ],
}
EDGE_EXPECTED: dict[tuple[str, str], list[Expected]] = {
    # the object-literal method on line 11 is not a definition
    ("javascript", "edge/e.js"): [
        ("class", "A", 1, 7), ("method", "foo", 2, 3), ("method", "#priv", 4, 4),
        ("method", "[Symbol.iterator]", 5, 5), ("method", "agen", 6, 6),
        ("function", "default", 8, 8), ("class", "C", 9, 9), ("method", "m", 9, 9),
        ("function", "legacy", 10, 10),
    ],
    ("scala", "edge/e.scala"): [
        ("impl", "String", 1, 3), ("method", "shout", 2, 2), ("method", "whisper", 3, 3),
        ("class", "P", 4, 4),
    ],
    # forward declarations `struct Fwd;` `class Fwd2;` are not definitions
    ("cpp", "edge/e.cpp"): [
        ("namespace", "a::b", 1, 1), ("function", "f", 1, 1), ("namespace", "v1", 2, 2),
        ("class", "Foo", 3, 8), ("method", "operator bool", 4, 4), ("method", "operator()", 5, 5),
        ("function", "swap", 6, 6), ("method", "tm", 7, 7), ("method", "Foo::tpl", 9, 9),
        ("method", "Foo::Foo", 10, 10), ("method", "Foo::operator bool", 11, 11),
        ("function", "cfun", 12, 12),
    ],
    ("ruby", "edge/e.rb"): [
        ("class", "A", 1, 5), ("method", "name=", 2, 2), ("method", "[]", 3, 3),
        ("method", "===", 4, 4),
    ],
    # a macro before the return type is a parse error; names still recover
    ("c", "edge/e.c"): [
        ("function", "exported_fn", 2, 2), ("function", "attr_fn", 3, 3),
        ("function", "fp_returning", 4, 4), ("function", "kr", 5, 5),
    ],
    ("python", "edge/e.py"): [
        ("function", "outer", 1, 4), ("class", "Local", 2, 3), ("method", "m", 3, 3),
    ],
}


def _definitions(language: str, source: bytes) -> list[Definition]:
    return find_definitions(parse(source, language), language, source)


def _summary(definitions: list[Definition]) -> list[Expected]:
    return [(d.kind, d.name, d.start_line, d.end_line) for d in definitions]


@pytest.mark.parametrize("language", sorted(SAMPLE_FILES))
def test_sample_file_yields_the_hand_checked_definitions_in_document_order(
    language: str,
) -> None:
    source = (SNIPPETS / SAMPLE_FILES[language]).read_bytes()
    assert _summary(_definitions(language, source)) == EXPECTED[language]


@pytest.mark.parametrize(("language", "file_name"), sorted(EDGE_EXPECTED))
def test_edge_case_file_yields_the_hand_checked_definitions(
    language: str, file_name: str
) -> None:
    source = (SNIPPETS / file_name).read_bytes()
    expected = EDGE_EXPECTED[language, file_name]
    assert _summary(_definitions(language, source)) == expected


def test_depth_counts_enclosing_definitions() -> None:
    source = (SNIPPETS / "sample.py").read_bytes()
    depths = {d.name: d.depth for d in _definitions("python", source)}
    assert depths == {
        "cached": 0, "fetch": 0, "inner": 1, "Outer": 0, "Inner": 1, "inner_method": 2,
        "value": 1, "static_one": 1, "run": 1, "Point": 0, "norm": 1,
    }


def test_parsers_used_from_several_threads_give_the_same_definitions() -> None:
    jobs = [(language, (SNIPPETS / name).read_bytes()) for language, name in SAMPLE_FILES.items()]

    def summarise(job: tuple[str, bytes]) -> list[Expected]:
        return _summary(_definitions(*job))

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(summarise, jobs * 8))
    assert results == [EXPECTED[language] for language, _ in jobs * 8]


def test_expression_nested_beyond_the_recursion_limit_does_not_crash() -> None:
    nesting = 3 * sys.getrecursionlimit()
    source = ("x = " + "[" * nesting + "1" + "]" * nesting + "\n\n\ndef after():\n    pass\n")
    definitions = _definitions("python", source.encode())
    assert definitions == [Definition("function", "after", 4, 5, 0)]


def test_definitions_nested_beyond_the_recursion_limit_are_all_found() -> None:
    nesting = 1500
    source = "".join(f"function f{i}() {{\n" for i in range(nesting)) + "}\n" * nesting
    definitions = _definitions("javascript", source.encode())
    assert len(definitions) == nesting
    assert definitions[-1] == Definition("function", f"f{nesting - 1}", nesting, nesting + 1,
                                         nesting - 1)


def test_twenty_thousand_line_file_yields_every_definition() -> None:
    block = "# doc\n@decorator\ndef f{i}(a, b):\n    return [(a, (b, {{'k': a}}))]\n\n\n" \
        "class C{i}:\n    def m(self):\n        return 1\n\n\n"
    source = "".join(block.format(i=i) for i in range(2000))
    assert source.count("\n") >= 20_000
    definitions = _definitions("python", source.encode())
    assert len(definitions) == 6000
    last_block = 1999 * block.count("\n") + 1  # its "# doc" line belongs to f1999
    assert definitions[-3:] == [
        Definition("function", "f1999", last_block, last_block + 3, 0),
        Definition("class", "C1999", last_block + 6, last_block + 8, 0),
        Definition("method", "m", last_block + 7, last_block + 8, 1),
    ]


def test_unknown_language_is_rejected() -> None:
    with pytest.raises(ValueError, match="markdown"):
        parse(b"# title\n", "markdown")
    tree = parse(b"x = 1\n", "python")
    with pytest.raises(ValueError, match="markdown"):
        find_definitions(tree, "markdown", b"x = 1\n")


# ------------------------------------------------------------------------ language table


def test_table_covers_the_sixteen_tree_sitter_languages() -> None:
    assert set(SAMPLE_FILES) == AST_LANGUAGES
    assert all(spec.name == name for name, spec in LANGUAGES.items())


@pytest.mark.parametrize("language", sorted(LANGUAGES))
def test_every_node_type_in_the_table_exists_in_the_grammar(language: str) -> None:
    spec = LANGUAGES[language]
    grammar = get_language(language)  # type: ignore[arg-type]  # a str, not the Literal
    node_types = (
        set(spec.definitions) | set(spec.wrappers) | spec.sibling_prefixes | spec.comments
    )
    missing = [t for t in sorted(node_types) if grammar.id_for_node_kind(t, True) is None]
    assert missing == []


# ------------------------------------------------------------------------ detect_language


@pytest.mark.parametrize(
    ("language", "extension"),
    sorted(
        (spec.name, extension)
        for spec in LANGUAGES.values()
        for extension in spec.extensions
    ),
)
def test_each_table_extension_detects_its_language(language: str, extension: str) -> None:
    assert detect_language(f"src/module{extension}") == language


def test_c_headers_are_detected_as_cpp_because_that_grammar_reads_both() -> None:
    assert detect_language("include/util.h") == "cpp"
    assert detect_language("lib/util.c") == "c"


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("README.md", "markdown"), ("docs/guide.mdx", "markdown"), ("docs/index.rst", "rst"),
        ("config.yaml", "yaml"), (".github/workflows/ci.yml", "yaml"),
        ("pyproject.toml", "toml"), ("package.json", "json"), ("schema.sql", "sql"),
        ("index.html", "html"), ("style.css", "css"), ("theme.scss", "scss"),
        ("pom.xml", "xml"), ("setup.cfg", "ini"), ("api.proto", "proto"),
        ("schema.graphql", "graphql"), ("init.lua", "lua"), ("build.pl", "perl"),
        ("analysis.R", "r"), ("main.dart", "dart"), ("mix.exs", "elixir"),
        ("Main.hs", "haskell"), ("build.zig", "zig"), ("App.vue", "vue"),
        ("Page.svelte", "svelte"), ("rules.mk", "make"), ("deps.cmake", "cmake"),
        ("web.dockerfile", "dockerfile"), ("notes.txt", "text"),
    ],
)
def test_text_file_extension_gets_a_display_label(path: str, language: str) -> None:
    assert detect_language(path) == language


@pytest.mark.parametrize(
    ("path", "language"),
    [
        ("Makefile", "make"), ("sub/GNUmakefile", "make"), ("Dockerfile", "dockerfile"),
        ("docker/Dockerfile.dev", "dockerfile"), ("Rakefile", "ruby"), ("Gemfile", "ruby"),
        ("CMakeLists.txt", "cmake"), (".bashrc", "bash"),
    ],
)
def test_special_file_name_detects_its_language(path: str, language: str) -> None:
    assert detect_language(path) == language


def test_extension_is_matched_case_insensitively() -> None:
    assert detect_language("LEGACY.PY") == "python"
    assert detect_language("Notes.MD") == "markdown"


@pytest.mark.parametrize(
    ("first_line", "language"),
    [
        ("#!/bin/sh", "bash"), ("#!/bin/bash -e", "bash"), ("#!/usr/bin/env zsh", "bash"),
        ("#!/usr/bin/env python3", "python"), ("#!/usr/bin/python3.11", "python"),
        ("#!/usr/bin/env node", "javascript"),
        ("#!/usr/bin/env -S node --no-warnings", "javascript"),
        ("#!/usr/bin/env ruby", "ruby"), ("#!/usr/bin/php", "php"),
        ("#! /usr/bin/env bash", "bash"), ("\ufeff#!/bin/sh", "bash"),
    ],
)
def test_shebang_detects_the_language_of_a_file_without_extension(
    first_line: str, language: str
) -> None:
    assert detect_language("bin/tool", first_line) == language


def test_shebang_does_not_override_a_known_extension() -> None:
    assert detect_language("run.py", "#!/bin/sh") == "python"


@pytest.mark.parametrize(
    ("path", "first_line"),
    [("LICENSE", ""), ("data.bin", ""), ("bin/tool", "#!/usr/bin/env unknown-tool"),
     ("bin/tool", "echo hi"), ("bin/tool", "#!")],
)
def test_unrecognised_file_is_text(path: str, first_line: str) -> None:
    assert detect_language(path, first_line) == "text"
