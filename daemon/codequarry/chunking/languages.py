"""Which language a file is in, and what a definition looks like in each tree-sitter grammar.

The tables were checked node by node against tree-sitter-language-pack 0.13.0 (bundled
grammars, tree-sitter 0.26.1); tests/test_definitions.py pins the result per language.
Files in other languages get a plain label that is only used for display, filtering and
line-window chunking.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class LanguageSpec:
    """How definitions appear in one tree-sitter grammar.

    definitions: node type -> kind. A value of None marks a node type that is a
        definition only in some shapes (e.g. JS `const f = () => {}`); definitions.py
        decides those by looking at the node. Kinds of other entries may still be refined
        there (Go `type_spec` -> struct/interface, Kotlin `class_declaration` -> enum, ...).
    wrappers: node types that wrap a definition together with what belongs to it
        (decorators, `export`, `template <...>`), mapped to the field holding the
        definition (None when it is not a named field). The wrapper's span is the
        definition's span.
    sibling_prefixes: node types that precede a definition as a *sibling* yet belong to
        it (Rust `#[derive(..)]`, TypeScript member decorators).
    comments: comment node types; adjacent comments above a definition are its docs.
    """

    name: str
    extensions: tuple[str, ...]
    definitions: Mapping[str, str | None]
    wrappers: Mapping[str, str | None]
    sibling_prefixes: frozenset[str]
    comments: frozenset[str]


# JavaScript and TypeScript share most shapes. The None entries are decided per node:
# lexical/variable_declaration holding a function or class value, class fields holding
# an arrow function, `export default function () {}`, `module.exports.x = function`.
_JS_DEFINITIONS: dict[str, str | None] = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "method_definition": "method",
    "lexical_declaration": None,
    "variable_declaration": None,
    "field_definition": None,
    "export_statement": None,
    "expression_statement": None,
}

_TS_DEFINITIONS: dict[str, str | None] = {
    "function_declaration": "function",
    "generator_function_declaration": "function",
    "class_declaration": "class",
    "abstract_class_declaration": "class",
    "interface_declaration": "interface",
    "enum_declaration": "enum",
    "type_alias_declaration": "type",
    "internal_module": "namespace",  # namespace X {}
    "module": "module",  # declare module 'x' {}
    "method_definition": "method",
    "lexical_declaration": None,
    "variable_declaration": None,
    "public_field_definition": None,
    "export_statement": None,
    "expression_statement": None,
}

# Signatures without a body (TS method_signature, C prototypes, C++ in-class method
# declarations, Swift protocol requirements, Scala abstract `def`) are deliberately absent
# from the tables: they stay inside their parent's span.
_SPECS = (
    LanguageSpec(
        name="python",
        extensions=(".py", ".pyi", ".pyw"),
        definitions={"function_definition": "function", "class_definition": "class"},
        wrappers={"decorated_definition": "definition"},
        sibling_prefixes=frozenset(),
        # docstrings are strings inside the body, already within the span
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="javascript",
        extensions=(".js", ".mjs", ".cjs", ".jsx"),  # the grammar parses JSX
        definitions=_JS_DEFINITIONS,
        wrappers={"export_statement": "declaration"},
        sibling_prefixes=frozenset({"decorator"}),
        comments=frozenset({"comment", "html_comment"}),
    ),
    LanguageSpec(
        name="typescript",
        extensions=(".ts", ".mts", ".cts"),
        definitions=_TS_DEFINITIONS,
        wrappers={"export_statement": "declaration", "ambient_declaration": None},
        # class-member decorators are siblings in class_body (class decorators are not)
        sibling_prefixes=frozenset({"decorator"}),
        comments=frozenset({"comment", "html_comment"}),
    ),
    LanguageSpec(
        name="tsx",  # the typescript grammar cannot parse JSX
        extensions=(".tsx",),
        definitions=_TS_DEFINITIONS,
        wrappers={"export_statement": "declaration", "ambient_declaration": None},
        sibling_prefixes=frozenset({"decorator"}),
        comments=frozenset({"comment", "html_comment"}),
    ),
    LanguageSpec(
        name="go",
        extensions=(".go",),
        definitions={
            "function_declaration": "function",
            "method_declaration": "method",  # has a receiver, always top level
            "type_spec": "type",  # refined to struct / interface
            "type_alias": "type",  # type A = B
        },
        # `type X struct {}` is type_declaration > type_spec; a grouped `type ( ... )`
        # holds several specs and then wraps none of them
        wrappers={"type_declaration": None},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="rust",
        extensions=(".rs",),
        definitions={
            "function_item": "function",
            "struct_item": "struct",
            "union_item": "struct",
            "enum_item": "enum",
            "trait_item": "trait",
            "impl_item": "impl",
            "mod_item": "module",  # only `mod x { ... }`, not `mod x;`
            "type_item": "type",
            "macro_definition": "function",
        },
        wrappers={},
        sibling_prefixes=frozenset({"attribute_item"}),  # #[derive(...)]
        comments=frozenset({"line_comment", "block_comment"}),  # /// is a line_comment
    ),
    LanguageSpec(
        name="java",
        extensions=(".java",),
        definitions={
            "class_declaration": "class",
            "interface_declaration": "interface",
            "annotation_type_declaration": "interface",
            "enum_declaration": "enum",
            "record_declaration": "class",
            "method_declaration": "function",
            "constructor_declaration": "function",
            "compact_constructor_declaration": "function",
        },
        wrappers={},  # annotations are inside the `modifiers` child, so inside the span
        sibling_prefixes=frozenset(),
        comments=frozenset({"line_comment", "block_comment"}),
    ),
    LanguageSpec(
        name="c",
        extensions=(".c",),  # .h is parsed as C++: that grammar reads C headers too
        definitions={
            "function_definition": "function",
            "struct_specifier": "struct",  # only with a body, not inside a typedef
            "union_specifier": "struct",
            "enum_specifier": "enum",
            "type_definition": None,  # typedef struct {...} name_t;
        },
        wrappers={},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="cpp",
        extensions=(
            ".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++",
            ".ipp", ".tpp", ".inl", ".h",
        ),
        definitions={
            "function_definition": "function",  # Foo::bar or in a class -> method
            "class_specifier": "class",
            "struct_specifier": "struct",
            "union_specifier": "struct",
            "enum_specifier": "enum",
            "namespace_definition": "namespace",
            "concept_definition": "type",
            "type_definition": None,
        },
        wrappers={"template_declaration": None},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="csharp",
        extensions=(".cs", ".csx"),
        definitions={
            "namespace_declaration": "namespace",  # file-scoped `namespace X;` is not one
            "class_declaration": "class",
            "record_declaration": "class",
            "interface_declaration": "interface",
            "struct_declaration": "struct",
            "enum_declaration": "enum",
            "delegate_declaration": "type",
            "method_declaration": "function",
            "constructor_declaration": "function",
            "destructor_declaration": "function",
            "operator_declaration": "function",
            "conversion_operator_declaration": "function",
            "local_function_statement": "function",
        },
        wrappers={},  # [Attr] is an attribute_list child, inside the span
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),  # /// XML docs are plain comments
    ),
    LanguageSpec(
        name="ruby",
        extensions=(".rb", ".rake", ".gemspec", ".ru", ".rbw"),
        definitions={
            "class": "class",
            "module": "module",
            "method": "function",
            "singleton_method": "method",  # def self.x
        },
        wrappers={},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="php",
        extensions=(".php", ".phtml", ".php3", ".php4", ".php5", ".phps"),
        definitions={
            "function_definition": "function",
            "method_declaration": "method",
            "class_declaration": "class",
            "interface_declaration": "interface",
            "trait_declaration": "trait",
            "enum_declaration": "enum",
            "namespace_definition": "namespace",  # only `namespace X { }`, not `namespace X;`
        },
        wrappers={},  # #[Attr] is the `attributes` child, inside the span
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),
    ),
    LanguageSpec(
        name="kotlin",
        extensions=(".kt", ".kts"),
        definitions={
            "class_declaration": "class",  # also interface and enum class
            "object_declaration": "object",
            "companion_object": "object",
            "function_declaration": "function",
            "type_alias": "type",
        },
        wrappers={},  # annotations are inside the `modifiers` child
        sibling_prefixes=frozenset(),
        comments=frozenset({"line_comment", "multiline_comment"}),
    ),
    LanguageSpec(
        name="swift",
        extensions=(".swift",),
        definitions={
            "class_declaration": "class",  # also struct, enum, extension, actor
            "protocol_declaration": "interface",
            "function_declaration": "function",
            "init_declaration": "function",
            "deinit_declaration": "function",
            "subscript_declaration": "function",
            "typealias_declaration": "type",
        },
        wrappers={},  # @attr is inside the `modifiers` child
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment", "multiline_comment"}),
    ),
    LanguageSpec(
        name="scala",
        extensions=(".scala", ".sc", ".sbt"),
        definitions={
            "class_definition": "class",
            "object_definition": "object",
            "trait_definition": "trait",
            "enum_definition": "enum",
            "function_definition": "function",
            "extension_definition": "impl",
            "given_definition": "object",
            "type_definition": "type",
            "package_object": "object",
        },
        wrappers={},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment", "block_comment"}),
    ),
    LanguageSpec(
        name="bash",
        extensions=(".sh", ".bash", ".zsh", ".ksh"),
        definitions={"function_definition": "function"},
        wrappers={},
        sibling_prefixes=frozenset(),
        comments=frozenset({"comment"}),  # the shebang is a comment too
    ),
)

LANGUAGES: dict[str, LanguageSpec] = {spec.name: spec for spec in _SPECS}
AST_LANGUAGES: frozenset[str] = frozenset(LANGUAGES)

_AST_EXTENSIONS = {extension: spec.name for spec in _SPECS for extension in spec.extensions}

# Labels for files chunked by line windows.
_TEXT_EXTENSIONS = {
    ".md": "markdown", ".markdown": "markdown", ".mdx": "markdown", ".rst": "rst",
    ".adoc": "asciidoc", ".org": "org", ".tex": "latex", ".txt": "text",
    ".yaml": "yaml", ".yml": "yaml", ".toml": "toml", ".json": "json", ".jsonc": "json",
    ".json5": "json", ".jsonl": "json", ".ipynb": "json", ".ini": "ini", ".cfg": "ini",
    ".conf": "ini", ".properties": "properties", ".csv": "csv",
    ".xml": "xml", ".xsd": "xml", ".xsl": "xml", ".svg": "xml", ".plist": "xml",
    ".html": "html", ".htm": "html", ".xhtml": "html", ".css": "css", ".scss": "scss",
    ".sass": "sass", ".less": "less", ".vue": "vue", ".svelte": "svelte", ".astro": "astro",
    ".sql": "sql", ".proto": "proto", ".graphql": "graphql", ".gql": "graphql",
    ".dockerfile": "dockerfile", ".mk": "make", ".mak": "make", ".cmake": "cmake",
    ".tf": "hcl", ".tfvars": "hcl", ".hcl": "hcl", ".nix": "nix",
    ".bzl": "starlark", ".star": "starlark",
    ".lua": "lua", ".pl": "perl", ".pm": "perl", ".r": "r", ".dart": "dart",
    ".ex": "elixir", ".exs": "elixir", ".erl": "erlang", ".hrl": "erlang",
    ".hs": "haskell", ".lhs": "haskell", ".elm": "elm", ".ml": "ocaml", ".mli": "ocaml",
    ".fs": "fsharp", ".fsi": "fsharp", ".fsx": "fsharp", ".clj": "clojure",
    ".cljs": "clojure", ".cljc": "clojure", ".edn": "clojure", ".lisp": "commonlisp",
    ".el": "elisp", ".scm": "scheme", ".rkt": "racket", ".jl": "julia", ".nim": "nim",
    ".zig": "zig", ".v": "verilog", ".sv": "verilog", ".vhd": "vhdl", ".vhdl": "vhdl",
    ".groovy": "groovy", ".gradle": "groovy", ".m": "objc", ".mm": "objc",
    ".cu": "cuda", ".cuh": "cuda", ".glsl": "glsl", ".hlsl": "hlsl", ".sol": "solidity",
    ".cr": "crystal", ".d": "d", ".f90": "fortran", ".f": "fortran", ".pas": "pascal",
    ".asm": "asm", ".s": "asm", ".ps1": "powershell", ".psm1": "powershell",
    ".bat": "batch", ".cmd": "batch", ".fish": "fish", ".vim": "vim", ".awk": "awk",
    ".tcl": "tcl", ".gleam": "gleam", ".odin": "odin", ".hx": "haxe", ".cob": "cobol",
}

# Whole file names, matched before extensions (`CMakeLists.txt` is not text); dotfiles
# have no extension to match.
_FILE_NAMES = {
    "Makefile": "make", "makefile": "make", "GNUmakefile": "make",
    "Dockerfile": "dockerfile", "Containerfile": "dockerfile",
    "Rakefile": "ruby", "Gemfile": "ruby", "Podfile": "ruby", "Vagrantfile": "ruby",
    "Brewfile": "ruby", "Guardfile": "ruby", "Fastfile": "ruby", "Appfile": "ruby",
    "CMakeLists.txt": "cmake", "Jenkinsfile": "groovy",
    "BUILD": "starlark", "BUILD.bazel": "starlark", "WORKSPACE": "starlark",
    ".bashrc": "bash", ".bash_profile": "bash", ".bash_aliases": "bash", ".profile": "bash",
    ".zshrc": "bash", ".zprofile": "bash", ".zshenv": "bash",
    "go.mod": "gomod", "go.sum": "gosum", ".env": "dotenv",
}

# Interpreter (without version digits) named on a `#!` line.
_SHEBANG_INTERPRETERS = {
    "sh": "bash", "bash": "bash", "zsh": "bash", "ksh": "bash", "dash": "bash", "ash": "bash",
    "python": "python", "pypy": "python",
    "node": "javascript", "nodejs": "javascript",
    "ruby": "ruby", "php": "php", "perl": "perl", "lua": "lua", "rscript": "r",
}


def detect_language(path: str, first_line: str = "") -> str:
    """The language of the file at `path`: a key of LANGUAGES for code tree-sitter can
    chunk, otherwise a display label such as "markdown" or "yaml", or "text".

    `first_line` is consulted only for a `#!` line when the name says nothing.
    """
    file_name = os.path.basename(path)
    if file_name in _FILE_NAMES:
        return _FILE_NAMES[file_name]
    if file_name.startswith(("Dockerfile.", "Containerfile.")):  # Dockerfile.dev
        return "dockerfile"
    extension = os.path.splitext(file_name)[1].lower()
    if extension in _AST_EXTENSIONS:
        return _AST_EXTENSIONS[extension]
    if extension in _TEXT_EXTENSIONS:
        return _TEXT_EXTENSIONS[extension]
    return _shebang_language(first_line) or "text"


def _shebang_language(first_line: str) -> str | None:
    """`#!/bin/sh`, `#!/usr/bin/env python3`, `#!/usr/bin/env -S node --flag` ..."""
    line = first_line.lstrip("\ufeff")
    if not line.startswith("#!"):
        return None
    words = line[2:].split()
    if not words:
        return None
    program = os.path.basename(words[0])
    if program == "env":  # skip env's options and VAR=value assignments
        rest = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        if not rest:
            return None
        program = os.path.basename(rest[0])
    interpreter = re.sub(r"[\d.]+$", "", program.lower())  # python3.11 -> python
    return _SHEBANG_INTERPRETERS.get(interpreter)


def known_languages() -> frozenset[str]:
    """Every name detect_language can return: the tree-sitter languages and the labels."""
    return frozenset(LANGUAGES) | frozenset(_TEXT_EXTENSIONS.values()) | frozenset(
        _FILE_NAMES.values()) | frozenset(_SHEBANG_INTERPRETERS.values()) | {"text"}
