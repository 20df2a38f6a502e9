"""Search answers shaped for a coding agent's context window.

Ranked chunks become whole code units (hits inside one unit merge into one result),
each unit is shown at the requested detail ("paths", "snippet", "full"), and the answer
respects a token budget measured on the text the client's model reads (characters / 4).
The same answer has two forms that always agree: the structured JSON
(SearchResponse.to_json) and the compact text (render_text), one built from the other.
"""

from __future__ import annotations

import functools
import heapq
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

from codequarry.answer_text import FULL_LINE_CHARS, clip, result_text
from codequarry.chunking.words import split_identifier
from codequarry.errors import UsageError
from codequarry.models import SearchHit, SymbolDefinition
from codequarry.store.project import UnitPiece

Detail = Literal["paths", "snippet", "full"]
DETAILS: tuple[Detail, ...] = ("paths", "snippet", "full")
CHARS_PER_TOKEN = 4  # what the bench and the budget count: characters / 4
DEFAULT_MAX_TOKENS = 2000
MAX_TOKENS_LIMIT = 50_000
MIN_TOKENS = 100
SNIPPET_LINES = 4  # signature plus the most relevant lines: enough to decide what to open
SNIPPET_LINE_CHARS = 100
MAX_OFFSET = 200

# English words that say nothing about which lines matter
_STOPWORDS = frozenset(
    "a an and are as at be by can do does for from how i in is it its of on or so that the "
    "this to was what when where which who why will with get set use used using".split())


def validate_shape(detail: str, max_tokens: int | None, offset: int) -> None:
    """Raise UsageError for a detail, budget or offset out of range."""
    if detail not in DETAILS:
        raise UsageError(f"detail must be one of {', '.join(DETAILS)}, got {detail!r}")
    if max_tokens is not None and not MIN_TOKENS <= max_tokens <= MAX_TOKENS_LIMIT:
        raise UsageError(f"max_tokens must be between {MIN_TOKENS} and {MAX_TOKENS_LIMIT}, "
                         f"got {max_tokens}")
    if not 0 <= offset <= MAX_OFFSET:
        raise UsageError(f"offset must be between 0 and {MAX_OFFSET}, got {offset}")


@dataclass
class Unit:
    """A code unit reached by one or more ranked chunks, before it is shaped."""

    project: str
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str
    language: str
    score: float  # its best chunk's score; rank_units turns it into the unit's ranking score
    hits: list[tuple[int, int]] = field(default_factory=list)
    lines: dict[int, str] = field(default_factory=dict)  # line number -> text, from the index
    support: list[float] = field(default_factory=list)  # scores of its other matching chunks
    definitions: tuple[SymbolDefinition, ...] = ()  # inside it, when it holds several
    # `hits` as a set (add_hit fills both): a unit reached by 100 chunks checked each against a list
    _hit_set: set[tuple[int, int]] = field(default_factory=set, repr=False, compare=False)

    def add_chunks(self, rows: Sequence[UnitPiece]) -> None:
        for row in rows:
            for number, line in enumerate(row.content.split("\n"), row.start_line):
                self.lines.setdefault(number, line)

    def has_hit(self, start: int, end: int) -> bool:
        return (start, end) in self._hit_set

    def add_hit(self, start: int, end: int) -> None:
        if (start, end) not in self._hit_set:
            self._hit_set.add((start, end))
            self.hits.append((start, end))

    def hit_ranges(self) -> tuple[tuple[int, int], ...]:
        """The matching spans, adjacent ones joined (chunks of a unit abut)."""
        joined: list[tuple[int, int]] = []
        for start, end in sorted(self.hits):
            if joined and start <= joined[-1][1] + 2:  # a blank line between chunks still abuts
                joined[-1] = (joined[-1][0], max(joined[-1][1], end))
            else:
                joined.append((start, end))
        return tuple(joined)


