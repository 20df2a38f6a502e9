"""The shapes of the MCP tools' structured results, as TypedDicts: FastMCP derives each
tool's `outputSchema` from its return annotation, so clients see the real fields.

Items of lists are `total=False` where other modules may add fields; the top-level keys an
agent relies on are required.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired

# pydantic (which derives the output schemas) needs typing_extensions' TypedDict on 3.11
from typing_extensions import TypedDict


class Freshness(TypedDict):
    pending_files: int  # files changed on disk but not yet re-indexed
    vector_coverage: float  # fraction of chunks with an embedding, 0.0-1.0 (rounded down)
    last_indexed_change: str | None  # ISO 8601 time of the newest indexed change


class SearchHit(TypedDict, total=False):
    project: str  # left out when the answer states it once
    path: str  # relative to the project root, "/"-separated
    start_line: int  # 1-based, inclusive: the whole unit (function, method, class, block)
    end_line: int
    symbol: str | None
    kind: str  # function, method, class, ...; left out when the answer states it once
    language: str  # left out when the answer states it once
    score: float  # rounded to 3 decimals
    snippet: str  # the unit's most relevant lines ("" with detail "paths")
    hits: list[list[int]]  # [start, end] spans inside the unit that matched
    snippet_ranges: list[list[int]]  # the line spans `snippet` shows, in order
    truncated: bool  # the snippet was cut to fit max_tokens


class SearchAnswer(TypedDict):
    results: list[SearchHit]
    freshness: Freshness
    mode: str
    notes: list[str]
    query: NotRequired[str]
    detail: NotRequired[str]  # paths | snippet | full
    offset: NotRequired[int]
    next_offset: NotRequired[int | None]  # the offset of the next page; None on the last one
    project: NotRequired[str]  # stated once when every result shares it
    language: NotRequired[str]
    kind: NotRequired[str]
    path_glob: NotRequired[str]


class ProjectState(TypedDict, total=False):
    project: str
    path: str
    files: int
    skipped_files: int
    chunks: int
    vector_coverage: float
    pending_files: int
    pending_events: int
    last_event_at: str | None
    last_indexed_change: str | None
    index_lag_seconds: float
    errors: list[str]
    model_id: str | None
    watching: bool
    registered: bool
    scanning: bool
    state: str  # starting | scanning | watching | retrying | stopped (the supervisor's)
    error: str | None  # why it is retrying
    retry_at: str | None
    reembedding: dict[str, Any]  # {model_id, coverage} while a new model's vectors fill in
    skipped: list[dict[str, str]]  # [{path, reason}], bounded
    skipped_total: int
    unreadable: list[dict[str, str]]  # [{path, error}], bounded: reads retried in the background
    unreadable_files: int  # those files, counted among pending_files
    failed: list[dict[str, str]]  # [{path, error}], bounded: files whose writing failed (a bug)


class DaemonInfo(TypedDict, total=False):
    running: bool
    pid: int
    version: str
    socket: str
    uptime_seconds: int
    model: str | None
    embedder_error: str | None
    watching: list[str]


class Orphan(TypedDict, total=False):
    project: str
    root: str
    files: int
    chunks: int


class StatusAnswer(TypedDict):
    projects: list[ProjectState]
    daemon: DaemonInfo
    data_dir: str
    config: str
    orphaned: NotRequired[list[Orphan]]  # indexes of unregistered projects


class Change(TypedDict, total=False):
    project: str
    path: str
    kind: str  # created | modified | deleted | moved
    detected_at: str
    processed_at: str | None
    error: str | None
    previous_path: str | None


class ChangesAnswer(TypedDict):
    changes: list[Change]


State = Literal["starting", "retrying", "not indexed", "scanning", "indexing", "embedding", "complete",
                "error"]


class IndexAnswer(TypedDict):
    project: str  # the project id to pass to search_code
    path: str  # the absolute repository directory
    state: State
    files_to_index: int  # indexable files found under path (ignored files excluded)
    bytes_to_index: int
    estimated_seconds: float  # a rough figure for a cold index on this machine
    waited_for: Literal["none", "lexical", "complete"]
    status: NotRequired[ProjectState]


class ProjectEntry(TypedDict):
    project: str
    path: str
    state: State
    files: int
    chunks: int
    vector_coverage: float
    pending_files: int
    last_indexed_change: str | None
    index_lag_seconds: float
    errors: list[str]


class ProjectsAnswer(TypedDict):
    projects: list[ProjectEntry]


class Definition(TypedDict, total=False):
    project: str
    path: str
    name: str
    qualified_name: str  # e.g. "Color.parse"
    kind: str
    language: str
    start_line: int  # 1-based, inclusive: the whole definition
    end_line: int
    signature: str  # its first code line


class SymbolAnswer(TypedDict):
    name: str
    definitions: list[Definition]
    notes: list[str]


class CodeAnswer(TypedDict):
    project: str
    path: str
    start_line: int
    end_line: int
    total_lines: int
    content: str  # the lines, each prefixed with its number
    next_start_line: int | None  # where to continue a read cut by max_tokens
    notes: list[str]


class ReferenceLine(TypedDict):
    line: int
    text: str
    definition: bool


class ReferenceFile(TypedDict):
    project: str
    path: str
    count: int
    lines: list[ReferenceLine]


class ReferencesAnswer(TypedDict):
    name: str
    total: int
    file_count: int
    files: list[ReferenceFile]
    notes: list[str]
