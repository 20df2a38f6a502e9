#!/usr/bin/env python3
"""The "asked" question sets: questions written by hand the way people ask a search box
or an agent, over real, unmodified code (docstrings and comments kept), each labelled
with the definition that answers it.

    python bench/make_asked.py corpus NAME      # copy the sources into $OUT/asked-NAME/corpus (git)
    python bench/make_asked.py list NAME        # every definition: path::qualified.name lines first-doc-line
    python bench/make_asked.py build NAME       # data/asked/NAME.jsonl -> asked-NAME-{tune,report}.jsonl
    python bench/make_asked.py stats NAME       # questions without the answer's name / with an identifier

The hand-written source is `bench/data/asked/NAME.jsonl`, one question a line:
`{"query": "...", "answers": ["path::Qualified.name", ...]}`. `build` resolves every
answer to the span of that definition in the corpus (1-based inclusive lines, from the
first decorator / annotation / modifier to the last line; an overloaded Java name takes
its first declaration unless written `name#2`), refuses unknown names, and splits the
questions with a fixed random permutation (seed 0): the first half (rounded up) is the
tuning set `asked-NAME-tune.jsonl`, the rest the report set `asked-NAME-report.jsonl`.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import random
import re
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

from make_qrels import _enclosing, _walk, git_commit, iter_sources, java_decl

DATA = Path(__file__).resolve().parent / "data"
OUT = Path(os.environ.get("OUT", "/tmp/cq-bench"))
SEED = 0

# name -> (language, source directory or zip, include globs)
STDLIB = Path(sys.modules["os"].__file__ or "").parent
SOURCES: dict[str, tuple[str, Path, list[str]]] = {
    "python": ("python", STDLIB, [
        "shutil.py", "tarfile.py", "zipfile.py", "gzip.py", "csv.py", "argparse.py", "subprocess.py",
        "pathlib.py", "tempfile.py", "textwrap.py", "difflib.py", "configparser.py", "sched.py",
        "heapq.py", "functools.py", "glob.py", "fnmatch.py", "base64.py", "smtplib.py",
        "socketserver.py", "string.py", "statistics.py", "calendar.py", "http/cookiejar.py",
        "http/server.py", "urllib/request.py", "urllib/parse.py", "logging/handlers.py",
        "email/utils.py", "json/decoder.py", "json/encoder.py", "secrets.py", "uuid.py",
        "ipaddress.py", "filecmp.py", "mimetypes.py", "netrc.py", "shlex.py", "queue.py",
        "threading.py", "contextlib.py", "copy.py", "pprint.py", "bisect.py", "hmac.py",
        "getpass.py", "locale.py", "zipapp.py", "plistlib.py", "wave.py"]),
    "java": ("java", Path("/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"), [
        "java.base/java/net/*.java", "java.base/java/util/zip/*.java"]),
    # fresh code for a held-out Java set (java6): none of java.net or java.util.zip
    "java2": ("java", Path("/usr/lib/jvm/temurin-25-jdk-amd64/lib/src.zip"), [
        "java.base/java/io/*.java", "java.base/java/nio/file/*.java", "java.base/java/text/*.java",
        "java.logging/java/util/logging/*.java", "java.base/java/util/regex/*.java"]),
}


def corpus_dir(name: str) -> Path:
    return OUT / f"asked-{name}" / "corpus"


def make_corpus(name: str) -> None:
    lang, source, includes = SOURCES[name]
    includes = ["/" + glob for glob in includes]  # anchored: "copy.py" is the top-level module only
    root = corpus_dir(name)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    count = 0
    for rel, data in iter_sources(source, lang, includes, []):
        if lang == "java" and rel.startswith("java."):
            rel = rel.split("/", 1)[1]  # drop the module directory: java/io/File.java
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
        count += 1
    commit = git_commit(root, f"asked-{name} corpus")
    print(f"{root}: {count} files, commit {commit}", file=sys.stderr)


def definitions(name: str) -> Iterator[tuple[str, str, int, int, str]]:
    """(path, qualified name, start line, end line, first doc line) of every definition."""
    lang = SOURCES[name][0]
    root = corpus_dir(name)
    for path in sorted(p for p in root.rglob("*") if p.is_file() and ".git" not in p.parts):
        rel = path.relative_to(root).as_posix()
        data = path.read_bytes()
        if lang == "python" and rel.endswith(".py"):
            yield from _python_defs(rel, data)
        elif lang == "java" and rel.endswith(".java"):
            yield from _java_defs(rel, data)


def _python_defs(rel: str, data: bytes) -> Iterator[tuple[str, str, int, int, str]]:
    tree = ast.parse(data)

    def visit(node: ast.AST, prefix: str) -> Iterator[tuple[str, str, int, int, str]]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                qual = prefix + child.name
                start = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                doc = (ast.get_docstring(child) or "").strip().split("\n")[0]
                yield rel, qual, start, child.end_lineno or child.lineno, doc
                yield from visit(child, qual + ".")
            else:
                yield from visit(child, prefix)

    yield from visit(tree, "")


def _java_defs(rel: str, data: bytes) -> Iterator[tuple[str, str, int, int, str]]:
    from tree_sitter_language_pack import get_parser

    tree = get_parser("java").parse(data)
    for node in _walk(tree.root_node):
        info = java_decl(node)
        if info is None or not info[1]:
            continue
        outer = _enclosing(node, java_decl)
        qual = f"{outer}.{info[1]}" if outer else info[1]
        doc = ""
        prev = node.prev_named_sibling
        if prev is not None and prev.type == "block_comment" and prev.text:
            body = prev.text.decode(errors="replace").strip("/*").strip()
            doc = " ".join(line.strip().lstrip("*").strip() for line in body.splitlines()[:2]).strip()
        yield rel, qual, node.start_point[0] + 1, node.end_point[0] + 1, doc[:120]


def build(name: str) -> None:
    index: dict[str, list[tuple[int, int]]] = {}
    for rel, qual, start, end, _ in definitions(name):
        index.setdefault(f"{rel}::{qual}", []).append((start, end))
    written = [json.loads(line) for line in (DATA / "asked" / f"{name}.jsonl").read_text().splitlines()
               if line.strip()]
    out = []
    errors = []
    for item in written:
        spans = []
        for answer in item["answers"]:
            key, _, nth = answer.partition("#")
            found = index.get(key)
            if not found or len(found) < int(nth or 1):
                errors.append(f"{item['query']!r}: no definition {answer}")
                continue
            start, end = found[int(nth or 1) - 1]
            spans.append({"path": key.split("::")[0], "start_line": start, "end_line": end})
        out.append({"query": item["query"], "relevant": spans})
    if errors:
        raise SystemExit("\n".join(errors))
    queries = [q["query"] for q in out]
    if len(set(queries)) != len(queries):
        raise SystemExit("a question occurs twice")
    order = list(range(len(out)))
    random.Random(SEED).shuffle(order)
    half = (len(out) + 1) // 2
    for role, chosen in (("tune", sorted(order[:half])), ("report", sorted(order[half:]))):
        target = DATA / f"asked-{name}-{role}.jsonl"
        target.write_text("".join(json.dumps(out[i]) + "\n" for i in chosen))
        print(f"{target}: {len(chosen)} questions", file=sys.stderr)


def _stem(word: str) -> str:
    return word[:-1] if len(word) > 3 and word.endswith("s") and not word.endswith("ss") else word


def _words(text: str) -> set[str]:
    """Lower-case words of `text`, identifiers also split (renameTo -> renameto, rename, to),
    a plural "s" dropped."""
    out = set()
    for token in re.findall(r"[A-Za-z]+", text):
        out.add(_stem(token.lower()))
        out |= {_stem(p.lower()) for p in re.findall(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+", token)}
    return out


# an identifier: camelCase or PascalCase with an inner capital, a dotted name, a call, snake_case
CODE_TOKEN = re.compile(r"\b[a-z]+[A-Z]\w*|\b[A-Z][a-z]+[A-Z]\w*|\b[a-z]\w*\.[a-z]\w*\.\w+"
                        r"|\w\(\)|\b[a-z]+_[a-z_]+\b")


def stats(name: str) -> None:
    """Print how many questions share no word with any answer's own name (its last dotted
    component, split into words) and how many hold a code-like token."""
    written = [json.loads(line) for line in (DATA / "asked" / f"{name}.jsonl").read_text().splitlines()
               if line.strip()]
    unnamed = sum(1 for item in written if not _words(item["query"]) & set().union(*(
        _words(answer.partition("#")[0].split("::")[1].split(".")[-1]) for answer in item["answers"])))
    code = sum(1 for item in written if CODE_TOKEN.search(item["query"]))
    print(f"{name}: {len(written)} questions, {unnamed} ({unnamed / len(written):.1%}) with no word of the "
          f"answer's name, {code} ({code / len(written):.1%}) with a code-like token")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("corpus", "list", "build", "stats"))
    parser.add_argument("name", choices=sorted(SOURCES))
    args = parser.parse_args()
    if args.action == "corpus":
        make_corpus(args.name)
    elif args.action == "list":
        for rel, qual, start, end, doc in definitions(args.name):
            print(f"{rel}::{qual} {start}-{end} {doc}")
    elif args.action == "stats":
        stats(args.name)
    else:
        build(args.name)


if __name__ == "__main__":
    main()