# A unit's score is its best chunk's plus UNIT_SUPPORT times the scores of its next
# SUPPORT_CHUNKS best matching chunks: a second and third matching place are evidence, more
# windows mostly say that the unit is long (300 lines of class javadoc match any question
# about the class). Agent questions (bench/agent_bench.py): without support hit@3 falls
# from 0.80 to 0.73; support from every window ranks alike at hit@3, lower at hit@1.
# Support counts a chunk's score above the ranked list's floor, as the fusion measures
# each side: a raw cosine or word score has a large floor that any weak window of a long
# unit would add (bench/README.md, issue 14 units: semantic and lexical gain on the tuning sets).
UNIT_SUPPORT = 0.1
SUPPORT_CHUNKS = 2
# A container ranks after one of its own members scoring at least this share of its score
# (agent questions: 0.3 to 0.7 rank alike; at 1.0 the rule hardly ever applies)
CONTAINER_YIELD = 0.5
# Kinds that are never containers of separately ranked units: a function keeps its nested
# definitions inside its unit (chunking.tree.UNIT_KINDS), a block has no members
_LEAF_KINDS = frozenset({"function", "method", "block"})


def rank_units(units: Sequence[Unit], floor: float = 0.0) -> list[Unit]:
    """`units` best first, each `score` set to the score it ranks by.

    A unit scores its best chunk plus UNIT_SUPPORT times what its next SUPPORT_CHUNKS best
    chunks score above `floor` (the lowest score of the ranked list the units come from;
    0 for fused scores, which start there). Then containers yield to their members: a
    unit of a class, interface, struct, enum, trait or module (its header, docstring and
    fields, or code between its members) ranks right after its best member unit in the
    same file (symbol "Container.member...") when that member scores at least
    CONTAINER_YIELD of the container, and takes that member's score. The member is where
    the behaviour is; the header describes the whole class and, with its documentation,
    matches any question about the class. A container with no member near its score keeps
    its place: the question is about the class itself. Nested containers settle first (a
    class yields to its nested class, which may yield to its method). Equal scores keep
    the best chunk's order, then `units`' order (stable pages).
    """
    order = {id(unit): index for index, unit in enumerate(units)}
    best = {id(unit): unit.score for unit in units}
    behind = {id(unit): 0 for unit in units}  # how many containers deep it yielded
    by_file: dict[tuple[str, str], list[Unit]] = {}
    for unit in units:
        support = heapq.nlargest(SUPPORT_CHUNKS, unit.support)
        unit.score = best[id(unit)] + UNIT_SUPPORT * sum(max(0.0, s - floor) for s in support)
        by_file.setdefault((unit.project, unit.path), []).append(unit)
    containers = [u for u in units if u.symbol and u.kind not in _LEAF_KINDS]
    for container in sorted(containers, key=lambda u: -len(u.symbol or "")):
        prefix = f"{container.symbol}."
        close = [u for u in by_file[(container.project, container.path)]
                 if u.symbol and u.symbol.startswith(prefix)
                 and u.score >= CONTAINER_YIELD * container.score]
        if close and (top := max(u.score for u in close)) <= container.score:
            container.score = top
            behind[id(container)] = 1 + max(behind[id(u)] for u in close if u.score == top)
    return sorted(units, key=lambda u: (-u.score, behind[id(u)], -best[id(u)], order[id(u)]))


def unit_key(root: str | None, project: str, path: str, start: int, end: int,
             realpath: Callable[[str], str] = os.path.realpath) -> tuple[str, int, int]:
    """Identity of a unit across projects: the real file (a symlink or a nested project
    reaches the same file twice) and the span. `realpath`: os.path.realpath or a cache of it."""
    if root is None:
        return (f"{project}\0{path}", start, end)
    return (realpath(os.path.join(root, path)), start, end)


