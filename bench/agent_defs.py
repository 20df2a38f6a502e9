"""Definitions of a corpus with qualified names and spans (tree-sitter, as the chunker sees
them): the labelling aid of the agent question set and the sample of find_symbol checks."""

from __future__ import annotations

import sys
from pathlib import Path

from codequarry.chunking.definitions import find_definitions, parse
from codequarry.chunking.languages import AST_LANGUAGES, detect_language


def definitions(root: Path) -> list[tuple[str, str, str, int, int]]:
    """(path, qualified name, kind, start, end) of every named definition under `root`."""
    out = []
    for file in sorted(root.rglob("*")):
        if ".git" in file.parts or not file.is_file():
            continue
        rel = file.relative_to(root).as_posix()
        language = detect_language(rel)
        if language not in AST_LANGUAGES:
            continue
        source = file.read_bytes()
        stack: list[tuple[int, int, str]] = []
        for d in find_definitions(parse(source, language), language, source):
            while stack and not (stack[-1][0] <= d.start_line and d.end_line <= stack[-1][1]):
                stack.pop()
            if d.name is None:
                continue
            name = f"{stack[-1][2]}.{d.name}" if stack and "::" not in d.name else d.name
            out.append((rel, name, d.kind, d.start_line, d.end_line))
            stack.append((d.start_line, d.end_line, name))
    return out


if __name__ == "__main__":
    for row in definitions(Path(sys.argv[1])):
        print(*row, sep="\t")
