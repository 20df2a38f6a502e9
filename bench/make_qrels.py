#!/usr/bin/env python3
"""Build a labelled code-retrieval set from a real source tree.

The queries are the first sentences of docstrings / doc comments; the answer to each
query is the definition (function, method, constructor or class) the doc belongs to.
Every docstring / doc comment is removed from the indexed copy of the tree, so a search
engine cannot find the answer by matching the query text against the doc itself.

    python bench/make_qrels.py SOURCE_DIR OUT_DIR [--lang python|java|javascript]
        [--max-queries N] [--seed S] [--include GLOB ...] [--exclude GLOB ...]
        [--qrels PATH] [--no-git] [--stats]

SOURCE_DIR is a directory or a .zip archive.  The stripped copy goes to OUT_DIR/corpus
(made a git repository with one commit unless --no-git), the labels to OUT_DIR/qrels.jsonl
(or --qrels PATH), and a manifest with the counts to OUT_DIR/manifest.json.  One qrels line:

    {"id": "q0001", "query": "...", "symbol": "Class.method",
     "relevant": [{"path": "a/b.py", "start_line": 10, "end_line": 42}]}

Lines are 1-based and inclusive, refer to the stripped copy, and the span starts at the
first decorator / annotation / modifier (or at the `export` keyword in JavaScript).
"""

from __future__ import annotations

import argparse
import ast
import collections
import hashlib
import html
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tokenize
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tree_sitter import Node

EXTENSIONS: dict[str, tuple[str, ...]] = {
    "python": (".py",),
    "java": (".java",),
    "javascript": (".js", ".mjs", ".cjs"),
}
SKIP_DIRS = {".git", ".hg", ".svn", "__pycache__"}
TEST_DIRS = {"test", "tests", "__tests__", "testing", "spec", "specs"}
MIN_WORDS = 4
MAX_WORDS = 40
# first sentences that say nothing about the code they document
BAD_PREFIXES = (
    "see ",
    "see:",
    "{@inheritdoc",
    "inheritdoc",
    "@inheritdoc",
    "returns a string representation",
    "return a string representation",
    "same as ",
    "alias for ",
    "alias of ",
    "deprecated",
    "todo",
    "fixme",
    "xxx",
)


# a definition's first line names it, or starts with a decorator / annotation / modifier
HEAD_PREFIXES = ("@", "export", "public", "protected", "private", "static", "abstract", "final", "async")

# ---------------------------------------------------------------- data


@dataclass
class Target:
    """A documented definition in the stripped copy of one file."""

    symbol: str
    name: str
    kind: str
    doc: str  # raw doc text (Python: cleaned docstring; Java/JS: the comment as written)
    start_line: int
    end_line: int


@dataclass
class Candidate:
    path: str
    target: Target
    query: str


@dataclass
class Stats:
    files: int = 0
    lines: int = 0
    docs_removed: int = 0
    unparsable: list[str] = field(default_factory=list)
    targets: int = 0
    dropped: collections.Counter[str] = field(default_factory=collections.Counter)


class StripError(Exception):
    """The file could not be stripped safely; it is left out of the corpus."""


# ---------------------------------------------------------------- source files


def path_matcher(glob: str) -> re.Pattern[str]:
    """The product's path-glob semantics (`codequarry search --path`), as a Python regex."""
    from codequarry.search import glob_to_regex

    return re.compile(glob_to_regex(glob))


def iter_sources(
    source: Path, lang: str, includes: list[str], excludes: list[str]
) -> Iterator[tuple[str, bytes]]:
    """Yield (relative posix path, content) of the source files of `lang`, sorted by path."""
    inc = [path_matcher(g) for g in includes]
    exc = [path_matcher(g) for g in excludes]

    def wanted(rel: str) -> bool:
        if not rel.endswith(EXTENSIONS[lang]):
            return False
        if any(part in SKIP_DIRS for part in rel.split("/")[:-1]):
            return False
        if inc and not any(r.match(rel) for r in inc):
            return False
        return not any(r.match(rel) for r in exc)

    if source.is_file() and zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                if not info.is_dir() and wanted(info.filename):
                    yield info.filename, zf.read(info)
        return
    if not source.is_dir():
        raise SystemExit(f"make_qrels: {source} is neither a directory nor a zip archive")
    found: list[str] = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        for name in files:
            full = Path(root, name)
            rel = full.relative_to(source).as_posix()
            if full.is_file() and wanted(rel):
                found.append(rel)
    for rel in sorted(found):
        yield rel, (source / rel).read_bytes()