class RealPaths:
    """os.path.realpath, remembered for `seconds`: a search places ~150 ranked chunks, and
    resolving each path costs one lstat per component (issue 13: ~20-75 us each, most of
    a search's own CPU). A symlink retargeted meanwhile merges or splits results of that
    file for at most `seconds`."""

    def __init__(self, seconds: float = 5.0, entries: int = 50_000) -> None:
        self.seconds = seconds
        self.entries = entries
        self._known: dict[str, tuple[float, str]] = {}

    def __call__(self, path: str) -> str:
        now = time.monotonic()
        known = self._known.get(path)
        if known is not None and now - known[0] < self.seconds:
            return known[1]
        if len(self._known) >= self.entries:
            self._known.clear()
        real = os.path.realpath(path)
        self._known[path] = (now, real)
        return real


def query_words(query: str, shortest: int = 2) -> set[str]:
    """Lowercase identifiers of the query and their parts, without filler words, of at
    least `shortest` characters."""
    words: set[str] = set()
    for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query):
        parts = split_identifier(token)
        words.add(token.lower())
        words.update(parts)
        words.add("".join(parts))
    return {w for w in words if len(w) >= shortest and w not in _STOPWORDS}


_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@functools.lru_cache(maxsize=16384)
def _token_forms(token: str) -> frozenset[str]:
    """A code token's lowercase forms a query word may match: whole, parts joined, parts.
    Cached: a search scores ~200 lines per result, and code repeats its tokens."""
    parts = split_identifier(token)
    return frozenset((token.lower(), "".join(parts), *parts))


def _line_score(line: str, words: set[str]) -> int:
    if not words:
        return 0
    # a token's forms are its lowercase self, its parts and their join, so a word can only
    # match one if it occurs in the lowercased line with or without underscores: most lines
    # hold no query word, and skip the tokenising (a search scores thousands of lines)
    lowered = line.lower()
    bare = lowered.replace("_", "")
    if not any(word in lowered or word in bare for word in words):
        return 0
    found: set[str] = set()
    for token in _IDENTIFIER.findall(line):
        found.update(_token_forms(token) & words)
    return len(found)


def name_by_match(unit: Unit, words: set[str]) -> None:
    """Name a unit holding several definitions side by side (small neighbours merged into
    one chunk: `def a(): ...` / `def b(): ...`) after the one whose lines match the query's
    `words` (query_words(query, shortest=1): `b` names a function as well as `parse`) best,
    symbol and kind; lines outside them count for its current name, which wins ties. A
    unit of one definition (its nested ones included) keeps its name."""
    outer: list[SymbolDefinition] = []
    for definition in unit.definitions:  # outer before nested
        if not outer or definition.start_line > outer[-1].end_line:
            outer.append(definition)
    if len(outer) < 2 or not words:
        return
    scores = {n: _line_score(line, words) for n, line in unit.lines.items()
              if unit.start_line <= n <= unit.end_line}
    inside = {n for d in outer for n in range(d.start_line, d.end_line + 1)}
    current = sum(score for n, score in scores.items() if n not in inside)
    best: tuple[int, SymbolDefinition] | None = None
    for definition in outer:
        score = sum(scores.get(n, 0) for n in range(definition.start_line, definition.end_line + 1))
        if definition.qualified_name == unit.symbol:
            current += score
        elif best is None or score > best[0]:
            best = (score, definition)
    if best is not None and best[0] > current:
        unit.symbol, unit.kind = best[1].qualified_name, best[1].kind


def _ranges(numbers: Sequence[int]) -> list[tuple[int, int]]:
    ranges: list[tuple[int, int]] = []
    for number in sorted(set(numbers)):
        if ranges and number == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], number)
        else:
            ranges.append((number, number))
    return ranges


