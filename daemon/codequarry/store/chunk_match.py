"""Which stored chunk rows of a changed file can stay: the ones whose content is unchanged.

An edit usually changes one chunk of a file. Deleting and re-inserting all of them would
recompute every tsvector, re-enter every GIN entry and, worst, re-insert every vector
into the HNSW graph (bench/README.md, "An edit during a large change"). A stored row
whose content hash reappears in the new chunks, in the same order relative to the other
kept rows, keeps its id (so its vectors) and words; only its place is updated.
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import NamedTuple

from codequarry.models import Chunk


class StoredChunk(NamedTuple):
    """A stored chunk row's id, content hash and place."""

    id: int
    content_hash: str
    ordinal: int
    start_line: int
    end_line: int
    unit_start: int | None
    unit_end: int | None


class Move(NamedTuple):
    """A kept row's new place (`ordinal`, 1-based lines); a value of the `chunks` columns."""

    id: int
    ordinal: int
    start_line: int
    end_line: int
    unit_start: int | None
    unit_end: int | None


def kept_rows(stored: Sequence[StoredChunk], new: Sequence[Chunk]) -> dict[int, StoredChunk]:
    """Pair a file's stored rows (in ordinal order) with its new chunks by content hash:
    the longest order-preserving matching (difflib, without its junk heuristic, which
    would drop a hash repeated in a big file). Returns new ordinal -> the row it keeps."""
    matcher = difflib.SequenceMatcher(None, [row.content_hash for row in stored],
                                      [chunk.content_hash for chunk in new], autojunk=False)
    return {new_at + i: stored[old_at + i]
            for old_at, new_at, size in matcher.get_matching_blocks() for i in range(size)}


def moves(kept: dict[int, StoredChunk], new: Sequence[Chunk]) -> list[Move]:
    """The kept rows whose place changed (an edit above them shifted their lines), with
    their new place."""
    out = []
    for ordinal, row in kept.items():
        chunk = new[ordinal]
        place = Move(row.id, ordinal, chunk.start_line, chunk.end_line, chunk.unit_start, chunk.unit_end)
        if place[1:] != row[2:]:  # (ordinal, start, end, unit start, unit end)
            out.append(place)
    return out
