"""Watch one repository with watchfiles and turn filesystem events into ChangeEvents.

The watcher is started before the repository is scanned, so nothing that changes
during the scan is missed. A vanished repository is waited for, not fatal; a watcher
that fails is restarted after a rescan.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import anyio
import watchfiles

from codequarry.ignore import IGNORE_FILES, IgnoreRules, is_git_internal
from codequarry.logs import get_logger
from codequarry.models import ChangeKind

log = get_logger(__name__)

_KINDS = {watchfiles.Change.added: ChangeKind.CREATED, watchfiles.Change.modified: ChangeKind.MODIFIED,
          watchfiles.Change.deleted: ChangeKind.DELETED}
RESTART_DELAY = 2.0
MISSING_POLL = 2.0

OnChanges = Callable[[Sequence[tuple[str, ChangeKind]]], Awaitable[None]]
OnRescan = Callable[[], None]


class RepoFilter:
    """Keeps events for paths the index cares about; drops .git internals and ignored paths.

    `.git/info/exclude` and ignore files pass through: they change what is indexed.
    """

    def __init__(self, root: Path, rules: IgnoreRules) -> None:
        self.root = str(root)
        self.rules = rules

    def __call__(self, change: watchfiles.Change, path: str) -> bool:
        rel = os.path.relpath(path, self.root).replace(os.sep, "/")
        if rel.startswith("../") or rel == ".":
            return False
        if rel == ".git/info/exclude":
            return True
        if is_git_internal(rel):  # the same rule as the scan: any .git, file or directory
            return False
        if os.path.basename(rel) in IGNORE_FILES:
            return True
        return not self.rules.is_ignored(rel)


def classify(root: Path, rules: IgnoreRules,
             raw: set[tuple[watchfiles.Change, str]]) -> tuple[list[tuple[str, ChangeKind]], bool]:
    """(file changes, whether a rescan is needed). Directories appearing are expanded to
    their files; ignore-file changes and vanished directories ask for a rescan."""
    changes: dict[str, ChangeKind] = {}
    rescan = False
    for change, path in sorted(raw, key=lambda item: item[1]):
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        name = os.path.basename(rel)
        if name in IGNORE_FILES or rel == ".git/info/exclude":
            rules.forget()
            rescan = True
            continue
        kind = _KINDS[change]
        if kind != ChangeKind.DELETED and os.path.isdir(path) and not os.path.islink(path):
            rescan = True  # a directory moved in: its files arrive through the scan
            continue
        changes[rel] = kind
    return list(changes.items()), rescan


async def watch_repository(root: Path, rules: IgnoreRules, debounce_ms: int,
                           on_changes: OnChanges, on_rescan: OnRescan,
                           started: anyio.Event | None = None) -> None:
    """Watch forever (until cancelled). `on_rescan` runs after the watcher is live: at
    start, after a restart and whenever the tree changed in ways events cannot describe."""
    announced_missing = False
    while True:
        if not root.is_dir():
            if not announced_missing:
                log.warning("repository_missing", root=str(root), action="waiting for it to return")
                announced_missing = True
            if started is not None:
                started.set()
            await anyio.sleep(MISSING_POLL)
            continue
        if announced_missing:
            log.info("repository_back", root=str(root))
            announced_missing = False
        try:
            await _watch_once(root, rules, debounce_ms, on_changes, on_rescan, started)
        except (OSError, RuntimeError) as exc:
            log.warning("watcher_failed", root=str(root), error=str(exc), retry_in=RESTART_DELAY)
        await anyio.sleep(RESTART_DELAY)


async def _watch_once(root: Path, rules: IgnoreRules, debounce_ms: int, on_changes: OnChanges,
                      on_rescan: OnRescan, started: anyio.Event | None) -> None:
    first = True
    async for raw in watchfiles.awatch(root, watch_filter=RepoFilter(root, rules), debounce=debounce_ms,
                                       step=min(50, max(debounce_ms, 1)), rust_timeout=200,
                                       yield_on_timeout=True, ignore_permission_denied=True):
        if first:  # the watcher is live now: everything from here on is seen
            first = False
            if started is not None:
                started.set()
            on_rescan()
        if not root.is_dir():
            return  # the repository vanished: wait for it in the caller
        if not raw:
            continue
        changes, rescan = classify(root, rules, raw)
        if changes:
            await on_changes(changes)
        if rescan:
            on_rescan()