def snippet_lines(unit: Unit, words: set[str], max_lines: int) -> list[int]:
    """The unit's most relevant line numbers, at most `max_lines`: its first code line
    (the signature) and the window inside its matching chunks with the most query words."""
    lines = unit.lines
    first = next((n for n in range(unit.start_line, unit.end_line + 1) if lines.get(n, "").strip()), None)
    if first is None or max_lines <= 0:
        return []
    chosen = [first]
    # the code lines after the first that matching chunks cover (else all of them), read
    # from the hits' own spans: a unit may be thousands of lines long
    covered = sorted({n for s, e in unit.hits for n in range(max(s, first + 1), min(e, unit.end_line) + 1)})
    inside = [n for n in covered if lines.get(n, "").strip()] or [
        n for n in range(first + 1, unit.end_line + 1) if lines.get(n, "").strip()]
    width = max_lines - 1
    if width <= 0 or not inside:
        return chosen
    scores = [_line_score(unit.lines[n], words) for n in inside]
    best, best_score = 0, -1
    for start in range(0, max(1, len(inside) - width + 1)):
        score = sum(scores[start:start + width])
        if score > best_score:  # first best window wins: stable and near the hit's top
            best, best_score = start, score
    return chosen + inside[best:best + width]


def tokens(text: str) -> int:
    """The budget's token count: characters / 4, rounded up."""
    return -(-len(text) // CHARS_PER_TOKEN)


@dataclass(frozen=True, slots=True)
class Shaped:
    hits: list[SearchHit]
    shown_units: int  # units consumed from the page (the next page starts after them)
    notes: list[str]


def shape(units: Sequence[Unit], query: str, detail: Detail, max_tokens: int,
          shared: dict[str, str], reserve_chars: int = 200) -> Shaped:
    """SearchHits for `units` at `detail`, as many as fit `max_tokens` of text (counting
    `reserve_chars` for the answer's header and notes). A result that does not fit whole
    is cut to the lines that fit; the first result always keeps at least its header."""
    words = query_words(query)
    budget = max_tokens * CHARS_PER_TOKEN - reserve_chars
    used = 0
    hits: list[SearchHit] = []
    notes: list[str] = []
    for index, unit in enumerate(units):
        numbers = _detail_lines(unit, words, detail)
        hit = _hit(unit, numbers, detail)
        cost = _cost(hit, shared)
        if used + cost > budget and numbers:
            # fewer lines: keep the first ones (the signature, then the best window)
            low, high = 0, len(numbers) - 1  # the most lines that fit: binary search
            while low < high:
                middle = (low + high + 1) // 2
                if used + _cost(_hit(unit, numbers[:middle], detail, True), shared) <= budget:
                    low = middle
                else:
                    high = middle - 1
            hit = _hit(unit, numbers[:low], detail, truncated=detail == "full")
            cost = _cost(hit, shared)
        if used + cost > budget and hits:
            notes.append(f"max_tokens ({max_tokens}) reached after {len(hits)} of {len(units)} "
                         "results; the next page starts after them")
            break
        hits.append(hit)
        used += cost
        if used >= budget and index + 1 < len(units):
            notes.append(f"max_tokens ({max_tokens}) reached after {len(hits)} of {len(units)} "
                         "results; the next page starts after them")
            break
    return Shaped(hits, len(hits), notes)


def _detail_lines(unit: Unit, words: set[str], detail: Detail) -> list[int]:
    if detail == "paths":
        return []
    if detail == "snippet":
        return snippet_lines(unit, words, SNIPPET_LINES)
    return [n for n in range(unit.start_line, unit.end_line + 1)]


def _hit(unit: Unit, numbers: Sequence[int], detail: Detail, truncated: bool = False) -> SearchHit:
    line_chars = SNIPPET_LINE_CHARS if detail == "snippet" else FULL_LINE_CHARS
    snippet = "\n".join(clip(unit.lines.get(n, ""), line_chars) for n in numbers)
    return SearchHit(unit.project, unit.path, unit.start_line, unit.end_line, unit.symbol, unit.kind,
                     unit.language, unit.score, snippet, unit.hit_ranges(),
                     tuple(_ranges(numbers)), truncated)


def _cost(hit: SearchHit, shared: dict[str, str]) -> int:
    return len("\n".join(result_text(hit.to_json(frozenset(shared)), shared))) + 1
