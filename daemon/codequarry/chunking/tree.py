"""Chunks along a syntax tree: one chunk per definition that fits the budget.

The file is covered line by line, so module-level code between definitions is kept:
- a definition that fits the budget becomes one chunk (symbol, kind, lines);
- a bigger definition with nested definitions (a class) becomes a header chunk (its
  signature, docstring and fields) plus chunks for its members, recursively;
- a bigger definition without nested ones (a long function) is split into line windows
  that keep its symbol;
- code between definitions becomes "block" chunks; small neighbours are merged while
  the result still fits the budget, so tiny getters and imports do not each cost an
  embedding.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from dataclasses import dataclass, field

from codequarry.chunking.budget import Budget, estimate_tokens
from codequarry.chunking.definitions import Definition, find_definitions, parse
from codequarry.chunking.lines import line_windows
from codequarry.models import Chunk, SymbolDefinition


@dataclass
class _Node:
    """A definition with the definitions nested inside it."""

    definition: Definition
    symbol: str | None
    children: list[_Node] = field(default_factory=list)

    @property
    def start(self) -> int:
        return self.definition.start_line

    @property
    def end(self) -> int:
        return self.definition.end_line


@dataclass
class _Segment:
    start: int
    end: int
    symbol: str | None
    kind: str
    container: int = 0  # segments merge only with others of the same container
    unit: tuple[int, int] | None = None  # the function this piece of is the unit, if any


def _nest(definitions: list[Definition]) -> list[_Node]:
    """Turn the flat, document-ordered list into a forest by line containment."""
    roots: list[_Node] = []
    stack: list[_Node] = []
    for definition in definitions:
        while stack and not (stack[-1].start <= definition.start_line
                             and definition.end_line <= stack[-1].end):
            stack.pop()
        parent = stack[-1] if stack else None
        name = definition.name
        if parent is not None and parent.symbol and name and "::" not in name:
            name = f"{parent.symbol}.{name}"
        node = _Node(definition, name)
        (parent.children if parent else roots).append(node)
        stack.append(node)
    return roots


# Definitions whose nested definitions stay inside their unit: a result for code in a
# nested function is the whole function. Classes and modules are split into their members.
UNIT_KINDS = frozenset({"function", "method"})


class TreeChunker:
    def __init__(self, budget: Budget) -> None:
        self.budget = budget

    def chunk(self, text: str, language: str) -> tuple[list[Chunk], list[SymbolDefinition]]:
        """(chunks covering the file, every named definition with its qualified name)."""
        source = text.encode("utf-8")
        forest = _nest(find_definitions(parse(source, language), language, source))
        self._lines = text.split("\n")
        segments: list[_Segment] = []
        self._cover(1, len(self._lines), forest, segments)
        chunks = [chunk for segment in self._merge(segments)
                  for chunk in self._materialise(segment, language)]
        return chunks, list(_named_definitions(forest))

    def _tokens(self, start: int, end: int) -> int:
        return sum(estimate_tokens(line) + 1 for line in self._lines[start - 1 : end])

    def _cover(self, start: int, end: int, nodes: list[_Node], out: list[_Segment]) -> None:
        """Emit segments covering lines start..end, with `nodes` inside that range."""
        cursor = start
        for node in nodes:
            node_start = max(node.start, cursor)
            node_end = min(node.end, end)
            if node_end < node_start:
                continue  # shares its lines with the previous definition
            if node_start > cursor:
                out.append(_Segment(cursor, node_start - 1, None, "block"))
            self._definition(node, node_start, node_end, out)
            cursor = node_end + 1
        if cursor <= end:
            out.append(_Segment(cursor, end, None, "block"))

    def _definition(self, node: _Node, start: int, end: int, out: list[_Segment]) -> None:
        kind = node.definition.kind
        if self._tokens(start, end) <= self.budget.max_tokens or not node.children:
            out.append(_Segment(start, end, node.symbol, kind))
            return
        first_child = max(node.children[0].start, start)
        header_end = first_child - 1
        inner: list[_Segment] = []
        if header_end >= start:
            inner.append(_Segment(start, header_end, node.symbol, kind))
        self._cover(max(first_child, start), end, node.children, inner)
        for segment in inner:  # code between members still belongs to the container
            if segment.symbol is None:
                segment.symbol, segment.kind = node.symbol, kind
            if segment.container == 0:
                segment.container = id(node)
            if kind in UNIT_KINDS:  # a function's nested functions are part of it (outermost wins)
                segment.unit = (start, end)
        out.extend(inner)

    def _merge(self, segments: list[_Segment]) -> list[_Segment]:
        """Merge runs of small neighbours while the union fits the budget."""
        merged: list[_Segment] = []
        for segment in segments:
            if merged:
                last = merged[-1]
                last_small = self._tokens(last.start, last.end) < self.budget.min_tokens
                this_small = self._tokens(segment.start, segment.end) < self.budget.min_tokens
                fits = self._tokens(last.start, segment.end) <= self.budget.max_tokens
                same = last.container == segment.container
                if fits and same and (last_small or this_small):
                    merged[-1] = self._combine(last, segment)
                    continue
            merged.append(segment)
        return merged

    def _combine(self, first: _Segment, second: _Segment) -> _Segment:
        """The union is named after its larger named part: a block or a class header
        merged into a method becomes that method's chunk."""
        named = [part for part in (first, second) if part.symbol is not None]
        best = max(named, key=lambda p: self._tokens(p.start, p.end), default=first)
        return _Segment(first.start, second.end, best.symbol, best.kind, first.container,
                        first.unit if first.unit == second.unit else None)

    def _materialise(self, segment: _Segment, language: str) -> list[Chunk]:
        lines = self._lines[segment.start - 1 : segment.end]
        # trim blank edges so chunk spans point at code
        while lines and not lines[0].strip():
            lines, segment.start = lines[1:], segment.start + 1
        while lines and not lines[-1].strip():
            lines, segment.end = lines[:-1], segment.end - 1
        if not lines:
            return []
        content = "\n".join(lines)
        unit_start, unit_end = segment.unit or (None, None)
        if estimate_tokens(content) <= self.budget.max_tokens:
            return [Chunk(segment.start, segment.end, content, language, segment.symbol, segment.kind,
                          unit_start=unit_start, unit_end=unit_end)]
        # the windows of one segment (a long function) share its span as their unit
        unit_start, unit_end = segment.unit or (segment.start, segment.end)
        return [dataclasses.replace(window, unit_start=unit_start, unit_end=unit_end)
                for window in line_windows(lines, language, self.budget, segment.start,
                                           segment.symbol, segment.kind)]


def _named_definitions(forest: list[_Node]) -> Iterator[SymbolDefinition]:
    for node in forest:
        name = node.definition.name
        if name and node.symbol:
            yield SymbolDefinition(name, node.symbol, node.definition.kind, node.start, node.end)
        yield from _named_definitions(node.children)