def is_test_file(rel: str) -> bool:
    parts = rel.split("/")
    name = parts[-1]
    stem = name.rsplit(".", 1)[0]
    return (
        any(p.lower() in TEST_DIRS for p in parts[:-1])
        or name.startswith("test_")
        or stem.endswith(("_test", "Test", "Tests", ".test", ".spec"))
        or name in ("conftest.py", "tests.py")
    )


# ---------------------------------------------------------------- python


def _py_defs(tree: ast.AST) -> list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]]:
    """All function/class definitions in a fixed traversal order, with dotted qualified names."""
    out: list[tuple[str, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = prefix + child.name
                out.append((qual, child))
                visit(child, qual + ".")
            else:
                visit(child, prefix)

    visit(tree, "")
    return out


def _docstring_expr(node: ast.AST) -> ast.Expr | None:
    body = getattr(node, "body", None)
    if not body or not isinstance(body, list):
        return None
    first = body[0]
    if (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    ):
        return first
    return None


def strip_python(data: bytes) -> tuple[bytes, list[Target], int]:
    """Remove module/class/function docstrings; keep every other byte as it was."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
        text = data.decode(encoding)
        tree = ast.parse(text)
    except (SyntaxError, UnicodeDecodeError, ValueError) as exc:
        raise StripError(f"does not parse: {exc}") from exc
    # ast column offsets are utf-8 byte offsets, so edit the utf-8 form of the text
    lines = text.encode("utf-8").splitlines(keepends=True)
    owners: list[ast.AST] = [tree] + [node for _, node in _py_defs(tree)]
    edits: list[tuple[int, int, list[bytes]]] = []  # (first line index, last line index, new lines)
    pass_for: set[int] = set()  # id() of owners whose docstring became `pass`
    for owner in owners:
        expr = _docstring_expr(owner)
        if expr is None:
            continue
        assert expr.end_lineno is not None
        assert expr.end_col_offset is not None
        l1, l2 = expr.lineno - 1, expr.end_lineno - 1
        before = lines[l1][: expr.col_offset]
        after = lines[l2][expr.end_col_offset :]
        body = owner.body  # type: ignore[attr-defined]
        needs_pass = len(body) == 1 and not isinstance(owner, ast.Module)
        rest = after.strip()
        if before.strip() == b"" and (rest == b"" or rest.startswith(b"#")):
            if needs_pass:
                new = [before + b"pass" + after]
            elif rest:  # keep a trailing comment on its own line
                new = [before + after.lstrip(b" \t")]
            else:
                new = []
        else:  # shares a line with other code: `def f(): "doc"` or `"doc"; x = 1`
            new = [before + b"pass" + after]
            needs_pass = True
        if needs_pass:
            pass_for.add(id(owner))
        edits.append((l1, l2, new))
    for l1, l2, new in sorted(edits, reverse=True):
        lines[l1 : l2 + 1] = new
    stripped_text = b"".join(lines).decode("utf-8")
    try:
        new_tree = ast.parse(stripped_text)
    except SyntaxError as exc:
        raise StripError(f"stripped copy does not parse: {exc}") from exc

    # the stripped tree must equal the original with the docstrings taken out
    expected = ast.parse(text)
    exp_owners: list[ast.AST] = [expected] + [n for _, n in _py_defs(expected)]
    for orig, exp in zip(owners, exp_owners, strict=True):
        if _docstring_expr(exp) is not None:
            body = exp.body  # type: ignore[attr-defined]
            if id(orig) in pass_for:
                body[0] = ast.Pass()
            else:
                del body[0]
    if ast.dump(expected) != ast.dump(new_tree):
        raise StripError("stripped copy is not the original minus its docstrings")

    new_defs = _py_defs(new_tree)
    old_defs = _py_defs(tree)
    targets: list[Target] = []
    for (qual, old), (qual2, new_node) in zip(old_defs, new_defs, strict=True):
        assert qual == qual2
        doc = ast.get_docstring(old)
        if not doc:
            continue
        start = min([new_node.lineno] + [d.lineno for d in new_node.decorator_list])
        assert new_node.end_lineno is not None
        kind = "class" if isinstance(new_node, ast.ClassDef) else "function"
        targets.append(Target(qual, new_node.name, kind, doc, start, new_node.end_lineno))
    n_docs = len(edits)
    return stripped_text.encode(encoding), targets, n_docs


# ---------------------------------------------------------------- java / javascript (tree-sitter)

COMMENT_TYPES = {"comment", "block_comment", "line_comment", "html_comment"}
JAVA_TYPES = {
    "class_declaration": "class",
    "interface_declaration": "class",
    "enum_declaration": "class",
    "record_declaration": "class",
    "annotation_type_declaration": "class",
    "method_declaration": "method",
    "annotation_type_element_declaration": "method",
    "constructor_declaration": "constructor",
    "compact_constructor_declaration": "constructor",
}
# the nodes whose names qualify the names of what they contain
CLASS_NODES = {
    "class_declaration",
    "class",
    "interface_declaration",
    "enum_declaration",
    "record_declaration",
    "annotation_type_declaration",
}
JS_FUNCTION_VALUES = {
    "function_expression",
    "function",
    "arrow_function",
    "generator_function",
    "class",
}


def _text(node: Node | None) -> str:
    if node is None or node.text is None:
        return ""
    return node.text.decode("utf-8", "replace")


def is_doc_comment(node: Node) -> bool:
    raw = node.text or b""
    return node.type in COMMENT_TYPES and raw.startswith(b"/**") and raw != b"/**/"


def java_decl(node: Node) -> tuple[str, str] | None:
    kind = JAVA_TYPES.get(node.type)
    if kind is None:
        return None
    return kind, _text(node.child_by_field_name("name"))


def js_decl(node: Node) -> tuple[str, str] | None:
    t = node.type
    if t in ("function_declaration", "generator_function_declaration", "class_declaration"):
        return ("class" if t == "class_declaration" else "function"), _text(node.child_by_field_name("name"))
    if t == "method_definition":
        return "method", _text(node.child_by_field_name("name"))
    if t == "export_statement":
        decl = node.child_by_field_name("declaration") or node.child_by_field_name("value")
        return js_decl(decl) if decl is not None else None
    if t in ("function_expression", "function", "generator_function", "class") and node.child_by_field_name(
        "name"
    ):
        return ("class" if t == "class" else "function"), _text(node.child_by_field_name("name"))
    if t in ("lexical_declaration", "variable_declaration"):
        decls = [c for c in node.named_children if c.type == "variable_declarator"]
        if len(decls) == 1:
            value = decls[0].child_by_field_name("value")
            if value is not None and value.type in JS_FUNCTION_VALUES:
                kind = "class" if value.type == "class" else "function"
                return kind, _text(decls[0].child_by_field_name("name"))
        return None
    if t in ("field_definition", "public_field_definition"):
        value = node.child_by_field_name("value")
        if value is not None and value.type in JS_FUNCTION_VALUES:
            return "method", _text(node.child_by_field_name("property") or node.child_by_field_name("name"))
        return None
    if t == "pair":
        value = node.child_by_field_name("value")
        if value is not None and value.type in JS_FUNCTION_VALUES:
            return "method", _text(node.child_by_field_name("key")).strip("'\"")
        return None
    if t == "expression_statement":
        expr = node.named_children[0] if node.named_children else None
        if expr is None or expr.type != "assignment_expression":
            return None
        left, right = expr.child_by_field_name("left"), expr.child_by_field_name("right")
        if right is None or left is None or right.type not in JS_FUNCTION_VALUES:
            return None
        kind = "class" if right.type == "class" else "function"
        name = _text(left).rsplit(".", 1)[-1]
        own = right.child_by_field_name("name")
        if name == "exports" and own is not None:
            name = _text(own)
        return kind, name
    return None


def _enclosing(node: Node, decl: Callable[[Node], tuple[str, str] | None]) -> str:
    """Dotted names of the classes around `node`."""
    names: list[str] = []
    parent = node.parent
    while parent is not None:
        info = decl(parent)
        if info is not None and info[0] == "class" and parent.type in CLASS_NODES:
            names.append(info[1])
        parent = parent.parent
    return ".".join(reversed(names))


def _leaves(root: Node) -> list[Node]:
    """Non-comment leaf nodes in document order."""
    out: list[Node] = []
    stack = [root]
    while stack:
        node = stack.pop()
        if node.type in COMMENT_TYPES:
            continue
        if node.child_count == 0:
            out.append(node)
        else:
            stack.extend(reversed(node.children))
    return out


def _walk(root: Node) -> Iterator[Node]:
    stack = [root]
    while stack:
        node = stack.pop()
        yield node
        stack.extend(reversed(node.children))


def strip_treesitter(data: bytes, lang: str) -> tuple[bytes, list[Target], int]:
    """Remove `/** ... */` comments; keep every other byte (bar the whitespace they leave)."""
    from tree_sitter_language_pack import get_parser  # heavy import, only when needed

    parser = get_parser(lang)  # type: ignore[arg-type]
    decl = java_decl if lang == "java" else js_decl
    tree = parser.parse(data)
    docs = [n for n in _walk(tree.root_node) if is_doc_comment(n)]

    # documented declarations, found on the original tree
    attached: list[tuple[Node, Node, tuple[str, str]]] = []  # (comment, declaration, (kind, name))
    for comment in docs:
        sib = comment.next_sibling
        while sib is not None and sib.type in COMMENT_TYPES and not is_doc_comment(sib):
            sib = sib.next_sibling
        if sib is None or sib.type in COMMENT_TYPES:
            continue
        info = decl(sib)
        if info is not None and info[1]:
            attached.append((comment, sib, info))

    # cut the comments out, from the end so byte offsets stay valid
    out = bytearray(data)
    for comment in sorted(docs, key=lambda n: n.start_byte, reverse=True):
        s, e = comment.start_byte, comment.end_byte
        line_start = data.rfind(b"\n", 0, s) + 1
        nl = data.find(b"\n", e)
        line_end = len(data) if nl < 0 else nl
        before, after = data[line_start:s], data[e:line_end]
        if before.strip() == b"" and after.strip() == b"":
            s, e = line_start, min(line_end + 1, len(data))  # the whole line(s)
        elif after.strip() == b"":
            s -= len(before) - len(before.rstrip())  # trailing comment: drop the blanks before it
            e = line_end
        else:
            e += len(after) - len(after.lstrip())  # `/** x */ int y;` -> `int y;`
        del out[s:e]
    stripped = bytes(out)

    # the stripped copy must have the same tokens, in the same order
    new_tree = parser.parse(stripped)
    old_leaves, new_leaves = _leaves(tree.root_node), _leaves(new_tree.root_node)
    if [(n.type, n.text) for n in old_leaves] != [(n.type, n.text) for n in new_leaves]:
        raise StripError("stripped copy does not have the original's tokens")
    if any(is_doc_comment(n) for n in _walk(new_tree.root_node)):
        raise StripError("a doc comment survived stripping")
    index: dict[int, int] = {}
    for i, n in enumerate(old_leaves):
        index.setdefault(n.start_byte, i)
    last_index = {n.end_byte: i for i, n in enumerate(old_leaves)}

    targets: list[Target] = []
    for comment, node, (kind, name) in attached:
        first = index.get(node.start_byte)
        last = last_index.get(node.end_byte)
        if first is None or last is None:
            continue
        start = new_leaves[first].start_point[0] + 1
        end = new_leaves[last].end_point[0] + 1
        outer = _enclosing(node, decl)
        symbol = f"{outer}.{name}" if outer else name
        targets.append(Target(symbol, name, kind, _text(comment), start, end))
    return stripped, targets, len(docs)


# ---------------------------------------------------------------- queries

ABBREVIATIONS = {"e.g", "i.e", "cf", "vs", "viz", "approx", "incl", "resp", "al", "ca", "esp"}
LIST_ITEM = re.compile(r"\s*(?:[-*+\u2022]|\d+[.)])\s+")
PY_SECTION = re.compile(
    r"^\s*(?:(?:Args|Arguments|Parameters|Params|Returns?|Raises|Yields?|Examples?|Notes?|Attributes"
    r"|Keyword Args|Keyword Arguments|Usage|Warnings?|See Also|Todo|References)\s*:?\s*$"
    r"|:(?:param|type|returns?|rtype|raises?|arg|ivar|cvar|var|keyword|kwarg)\b|-{3,}\s*$|>>>|\.\. )"
)
# "f(x) -> y", "a, b = f(x)": a signature line in front of the description
PY_SIGNATURE = re.compile(r"(?:[\w, ]+=\s*)?[\w.]+\(.*\)(?:\s*->\s*\S.*)?")


def first_sentence(text: str) -> str:
    """The text up to the first `.`, `!` or `?` that ends a sentence."""
    text = " ".join(text.split())
    for m in re.finditer(r"[.!?](?=\s|$)", text):
        word = text[: m.start()].rsplit(" ", 1)[-1].lstrip("(\"'").lower()
        if m.group() == "." and word in ABBREVIATIONS:
            continue  # "e.g. foo"
        nxt = text[m.end() :].lstrip()
        if nxt[:1].islower() and (word == "etc" or "." in word):
            continue  # "foo, bar, etc. and baz", "a.b. c"
        return text[: m.end()]
    return text


def first_paragraph(text: str) -> str:
    """Lines up to the first blank line or list item (a leading bullet is dropped)."""
    lines = text.strip().splitlines()
    if lines and LIST_ITEM.match(lines[0]):
        lines[0] = LIST_ITEM.sub("", lines[0], count=1)
    kept: list[str] = []
    for line in lines:
        if not line.strip() or (kept and LIST_ITEM.match(line)):
            break
        kept.append(line)
    return "\n".join(kept)


def clean_python(doc: str) -> str:
    paragraphs = [p for p in re.split(r"\n\s*\n", doc.strip()) if p.strip()]
    para = ""
    for p in paragraphs:
        plines = p.strip().splitlines()
        if PY_SIGNATURE.fullmatch(plines[0].strip()):
            plines = plines[1:]
            if not plines:
                continue
        kept = []
        for line in plines:
            if PY_SECTION.match(line):
                break
            kept.append(line)
        para = first_paragraph("\n".join(kept))
        break
    # a Google-style property type, "Optional[float]: Time elapsed ..."
    s = re.sub(r"^[A-Za-z_][\w.]*(?:\[[^:]*\])?:\s+(?=\S)", "", para)
    s = re.sub(  # :func:`a.b`, :class:`~a.B` (shown as "B"), :ref:`title <target>`
        r":[\w:.-]+:`(~?)([^`<]*?)\s*(?:<[^>`]*>)?`",
        lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2),
        s,
    )
    s = re.sub(r"`([^`<]*?)\s*<[^>`]+>`_{1,2}", r"\1", s)  # `text <url>`_
    s = re.sub(r"``(.+?)``", r"\1", s)
    s = re.sub(r"`([^`'\s]+)'", r"\1", s)  # old-style `quoting'

    s = re.sub(r"`([^`]+)`_{0,2}", r"\1", s)
    s = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", s)
    s = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", s)
    return first_sentence(s)


def _doc_comment_body(raw: str) -> str:
    body = raw.removeprefix("/**").removesuffix("*/")
    lines = [re.sub(r"^\s*\*+ ?", "", line) for line in body.splitlines()]
    return "\n".join(lines)


def _inline_tags(s: str, render: Callable[[str, str], str]) -> str:
    """Replace `{@tag content}` (content may hold balanced braces) with render(tag, content)."""
    out: list[str] = []
    i = 0
    while True:
        j = s.find("{@", i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        out.append(s[i:j])
        m = re.match(r"\{@(\w+)\s?", s[j:])
        if m is None:
            out.append("{@")
            i = j + 2
            continue
        depth, k = 1, j + m.end()
        while k < len(s) and depth:
            depth += {"{": 1, "}": -1}.get(s[k], 0)
            k += 1
        content = s[j + m.end() : k - 1 if depth == 0 else k]
        out.append(render(m.group(1), _inline_tags(content, render)))
        i = k


def _java_ref(ref: str) -> str:
    """`java.util.Map#put(Object, Object)` -> `Map.put`, `#get(int)` -> `get`."""
    ref = re.sub(r"\(.*\)$", "", ref.strip())
    cls, _, member = ref.partition("#")
    cls = cls.rsplit(".", 1)[-1]
    return f"{cls}.{member}" if cls and member else cls or member


def _render_tag(tag: str, content: str) -> str:
    tag = tag.lower()
    if tag in ("link", "linkplain"):
        ref, _, label = content.strip().partition(" ")
        if "|" in ref and not label:  # JSDoc {@link target|label}
            ref, _, label = ref.partition("|")
        return label.strip() or _java_ref(ref)
    if tag == "value":
        return _java_ref(content) if content.strip() else ""
    if tag == "return":  # Java 16+: `{@return the size}` reads "Returns the size."
        return f"Returns {content.strip()}."
    if tag in ("docroot", "inheritdoc"):
        return ""
    if tag == "index":
        m = re.match(r'\s*(?:"([^"]*)"|(\S+))', content)
        return (m.group(1) or m.group(2)) if m else ""
    # {@code List<String>}: escaped so that the HTML tag removal leaves it alone
    return html.escape(content.strip(), quote=False) if tag in ("code", "literal") else content.strip()


HTML_BREAK = re.compile(
    r"<\s*/?\s*(?:p|pre|ul|ol|li|dl|dt|dd|table|tr|td|th|h[1-6]|blockquote|div|hr)\b[^>]*>", re.I
)


def clean_doc_comment(raw: str, lang: str) -> str:
    body = _doc_comment_body(raw)
    desc_lines: list[str] = []
    for line in body.splitlines():
        if re.match(r"\s*@\w", line):
            break  # block tags (@param, @return, ...) end the description
        desc_lines.append(line)
    desc = "\n".join(desc_lines).strip()
    if lang == "javascript" and not desc:  # `@description text` / `@summary text`
        m = re.search(r"@(?:description|summary|desc)\s+(.*?)(?=\n\s*@\w|\Z)", body, re.S)
        desc = m.group(1).strip() if m else ""
    if re.match(r"\{@inheritDoc\}", desc, re.I):
        return ""
    desc = _inline_tags(desc, _render_tag)
    if lang == "javascript":  # markdown
        desc = re.sub(r"`([^`]+)`", lambda m: html.escape(m.group(1), quote=False), desc)
        desc = re.sub(r"\[([^\]]+)\]\([^)]*\)", r"\1", desc)
        desc = re.sub(r"\*\*(\S(?:.*?\S)?)\*\*", r"\1", desc)
        desc = re.sub(r"(?<![\w*])\*(\S(?:[^*]*?\S)?)\*(?![\w*])", r"\1", desc)
    desc = HTML_BREAK.sub("\n\n", desc)
    s = first_paragraph(desc)
    s = re.sub(r"<[^>]+>", "", s)
    return first_sentence(html.unescape(s))


def finish_query(sentence: str) -> str:
    q = " ".join(sentence.split()).strip()
    q = q.rstrip(" .:;,")
    return q


def reject_reason(query: str) -> str | None:
    words = len(query.split())
    if words < MIN_WORDS:
        return "too short"
    if words > MAX_WORDS:
        return "too long"
    low = query.lower()
    if low.startswith(BAD_PREFIXES):
        return "boilerplate"
    if not re.search(r"[A-Za-z]{3}", query):
        return "no words"
    chars = [c for c in query if not c.isspace()]
    if (
        sum(c.isalpha() for c in chars) < 0.7 * len(chars)
        or re.match(r"[\w-]+ = ", query)  # a grammar rule, `addr-spec = local-part "@" domain`
        or re.search(r"(?:^|\s)\d*\*\(", query)  # ABNF repetition, `*( ";" parameter )`
    ):
        return "not prose"
    return None


# ---------------------------------------------------------------- main


def git_commit(corpus: Path, message: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "make_qrels",
        "GIT_AUTHOR_EMAIL": "make_qrels@localhost",
        "GIT_COMMITTER_NAME": "make_qrels",
        "GIT_COMMITTER_EMAIL": "make_qrels@localhost",
        "GIT_AUTHOR_DATE": "2000-01-01T00:00:00Z",
        "GIT_COMMITTER_DATE": "2000-01-01T00:00:00Z",
    }

    def git(*args: str) -> str:
        res = subprocess.run(
            ["git", "-c", "init.defaultBranch=main", "-c", "commit.gpgsign=false", *args],
            cwd=corpus,
            env=env,
            check=True,
            capture_output=True,
            text=True,
        )
        return res.stdout.strip()

    git("init", "-q")
    git("add", "-A")
    git("commit", "-q", "--no-verify", "-m", message)
    return git("rev-parse", "HEAD")


def print_stats(cands: list[Candidate], chosen: list[Candidate], stats: Stats, seed: int) -> None:
    err = sys.stderr
    print(f"  files={stats.files} lines={stats.lines} doc comments removed={stats.docs_removed}", file=err)
    if stats.unparsable:
        print(f"  left out (could not strip safely): {len(stats.unparsable)}", file=err)
        for item in stats.unparsable[:10]:
            print(f"    {item}", file=err)
    print(f"  documented definitions={stats.targets} dropped={dict(stats.dropped)}", file=err)
    print(f"  candidate queries={len(cands)} chosen={len(chosen)}", file=err)
    if not chosen:
        return
    words = [len(c.query.split()) for c in chosen]
    spans = [c.target.end_line - c.target.start_line + 1 for c in chosen]
    kinds = collections.Counter(c.target.kind for c in chosen)
    files = len({c.path for c in chosen})
    print(
        f"  query words: min={min(words)} median={statistics.median(words)} max={max(words)};"
        f" span lines: median={statistics.median(spans)} max={max(spans)};"
        f" kinds={dict(kinds)}; distinct files={files}",
        file=err,
    )
    rng = random.Random(seed + 1)
    for c in rng.sample(chosen, min(10, len(chosen))):
        t = c.target
        print(f"    [{c.path}:{t.start_line}-{t.end_line} {t.symbol}] {c.query}", file=err)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("source", type=Path, help="source directory or .zip archive")
    ap.add_argument("out", type=Path, help="output directory (gets corpus/, qrels.jsonl, manifest.json)")
    ap.add_argument("--lang", choices=sorted(EXTENSIONS), default="python")
    ap.add_argument("--max-queries", type=int, default=0, help="sample this many queries (0: all)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--include", nargs="+", default=[], metavar="GLOB", help="paths to keep (relative)")
    ap.add_argument("--exclude", nargs="+", default=[], metavar="GLOB", help="paths to leave out")
    ap.add_argument("--qrels", type=Path, help="where to write the labels (default OUT/qrels.jsonl)")
    ap.add_argument("--no-git", action="store_true", help="do not make the corpus a git repository")
    ap.add_argument("--stats", action="store_true", help="print statistics and 10 sample queries")
    args = ap.parse_args(argv)

    out: Path = args.out
    corpus = out / "corpus"
    manifest_path = out / "manifest.json"
    if corpus.exists():
        if not manifest_path.exists():
            raise SystemExit(f"make_qrels: {corpus} exists and was not made by this script; not touching it")
        shutil.rmtree(corpus)
    corpus.mkdir(parents=True)

    stats = Stats()
    cands: list[Candidate] = []
    digest = hashlib.sha256()
    for rel, data in iter_sources(args.source, args.lang, args.include, args.exclude):
        try:
            if args.lang == "python":
                stripped, targets, n_docs = strip_python(data)
            else:
                stripped, targets, n_docs = strip_treesitter(data, args.lang)
        except StripError as exc:
            stats.unparsable.append(f"{rel}: {exc}")
            continue
        dest = corpus / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(stripped)
        digest.update(rel.encode() + b"\0" + hashlib.sha256(stripped).digest())
        stats.files += 1
        stats.lines += stripped.count(b"\n")
        stats.docs_removed += n_docs
        stripped_lines = stripped.split(b"\n")
        for t in targets:
            stats.targets += 1
            if is_test_file(rel):
                stats.dropped["test file"] += 1
                continue
            if t.name.startswith(("_", "#")):
                stats.dropped["private name"] += 1
                continue
            # sanity: the span starts where the definition (or its decorator/annotation) starts
            head = stripped_lines[t.start_line - 1].decode("utf-8", "replace").strip()
            if not head or (t.name not in head and not head.startswith(HEAD_PREFIXES)):
                print(
                    f"make_qrels: {rel}:{t.start_line}: {head!r} does not start {t.symbol}", file=sys.stderr
                )
                stats.dropped["unverified span"] += 1
                continue
            sentence = clean_python(t.doc) if args.lang == "python" else clean_doc_comment(t.doc, args.lang)
            query = finish_query(sentence)
            reason = reject_reason(query)
            if reason:
                stats.dropped[reason] += 1
                continue
            cands.append(Candidate(rel, t, query))

    # the same query text twice cannot name a single answer: drop all copies
    counts = collections.Counter(c.query.lower() for c in cands)
    dup = sum(1 for c in cands if counts[c.query.lower()] > 1)
    if dup:
        stats.dropped["duplicate"] += dup
    cands = [c for c in cands if counts[c.query.lower()] == 1]

    chosen = list(cands)
    if args.max_queries and len(chosen) > args.max_queries:
        chosen = random.Random(args.seed).sample(chosen, args.max_queries)
    chosen.sort(key=lambda c: (c.path, c.target.start_line, c.target.symbol))

    qrels_path: Path = args.qrels or out / "qrels.jsonl"
    qrels_path.parent.mkdir(parents=True, exist_ok=True)
    with qrels_path.open("w", encoding="utf-8") as fh:
        for i, c in enumerate(chosen, 1):
            row: dict[str, Any] = {
                "id": f"q{i:04d}",
                "query": c.query,
                "symbol": c.target.symbol,
                "relevant": [
                    {"path": c.path, "start_line": c.target.start_line, "end_line": c.target.end_line}
                ],
            }
            fh.write(json.dumps(row, ensure_ascii=False) + "\n")

    commit = ""
    if not args.no_git:
        commit = git_commit(corpus, f"corpus stripped of doc comments from {args.source}")
    manifest = {
        "source": str(args.source),
        "lang": args.lang,
        "include": args.include,
        "exclude": args.exclude,
        "seed": args.seed,
        "max_queries": args.max_queries,
        "files": stats.files,
        "lines": stats.lines,
        "doc_comments_removed": stats.docs_removed,
        "left_out": stats.unparsable,
        "documented_definitions": stats.targets,
        "dropped": dict(stats.dropped),
        "candidates": len(cands),
        "queries": len(chosen),
        "corpus_sha256": digest.hexdigest(),
        "git_commit": commit,
        "qrels": str(qrels_path),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    if args.stats:
        print_stats(cands, chosen, stats, args.seed)
    left_out = f" left_out={len(stats.unparsable)}" if stats.unparsable else ""
    print(
        f"make_qrels: lang={args.lang} files={stats.files}{left_out}"
        f" doc_comments_removed={stats.docs_removed} candidates={len(cands)} queries={len(chosen)}"
        f" corpus={corpus} qrels={qrels_path}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
