"""Upgrade re-chunks that keep semantic search whole.

When a new codequarry chunks or embeds differently (CHUNKER_VERSION, EMBEDDING_TEXT_VERSION),
every file is re-chunked in the background although its content did not change. Writing
the new chunks at once would leave them without vectors until the embedder catches up,
and semantic search would lose those files meanwhile. So a re-chunked file whose new
chunks are not all in the embedding cache is held back: its missing chunks are embedded
into the cache first (after live edits and the cold backlog), and only then is the file
queued again, to be swapped in one transaction with every vector copied from the cache.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from codequarry.lanes import take_project_run
from codequarry.models import Chunk

Key = tuple[str, str]  # (project, path)


class HeldRechunks:
    """Chunks to embed before their files may be swapped, and the files waiting on them."""

    def __init__(self) -> None:
        self._chunks: deque[tuple[str, Chunk]] = deque()
        self._waiting: dict[Key, set[str]] = {}  # file -> content hashes not yet cached
        self._released: set[Key] = set()  # may be written whatever the cache holds

    def __len__(self) -> int:
        return len(self._waiting)

    def hold(self, project: str, path: str, chunks: Iterable[Chunk], missing: set[str]) -> bool:
        """Hold the file back until `missing` is cached; False when it must be written now
        (it was released: its vectors are cached, or embedding them failed)."""
        key = (project, path)
        if key in self._released:
            self._released.discard(key)
            return False
        if key not in self._waiting:
            queued = {c.content_hash for _, c in self._chunks}
            self._chunks.extend((project, c) for c in chunks if c.content_hash in missing - queued)
        self._waiting[key] = set(missing)
        return True

    def take(self, limit: int) -> tuple[str | None, list[Chunk]]:
        """Up to `limit` chunks of one project, in the order they were held."""
        return take_project_run(self._chunks, limit)

    def put_back(self, project: str, chunks: list[Chunk]) -> None:
        """Chunks whose embedding failed for a passing reason: first in line next time."""
        self._chunks.extendleft((project, c) for c in reversed(chunks))

    def settle(self, project: str, hashes: Iterable[str]) -> list[str]:
        """`hashes` are cached (or will never be): the files of `project` now ready to
        write, released so that the next `hold` lets them through."""
        done = set(hashes)
        ready = []
        for key, missing in list(self._waiting.items()):
            if key[0] == project:
                missing -= done
                if not missing:
                    del self._waiting[key]
                    self._released.add(key)
                    ready.append(key[1])
        return ready

    def drop_project(self, project: str) -> None:
        self._chunks = deque(item for item in self._chunks if item[0] != project)
        self._waiting = {k: v for k, v in self._waiting.items() if k[0] != project}
        self._released = {k for k in self._released if k[0] != project}
