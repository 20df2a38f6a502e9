"""A bounded, coalescing, two-lane work queue of paths to (re)index.

Each (project, path) is queued at most once, with the last change kind winning, so a
`git checkout` of thousands of files costs one entry per path, not per event. Live
edits (LIVE) always leave before the cold backlog (BACKLOG). A full live lane reports
overflow instead of growing: the caller then schedules a rescan, whose work goes through
the backlog lane with backpressure.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from typing import TypeVar

import anyio

from codequarry.models import ChangeKind, Lane

Key = tuple[str, str]  # (project, path)
T = TypeVar("T")


def take_project_run(items: deque[tuple[str, T]], limit: int) -> tuple[str | None, list[T]]:
    """Remove and return up to `limit` leading items that belong to the first item's
    project: (that project, its items); (None, []) when `items` is empty."""
    if not items:
        return None, []
    project = items[0][0]
    taken: list[T] = []
    while items and items[0][0] == project and len(taken) < limit:
        taken.append(items.popleft()[1])
    return project, taken


class WorkQueue:
    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self._lanes: dict[Lane, OrderedDict[Key, ChangeKind]] = {lane: OrderedDict() for lane in Lane}
        self._changed = anyio.Event()

    def __len__(self) -> int:
        return sum(len(lane) for lane in self._lanes.values())

    def pending(self, project: str) -> int:
        return sum(1 for lane in self._lanes.values() for key in lane if key[0] == project)

    def paths(self, project: str) -> set[str]:
        """The project's queued paths, in any lane."""
        return {key[1] for lane in self._lanes.values() for key in lane if key[0] == project}

    def offer(self, project: str, path: str, kind: ChangeKind, lane: Lane) -> bool:
        """Queue without waiting; False when the lane is full (the change is not queued)."""
        key = (project, path)
        for other in Lane:
            if other < lane and key in self._lanes[other]:
                self._lanes[other][key] = kind  # already queued in a faster lane
                return True
        entries = self._lanes[lane]
        if key not in entries and len(entries) >= self.capacity:
            return False  # nothing changed: a refused promotion stays in the slower lane
        for other in Lane:
            if other > lane:
                self._lanes[other].pop(key, None)  # promoted to the faster lane
        entries[key] = kind
        entries.move_to_end(key)
        self._wake()
        return True

    async def put(self, project: str, path: str, kind: ChangeKind, lane: Lane) -> None:
        """Queue, waiting while the lane is full (backpressure for scans)."""
        while not self.offer(project, path, kind, lane):
            await self._wait_for_change()

    async def take(self, max_items: int) -> tuple[Lane, str, list[tuple[str, ChangeKind]]]:
        """Up to `max_items` paths of one project from the fastest non-empty lane."""
        while True:
            for lane in Lane:
                entries = self._lanes[lane]
                if entries:
                    project = next(iter(entries))[0]
                    batch = list(itertools.islice(
                        (key for key in itertools.islice(entries, max_items * 4) if key[0] == project),
                        max_items))
                    taken = [(path, entries.pop((project, path))) for _, path in batch]
                    self._wake()
                    return lane, project, taken
            await self._wait_for_change()

    def has_live_work(self) -> bool:
        return bool(self._lanes[Lane.LIVE])

    def drop_project(self, project: str) -> None:
        for entries in self._lanes.values():
            for key in [key for key in entries if key[0] == project]:
                del entries[key]
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_for_change(self) -> None:
        await self._changed.wait()
