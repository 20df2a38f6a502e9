"""Plain frozen records that cross module lines. A leaf module (stdlib only).

Store rows never leave store/; these are what the rest of the package sees.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from codequarry.errors import InvalidProjectId

PROJECT_ID_RULE = "lowercase letters, digits and single inner hyphens, 1-50 characters"
_PROJECT_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")


def validate_project_id(project_id: str) -> str:
    """Return `project_id` unchanged if it is valid, else raise InvalidProjectId."""
    if len(project_id) > 50 or not _PROJECT_ID.fullmatch(project_id):
        raise InvalidProjectId(f"invalid project id {project_id!r}: use {PROJECT_ID_RULE}")
    return project_id


class ChangeKind(enum.StrEnum):
    CREATED = "created"
    MODIFIED = "modified"
    DELETED = "deleted"
    RENAMED = "renamed"


class Lane(enum.IntEnum):
    """Work priority: live edits overtake the cold backlog (lower value goes first)."""

    LIVE = 0
    BACKLOG = 1


@dataclass(frozen=True, slots=True)
class ChangeEvent:
    """One detected change to one path of a project, as persisted in change_events."""

    project: str
    path: str
    kind: ChangeKind
    detected_at: datetime
    processed_at: datetime | None = None
    error: str | None = None
    previous_path: str | None = None


@dataclass(frozen=True, slots=True)
class Chunk:
    """A span of a file that is searched and embedded as one unit (lines are 1-based)."""

    start_line: int
    end_line: int
    content: str
    language: str
    symbol: str | None = None
    kind: str = "block"
    content_hash: str = ""  # hash of the embedding text: the embedding cache key
    # the enclosing code unit (function, method, class header, top-level block) that this
    # chunk is part of; None means the chunk is its own unit
    unit_start: int | None = None
    unit_end: int | None = None

    @property
    def unit_span(self) -> tuple[int, int]:
        """(first, last) 1-based line of the whole unit this chunk belongs to."""
        return (self.unit_start or self.start_line, self.unit_end or self.end_line)


@dataclass(frozen=True, slots=True)
class SymbolDefinition:
    """A definition the chunker found: `qualified_name` joins enclosing names with "."
    (`Client.send`); lines are 1-based and inclusive, wrappers and doc comments included."""

    name: str
    qualified_name: str
    kind: str
    start_line: int
    end_line: int


@dataclass(frozen=True, slots=True)
class EmbeddingBatch:
    """What one call to an embedder cost, recorded in embedding_metadata."""

    model_id: str
    model_name: str
    model_version: str
    dims: int
    count: int
    seconds: float


@dataclass(frozen=True, slots=True)
class Freshness:
    pending_files: int
    vector_coverage: float
    last_indexed_change: datetime | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "pending_files": self.pending_files,
            "vector_coverage": floor4(self.vector_coverage),
            "last_indexed_change": _iso(self.last_indexed_change),
        }


@dataclass(frozen=True, slots=True)
class SearchHit:
    """One result: a whole code unit (function, method, class or top-level block).

    `start_line`-`end_line` is the unit's span (1-based, inclusive); `hits` are the spans
    of the chunks inside it that matched; `snippet` holds the lines shown, which are the
    lines of `snippet_ranges` in order (ranges may leave gaps; empty with detail "paths").
    """

    project: str
    path: str
    start_line: int
    end_line: int
    symbol: str | None
    kind: str
    language: str
    score: float
    snippet: str
    hits: tuple[tuple[int, int], ...] = ()
    snippet_ranges: tuple[tuple[int, int], ...] = ()
    truncated: bool = False  # the snippet stops before the unit's end (token budget)

    def to_json(self, omit: frozenset[str] = frozenset()) -> dict[str, Any]:
        """The result as JSON; `omit` names fields stated once for the whole answer."""
        data: dict[str, Any] = {"project": self.project, "path": self.path,
                                "start_line": self.start_line, "end_line": self.end_line,
                                "symbol": self.symbol, "kind": self.kind, "language": self.language,
                                "score": round(self.score, 3), "snippet": self.snippet}
        if self.hits and self.hits != ((self.start_line, self.end_line),):
            data["hits"] = [list(span) for span in self.hits]
        if self.snippet_ranges:
            data["snippet_ranges"] = [list(span) for span in self.snippet_ranges]
        if self.truncated:
            data["truncated"] = True
        for key in omit:
            data.pop(key, None)
        return data


@dataclass(frozen=True, slots=True)
class SearchResponse:
    """A page of search results. `next_offset` is the offset of the next page, None when
    there is none; `shared` holds fields that every result has (project, language, kind)
    and the path glob asked for (path_glob)."""

    results: list[SearchHit]
    freshness: Freshness
    mode: str
    notes: list[str] = field(default_factory=list)
    query: str = ""
    detail: str = "snippet"
    offset: int = 0
    next_offset: int | None = None
    shared: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        omit = frozenset(self.shared)
        data: dict[str, Any] = {"query": self.query, "mode": self.mode, "detail": self.detail}
        data.update(self.shared)
        data.update({
            "offset": self.offset,
            "next_offset": self.next_offset,
            "results": [hit.to_json(omit) for hit in self.results],
            "freshness": self.freshness.to_json(),
            "notes": self.notes,
        })
        return data


@dataclass(frozen=True, slots=True)
class DefinitionHit:
    """A definition found by name: `qualified_name` is e.g. "Color.parse", `name` its last
    part; lines are 1-based and inclusive, the definition's full span."""

    project: str
    path: str
    name: str
    qualified_name: str
    kind: str
    language: str
    start_line: int
    end_line: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def definition_match_rank(query: str, hit: DefinitionHit) -> int:
    """How `hit` matches the asked name: 0 exact (case-sensitive) on the name or qualified
    name, 1 exact ignoring case, 2 prefix, 3 anything else (a close spelling)."""
    names = (hit.name, hit.qualified_name)
    if query in names:
        return 0
    lowered = query.lower()
    if lowered in (n.lower() for n in names):
        return 1
    if any(n.lower().startswith(lowered) for n in names):
        return 2
    return 3


@dataclass(frozen=True, slots=True)
class ProjectStatus:
    project: str
    path: str
    files: int
    skipped_files: int
    chunks: int
    vector_coverage: float
    pending_files: int
    pending_events: int
    last_event_at: datetime | None
    last_indexed_change: datetime | None
    index_lag_seconds: float
    errors: list[str]
    model_id: str | None
    watching: bool = False

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["vector_coverage"] = floor4(self.vector_coverage)
        data["last_event_at"] = _iso(self.last_event_at)
        data["last_indexed_change"] = _iso(self.last_indexed_change)
        data["index_lag_seconds"] = round(self.index_lag_seconds, 3)
        return data


def floor4(fraction: float) -> float:
    """Round down: one chunk without a vector must not show as complete coverage."""
    return math.floor(fraction * 10_000) / 10_000


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


@dataclass(frozen=True, slots=True)
class FileStat:
    """What a cheap stat says about a file; the content hash decides only when this differs."""

    path: str  # relative to the project root, "/"-separated
    size: int
    mtime_ns: int
    skip_reason: str | None = None  # set when the file is known unindexable without reading it


@dataclass(frozen=True, slots=True)
class IndexedFile:
    """The store's memory of one file, compared against a fresh stat to detect changes."""

    path: str
    size: int
    mtime_ns: int
    content_hash: str | None
    skip_reason: str | None
    chunker_version: int = 0  # the chunker that wrote its chunks; older ones are re-chunked


@dataclass(frozen=True, slots=True)
class SearchText:
    """Code-aware words of one chunk for full-text search, by weight: symbol > path > body."""

    symbol: str
    path: str
    body: str


@dataclass(frozen=True, slots=True)
class FileUpdate:
    """The new state of one file, written with its chunks in one transaction.

    `search_texts` runs parallel to `chunks`; None where a chunk of the file as stored has
    the same content hash: its row, words included, is kept (ProjectStore.apply computes
    them when it is not). A skipped file has a reason and no chunks.
    """

    path: str
    size: int
    mtime_ns: int
    content_hash: str
    language: str | None = None
    skip_reason: str | None = None
    chunks: tuple[Chunk, ...] = ()
    search_texts: tuple[SearchText | None, ...] = ()
    definitions: tuple[SymbolDefinition, ...] = ()
