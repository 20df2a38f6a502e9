"""The incremental indexing pipeline, shared by `codequarry index` and the daemon.

Three workers run concurrently:
- the rescan worker reconciles a project's tree with the store when asked (at start,
  after an ignore-file change, when the live queue overflowed);
- the chunk worker takes paths from the two-lane queue (live edits first), decides what
  changed (stat, then content hash), chunks what did, and writes each batch of files in
  one transaction, copying vectors from the embedding cache. Lexical search sees a file
  as soon as this commit is done.
- the embed worker fills in missing vectors: chunks from live edits first, then the
  backlog read from the database (so the backlog costs no memory and survives restarts).

Failures of the database or the embedder never lose work: the paths go back into the
queue (or stay unembedded in the database) and are retried with backoff.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import TaskGroup

from codequarry.chunking import CHUNKER_VERSION, Chunker, embedding_text, search_text
from codequarry.config import ProjectConfig, Settings
from codequarry.embedding import Embedder, Vectors
from codequarry.embedding.base import describe
from codequarry.errors import (
    CodequarryError,
    EmbedderMismatch,
    EmbedderUnavailable,
    ModelFileError,
    StoreUnavailable,
)
from codequarry.faults import DATABASE_REFUSED, describe_os_error, is_content_fault
from codequarry.ignore import IgnoreRules
from codequarry.lanes import WorkQueue, take_project_run
from codequarry.logs import get_logger
from codequarry.models import ChangeKind, Chunk, EmbeddingBatch, FileStat, FileUpdate, IndexedFile, Lane
from codequarry.rechunks import HeldRechunks
from codequarry.scan import hidden_by, is_stat_skip, read_text_file, scan_tree, stat_file
from codequarry.store.db import Store, describe_db_error, is_transient
from codequarry.store.project import ProjectStore

log = get_logger(__name__)

LIVE_BATCH_FILES = 32
BACKLOG_BATCH_FILES = 16
EMBED_BATCH = 16  # small, so a live edit never waits long behind a backlog batch
BACKLOG_POOL = 1024  # sorted by length: the bigger the pool, the less padding
RETRY_FIRST = 1.0  # seconds before the first retry after an environment fault; doubles
RETRY_MAX = 8.0  # short: a freed disk or a restarted server is used within seconds
READ_RETRY_MAX = 60.0


@dataclass(frozen=True, slots=True)
class _Unchanged:
    path: str


@dataclass(frozen=True, slots=True)
class _Deleted:
    path: str


@dataclass(frozen=True, slots=True)
class _Touched:
    """Same content, new stat: only size and mtime are recorded."""

    path: str
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class _Unreadable:
    """A read error (EIO, EACCES, ...): retried with backoff, never recorded as final."""

    path: str
    error: str


_Step = FileUpdate | _Unchanged | _Deleted | _Touched | _Unreadable


@dataclass(frozen=True, slots=True)
class ScanSummary:
    """What one reconcile found on disk: `files` indexable (not skipped) and their `bytes`,
    and `changes`, the paths it queued (0: the index already equals the tree)."""

    files: int
    bytes: int
    changes: int


@dataclass
class Project:
    """Runtime state of one indexed project."""

    id: str
    root: Path
    store: ProjectStore
    rules: IgnoreRules
    needs_rescan: bool = False
    reconciles: int = 0  # reconciles started
    compared: int = 0  # reconciles whose walk has been compared with the store
    last_scan: ScanSummary | None = None  # of the latest compared walk


@dataclass
class Progress:
    """Counters for progress bars (since the indexer started)."""

    files_total: int = 0
    files_done: int = 0
    embedded: int = 0
    reused: int = 0
    started: float = field(default_factory=time.monotonic)


class Indexer:
    def __init__(self, settings: Settings, store: Store, embedder: Embedder, chunker: Chunker,
                 embedder_config: dict[str, Any] | None = None) -> None:
        self.settings = settings
        self.store = store
        self.embedder = embedder
        # how to build this embedder again (recorded with its model id; see Store.record_model)
        self.embedder_config = embedder_config
        self.chunker = chunker
        self.queue = WorkQueue(settings.config.daemon.max_pending_paths)
        self.projects: dict[str, Project] = {}
        self.progress = Progress()
        self.model_id: str | None = None
        self.embedder_error: str | None = None
        self.embedder_fatal = False  # a broken model file: retrying cannot help
        # a one-shot `index` loads the model only if something needs a vector (or
        # want_embedder() is called); the daemon loads it at once: deferring it past the
        # catch-up after a restart cost the first search ~0.8 s and won no measurable time
        self.lazy_embedder = False
        self._embedder_wanted = False
        self._embedder_tried = anyio.Event()  # set once a start succeeded or failed
        self._hot: deque[tuple[str, Chunk]] = deque()
        self._pool: deque[tuple[str, Chunk]] = deque()
        self._rechunks = HeldRechunks()
        self._embed_wake = anyio.Event()
        self._rescan_wake = anyio.Event()
        self._compared = anyio.Event()  # set (and replaced) whenever a reconcile compared or ended
        self._busy = 0
        self._reconciling: set[str] = set()
        self._embedding = False
        self._saved = anyio.Event()  # set when no vectors are being saved
        self._saved.set()
        self._saves: TaskGroup | None = None
        self.stopping = False
        # project -> why some of its chunks have no vector for good, and their hashes (not
        # embedded again until the project's vectors are complete or the next start);
        # status shows it, `codequarry index` fails with it: never "done" without vectors
        self.embedding_failures: dict[str, str] = {}
        self._failed_hashes: dict[str, set[str]] = {}
        # (project, path) -> (due on the monotonic clock, attempts, kind, error) of files
        # whose read failed (see unreadable())
        self._read_retries: dict[tuple[str, str], tuple[float, int, ChangeKind, str]] = {}
        # project -> path -> why writing it failed on a bug path (recorded on its change
        # events): until it is written, status and `codequarry index` name it
        self.failed_files: dict[str, dict[str, str]] = {}
        # embedding is settled when the embed worker found nothing to do after the
        # latest write that could have created work for it
        self._work_generation = 0
        self._settled_generation = -1
        # told about a project's failure that retrying the same step cannot fix (the
        # daemon's supervisor restarts that project with backoff)
        self.on_project_error: Callable[[str, BaseException], None] | None = None

    # ---- projects ------------------------------------------------------------------

    async def add_project(self, config: ProjectConfig) -> Project:
        store = await self.store.ensure_project(config.id, str(config.path))
        # before any writer of this project: counters that drifted (status, `index` and
        # the embed worker read them) are set right; two count(*): 81 ms at 100k chunks (bench/)
        repaired = await store.recount()
        if repaired:
            log.warning("counters_repaired", project=config.id, before=repaired[0], after=repaired[1])
        rules = IgnoreRules(config.path, [*self.settings.config.index.exclude, *config.exclude],
                            config.include, self.settings.config.index.index_secrets)
        project = Project(config.id, config.path, store, rules, needs_rescan=True)
        self.projects[config.id] = project
        if self.model_id is not None:
            await self._use_model(project)
        return project

    def remove_project(self, project_id: str) -> None:
        self.projects.pop(project_id, None)
        self.embedding_failures.pop(project_id, None)
        self._failed_hashes.pop(project_id, None)
        self.failed_files.pop(project_id, None)
        for key in [key for key in self._read_retries if key[0] == project_id]:
            del self._read_retries[key]
        self.queue.drop_project(project_id)
        self._hot = deque(item for item in self._hot if item[0] != project_id)
        self._pool = deque(item for item in self._pool if item[0] != project_id)
        self._rechunks.drop_project(project_id)

    # ---- finding work ----------------------------------------------------------------------

    async def reconcile(self, project_id: str) -> int:
        """Compare the tree with the store; queue every difference in the backlog lane.

        Changes are found by stat alone; the content hash is computed later, only for
        files whose stat differs. Returns the number of paths queued.
        """
        project = self.projects[project_id]
        project.needs_rescan = False
        project.reconciles += 1
        self._busy += 1
        self._reconciling.add(project_id)
        try:
            return await self._reconcile(project)
        finally:
            self._busy -= 1
            self._reconciling.discard(project_id)
            self._signal_compared()  # a failed one too: its waiters look again

    async def fresh_scan(self, project_id: str) -> ScanSummary | None:
        """Have the rescan worker reconcile the project with its tree in a reconcile that
        starts after this call, and return its summary once its walk has been compared with
        the store (its changes are then recorded, and queued or being queued: they show as
        pending). None if the project is not running or stopped meanwhile (a runner restart).
        A project not yet reconciled at all gets the reconcile its watcher asks for once live."""
        project = self.projects.get(project_id)
        if project is None:
            return None
        if project.reconciles == 0 and project.needs_rescan:
            target = 1  # its watcher asks for it once live: nothing changed before then is missed
        else:
            target = project.reconciles + 1  # one that is running now may have walked past a change
            self.request_rescan(project_id)
        while project.compared < target:
            if self.projects.get(project_id) is not project:
                return None
            await self._compared.wait()
        return project.last_scan

    def _signal_compared(self) -> None:
        self._compared.set()
        self._compared = anyio.Event()

    def scanning(self, project_id: str) -> bool:
        """Has the project not been compared with its tree yet (or is it being compared)?
        Until then, "nothing pending" would be a claim about an unchecked tree."""
        project = self.projects.get(project_id)
        return project is not None and (project.needs_rescan or project_id in self._reconciling)

    async def _reconcile(self, project: Project) -> int:
        project_id = project.id
        max_bytes = self.settings.config.index.max_file_bytes
        if not project.root.is_dir():
            log.warning("project_root_missing", project=project_id, root=str(project.root))
            project.last_scan, project.compared = ScanSummary(0, 0, 0), project.compared + 1
            return 0
        on_disk: dict[str, FileStat] = {}
        unlisted: dict[str, str] = {}  # directories and files that exist but cannot be looked at
        known: dict[str, IndexedFile] = {}
        pending: set[str] = set()

        async def scan() -> None:
            on_disk.update(await anyio.to_thread.run_sync(
                lambda: {f.path: f for f in scan_tree(project.root, project.rules, max_bytes, unlisted)}))

        async def read_store() -> None:
            known.update(await project.store.indexed_files())
            pending.update(await project.store.pending_event_paths())  # left over from a crash

        async with anyio.create_task_group() as tasks:  # the disk and the database at once
            tasks.start_soon(scan)
            tasks.start_soon(read_store)
        changes: list[tuple[str, ChangeKind]] = []
        for path, stat in on_disk.items():
            before = known.get(path)
            if before is None:
                changes.append((path, ChangeKind.CREATED))
            elif (before.size, before.mtime_ns) != (stat.size, stat.mtime_ns) or (
                    stat.skip_reason != before.skip_reason
                    and (stat.skip_reason or is_stat_skip(before.skip_reason))):
                changes.append((path, ChangeKind.MODIFIED))
        for where, error in unlisted.items():
            log.warning("path_unlistable", project=project_id, path=where or ".", error=error)
        # under a directory that cannot be listed, a file is not gone: checked again (it
        # shows as unreadable and is retried) instead of dropped from the index
        changes.extend((path, ChangeKind.MODIFIED if hidden_by(path, unlisted) else ChangeKind.DELETED)
                       for path in known if path not in on_disk)
        listed = {path for path, _ in changes}
        changes.extend((path, ChangeKind.MODIFIED) for path in pending if path not in listed)
        await project.store.record_events([(p, k, None) for p, k in changes if p not in pending])
        # files chunked by an older chunker: re-chunked behind real changes, not recorded as
        # changes (the tree did not change); their vectors come from the embedding cache
        listed = {path for path, _ in changes}
        changes.extend((path, ChangeKind.MODIFIED) for path, before in known.items()
                       if before.chunker_version < CHUNKER_VERSION and not before.skip_reason
                       and path in on_disk and path not in listed)
        indexable = [stat.size for stat in on_disk.values() if stat.skip_reason is None]
        project.last_scan = ScanSummary(len(indexable), sum(indexable), len(changes))
        project.compared += 1
        # no checkpoint from here to the end when nothing changed: a waiter woken by this
        # sees the reconcile finished (not "scanning")
        self._signal_compared()
        self.progress.files_total += len(changes)
        for path, kind in changes:
            await self.queue.put(project_id, path, kind, Lane.BACKLOG)
        self._wake_embedder()  # vectors may be missing from an earlier, interrupted run
        return len(changes)

    async def notify(self, project_id: str, changes: Sequence[tuple[str, ChangeKind]]) -> None:
        """Live changes from the watcher: recorded, then queued ahead of the backlog."""
        project = self.projects.get(project_id)
        if project is None or not changes:
            return
        try:
            await project.store.record_events([(p, k, None) for p, k in changes])
        except Exception as exc:  # the queue still holds the work; a rescan finds it too
            log.warning("event_record_failed", project=project_id, error=describe(exc))
        overflow = False
        for path, kind in changes:
            overflow |= not self.queue.offer(project_id, path, kind, Lane.LIVE)
        if overflow:
            log.warning("live_queue_full", project=project_id, action="rescan")
            self.request_rescan(project_id)

    def request_rescan(self, project_id: str) -> None:
        """Schedule a reconcile of the project in the rescan worker (never blocks)."""
        if project_id in self.projects:
            self.projects[project_id].needs_rescan = True
            self._rescan_wake.set()

    def pending_files(self, project_id: str) -> int:
        return self.queue.pending(project_id)

    def idle(self) -> bool:
        return len(self.queue) == 0 and self._busy == 0 and not any(
            p.needs_rescan for p in self.projects.values())

    # ---- workers -------------------------------------------------------------------------

    async def run(self) -> None:
        """Run the rescan, chunk and embed workers until cancelled."""
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(self.rescan_worker)
            tasks.start_soon(self.chunk_worker)
            tasks.start_soon(self.embed_worker)
            tasks.start_soon(self.read_retry_worker)

    async def rescan_worker(self) -> None:
        """Reconcile projects that asked for it; its queue puts may wait (backpressure)."""
        while True:
            await self._rescan_wake.wait()
            self._rescan_wake = anyio.Event()
            for project in [p for p in self.projects.values() if p.needs_rescan]:
                try:
                    await self.reconcile(project.id)
                except Exception as exc:
                    if not is_transient(exc):
                        log.error("rescan_failed", project=project.id, error=describe(exc))
                        if self.on_project_error is not None:
                            self.on_project_error(project.id, exc)
                        continue
                    log.warning("store_unavailable", project=project.id, error=describe(exc), retry_in=2)
                    project.needs_rescan = True
                    await anyio.sleep(2)
                    self._rescan_wake.set()

    def _retry_later(self, project_id: str, path: str, kind: ChangeKind, error: str) -> None:
        _, attempts, _, _ = self._read_retries.get((project_id, path), (0.0, 0, kind, error))
        delay = min(RETRY_FIRST * 2 ** attempts, READ_RETRY_MAX)
        log.warning("file_unreadable", project=project_id, path=path, error=error, retry_in=delay)
        self._read_retries[(project_id, path)] = (time.monotonic() + delay, attempts + 1, kind, error)

    def unreadable(self, project_id: str) -> dict[str, str]:
        """The project's files whose read failed (path -> the error, e.g. "Input/output
        error"): tried at least once, retried in the background with backoff (1 s doubling
        to a minute) until a read succeeds or the file goes. Their changes stay pending."""
        return {path: error for (pid, path), (_, _, _, error) in self._read_retries.items()
                if pid == project_id}

    async def read_retry_worker(self) -> None:
        """Queue files that could not be read again once their backoff has passed."""
        while True:
            await anyio.sleep(0.5)
            now = time.monotonic()
            for key, (due, attempts, kind, error) in list(self._read_retries.items()):
                if due <= now and key[0] in self.projects:
                    # kept (with its attempts) until a read succeeds, so backoff grows; a full
                    # lane refuses it: offered again on the next pass
                    if self.queue.offer(key[0], key[1], kind, Lane.BACKLOG):
                        self._read_retries[key] = (float("inf"), attempts, kind, error)
                elif key[0] not in self.projects:
                    del self._read_retries[key]

    async def drain(self) -> None:
        """Stop taking new work and wait for the batches in flight (the caller bounds this)."""
        self.stopping = True
        self._wake_embedder()
        while self._busy or self._embedding:  # noqa: ASYNC110 (two counters, polled briefly)
            await anyio.sleep(0.05)
        await self._saved.wait()

    async def chunk_worker(self) -> None:
        backoff = RETRY_FIRST
        while True:
            if self.stopping:
                await anyio.sleep_forever()
            lane, project_id, items = await self.queue.take(
                LIVE_BATCH_FILES if self.queue.has_live_work() else BACKLOG_BATCH_FILES)
            project = self.projects.get(project_id)
            if project is None:
                continue
            self._busy += 1
            try:
                await self._process(project, lane, items)
                backoff = RETRY_FIRST
            except Exception as exc:
                if is_transient(exc):  # the environment's fault: nothing is lost, try again
                    log.warning("store_unavailable", project=project_id, error=describe_db_error(exc),
                                retry_in=backoff)
                    self._requeue(project_id, items, lane)
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, RETRY_MAX)
                else:  # one file's content (or a bug): find it, keep its batch-mates
                    await self._one_by_one(project, lane, items, exc)
            finally:
                self._busy -= 1

    def _requeue(self, project_id: str, items: Sequence[tuple[str, ChangeKind]], lane: Lane) -> None:
        refused = False
        for path, kind in items:
            refused |= not self.queue.offer(project_id, path, kind, lane)
        if refused:  # the lane is full: a rescan finds these again by their stat
            self.request_rescan(project_id)

    async def _one_by_one(self, project: Project, lane: Lane, items: list[tuple[str, ChangeKind]],
                          error: Exception) -> None:
        """A batch failed of something not transient: write its files one at a time, so
        only the file at fault is left out. A file whose content the database refuses is
        recorded as skipped with the reason (final); any other failure of one file is
        recorded on its change events (a bug, visible in status). When every file of a
        batch fails alone too, the fault is not in one file's content: nothing is skipped."""
        if len(items) > 1:
            log.warning("batch_failed", project=project.id, files=len(items),
                        error=describe_db_error(error), action="writing its files one at a time")
        failed: list[tuple[str, Exception]] = []
        for index, item in enumerate(items):
            try:
                if len(items) > 1:
                    await self._process(project, lane, [item])
                    continue
                raise error
            except Exception as exc:
                if is_transient(exc):
                    log.warning("store_unavailable", project=project.id, error=describe_db_error(exc))
                    self._requeue(project.id, items[index:], lane)
                    await anyio.sleep(RETRY_FIRST)
                    return
                failed.append((item[0], exc))
        blame_content = len(items) == 1 or len(failed) < len(items)
        for path, fault in failed:
            await self._record_failed_file(project, path, fault, blame_content)

    async def _record_failed_file(self, project: Project, path: str, exc: Exception,
                                  blame_content: bool = True) -> None:
        reason = describe_db_error(exc)
        try:
            if blame_content and is_content_fault(exc):
                step = await anyio.to_thread.run_sync(self._plan, project, path, None)
                if isinstance(step, FileUpdate):
                    skipped = FileUpdate(step.path, step.size, step.mtime_ns, step.content_hash,
                                         skip_reason=f"{DATABASE_REFUSED}: {reason}")
                    log.warning("file_skipped", project=project.id, path=path, reason=skipped.skip_reason)
                    await project.store.apply([skipped])
                    return
            log.error("file_failed", project=project.id, path=path, error=reason)
            await project.store.finish_events([path], reason)
            self.failed_files.setdefault(project.id, {})[path] = reason
        except Exception as again:  # never the end of the chunk worker
            if is_transient(again):
                self._requeue(project.id, [(path, ChangeKind.MODIFIED)], Lane.BACKLOG)  # decided later
            else:
                log.error("recording_failed_file_failed", project=project.id, path=path,
                          error=describe_db_error(again))

    async def _process(self, project: Project, lane: Lane, items: list[tuple[str, ChangeKind]]) -> None:
        paths = [path for path, _ in items]
        known = await project.store.indexed_files(paths)
        for path, kind in items:  # a deleted or moved-away directory: drop what was under it
            if kind == ChangeKind.DELETED and path not in known:
                below = await project.store.indexed_files(prefix=path + "/")
                known.update(below)
                paths.extend(below)
        # the words of a chunk whose content is stored already are kept with its row
        stored = await project.store.chunk_hashes([p for p in paths if p in known])
        steps = await anyio.to_thread.run_sync(
            lambda: [self._plan(project, path, known.get(path), stored.get(path, ())) for path in paths])
        kinds = dict(items)
        for step in steps:
            if isinstance(step, _Unreadable):  # the event stays pending until a retry reads it
                kind = kinds.get(step.path, ChangeKind.MODIFIED)
                self._retry_later(project.id, step.path, kind, step.error)
        steps = [step for step in steps if not isinstance(step, _Unreadable)]
        failed = self.failed_files.get(project.id, {})
        for step in steps:  # read (or gone): no longer unreadable; failed again is recorded again
            self._read_retries.pop((project.id, step.path), None)
            failed.pop(step.path, None)
        updates = await self._hold_upgrades(project, [s for s in steps if isinstance(s, FileUpdate)], known)
        deleted = [step.path for step in steps if isinstance(step, _Deleted)]
        # a path that vanished while one with the same content appeared: a rename
        gone = {known[path].content_hash: path for path in deleted if known[path].content_hash}
        renames = {u.path: gone[u.content_hash] for u in updates if u.content_hash in gone}
        missing = await project.store.apply(updates, deleted, self.model_id, renames, CHUNKER_VERSION)
        await project.store.touch([(s.path, s.size, s.mtime_ns) for s in steps if isinstance(s, _Touched)])
        await project.store.finish_events([s.path for s in steps if isinstance(s, _Unchanged)])
        self.progress.files_done += len(items)
        if missing:
            if lane == Lane.LIVE:  # these vectors go ahead of the backlog
                wanted = set(missing)
                for chunk in (chunk for update in updates for chunk in update.chunks):
                    if chunk.content_hash in wanted:
                        self._hot.append((project.id, chunk))
                        wanted.discard(chunk.content_hash)
            self._wake_embedder()

    async def _hold_upgrades(self, project: Project, updates: list[FileUpdate],
                             known: dict[str, IndexedFile]) -> list[FileUpdate]:
        """The updates to write now: a file re-chunked only because the chunker changed waits
        until the embedding cache has all its new chunks (see rechunks.py)."""
        upgrades = [u for u in updates if (before := known.get(u.path)) is not None
                    and before.chunker_version < CHUNKER_VERSION and before.content_hash == u.content_hash
                    and not u.skip_reason and u.chunks]
        if not upgrades or self.model_id is None:
            return updates
        cached = await self.store.cached_hashes(self.model_id,
                                                [c.content_hash for u in upgrades for c in u.chunks])
        held = set()
        for update in upgrades:
            hashes = {c.content_hash for c in update.chunks}
            if not hashes <= cached and self._rechunks.hold(project.id, update.path, update.chunks,
                                                            hashes - cached):
                held.add(update.path)
        if held:
            self._wake_embedder()
        return [u for u in updates if u.path not in held]

    def _plan(self, project: Project, path: str, before: IndexedFile | None,
              stored: Collection[str] = ()) -> _Step:
        """Decide what one path needs; runs in a worker thread (reads and chunks). `stored`:
        the content hashes of its chunks in the store, whose words need no computing."""
        max_bytes = self.settings.config.index.max_file_bytes
        try:
            stat = stat_file(project.root, path, max_bytes, project.rules)
        except OSError as exc:  # EACCES on a directory above it, EIO: not a deletion
            return _Unreadable(path, describe_os_error(exc))
        if stat is None or project.rules.is_ignored(path):
            return _Deleted(path) if before is not None else _Unchanged(path)
        # chunks written by an older chunker are redone even when the file did not change
        current = before is not None and (before.chunker_version >= CHUNKER_VERSION
                                          or bool(before.skip_reason))
        if before is not None and current and (before.size, before.mtime_ns, before.skip_reason) == (
                stat.size, stat.mtime_ns, stat.skip_reason):
            return _Unchanged(path)
        if stat.skip_reason:
            return FileUpdate(path, stat.size, stat.mtime_ns, "", skip_reason=stat.skip_reason)
        try:
            source = read_text_file(project.root / path, max_bytes)
        except FileNotFoundError:
            return _Deleted(path) if before is not None else _Unchanged(path)
        except OSError as exc:  # EIO, EACCES...: the environment's, retried later
            return _Unreadable(path, describe_os_error(exc))
        if current and before is not None and not before.skip_reason and (
                source.content_hash == before.content_hash):
            return _Touched(path, stat.size, stat.mtime_ns)
        if source.text is None:
            return FileUpdate(path, stat.size, stat.mtime_ns, source.content_hash,
                              skip_reason=source.skip_reason)
        try:
            analysed = self.chunker.analyse(path, source.text)
        except Exception as exc:  # a chunker bug must cost one file, never the daemon
            log.error("chunker_failed", path=path, error=describe(exc))
            return FileUpdate(path, stat.size, stat.mtime_ns, source.content_hash,
                              skip_reason=f"chunker error: {describe(exc)}")
        chunks = analysed.chunks
        return FileUpdate(path, stat.size, stat.mtime_ns, source.content_hash, analysed.language,
                          chunks=tuple(chunks),
                          search_texts=tuple(None if c.content_hash in stored else search_text(path, c)
                                             for c in chunks),
                          definitions=tuple(analysed.definitions))

    # ---- the embed worker ----------------------------------------------------------------

    async def embed_worker(self) -> None:
        """Embed missing vectors forever; saving a batch overlaps embedding the next one."""
        async with anyio.create_task_group() as saves:
            self._saves = saves
            await self._embed_loop()

    async def _embed_loop(self) -> None:
        backoff = 1.0
        while True:
            # taken before any await: a wake during this pass sets this very event, so the
            # wait below returns at once instead of missing it until its timeout
            wake, generation = self._embed_wake, self._work_generation
            try:
                if self.model_id is None:
                    if self.lazy_embedder and not self._embedder_wanted and not await self._needs_embedder():
                        self._settled_generation = generation  # unchanged re-index
                        with anyio.move_on_after(5):
                            await wake.wait()
                        continue
                    await self._start_embedder()
                if self.stopping:
                    await anyio.sleep_forever()
                self._embedding = True
                try:
                    did_work = await self._embed_next()
                finally:
                    self._embedding = False
                backoff = 1.0
                self.embedder_error = None
                if not did_work:
                    await self._build_vector_indexes()  # before "settled": `index` waits for it
                    await self._forget_failures()
                    self._settled_generation = generation
                    with anyio.move_on_after(5):
                        await wake.wait()
            except (EmbedderUnavailable, ModelFileError, EmbedderMismatch) as exc:
                if self.embedder_error != str(exc):
                    log.warning("embedder_unavailable", error=str(exc), retry_in=round(backoff))
                self.embedder_error = str(exc)
                self.embedder_fatal = not isinstance(exc, EmbedderUnavailable)
                self._embedder_tried.set()
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)
            except Exception as exc:  # never let one project's data end the worker
                if is_transient(exc):
                    log.warning("store_unavailable", error=describe(exc), retry_in=round(backoff))
                else:
                    log.error("embed_failed", error=describe(exc), retry_in=round(backoff))
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 60.0)

    async def _build_vector_indexes(self) -> None:
        """Once nothing is left to embed, give each project's vectors their HNSW index (a
        no-op for projects that have one)."""
        for project in list(self.projects.values()):
            try:
                done = None if self._hot else await project.store.finish_vectors()
                if done == "promoted":
                    log.info("model_switched", project=project.id, model=self.model_id)
                elif done == "indexed":
                    log.info("vector_index_built", project=project.id)
            except Exception as exc:  # search scans exactly meanwhile; retried when idle again
                log.warning("vector_index_failed", project=project.id, error=describe(exc))

    async def _needs_embedder(self) -> bool:
        """Is there anything to embed? Loading a local model costs half a second and
        hundreds of MB, so an index with every vector in place does without it."""
        known = self.embedder.model_id  # static for the local model, learnt at start otherwise
        for project in list(self.projects.values()):
            chunks, embedded = await project.store.vector_counts()
            if chunks > embedded or (chunks and (await project.store.model())[0] != known):
                return True
        return bool(self._hot) or bool(self._rechunks)

    async def _start_embedder(self) -> None:
        await self.embedder.start()
        try:  # a model whose vectors pgvector cannot index is a config error: say so once
            self.store.vector_type(self.embedder.dims)
        except StoreUnavailable as exc:
            raise EmbedderMismatch(f"{self.embedder.model_id}: {exc}") from None
        self.model_id = self.embedder.model_id
        if self.embedder_config is not None:
            await self.store.record_model(self.model_id, self.embedder.dims, self.embedder_config)
        for project in list(self.projects.values()):
            await self._use_model(project)
        self._embedder_tried.set()
        log.info("embedder_ready", model=self.model_id)

    def want_embedder(self) -> None:
        """Have a lazy embedder start now (it starts anyway once something needs a vector)."""
        if not self._embedder_wanted:
            self._embedder_wanted = True
            self._embed_wake.set()
            self._embed_wake = anyio.Event()

    async def wait_for_embedder(self) -> bool:
        """Start a lazy embedder now and return once a start succeeded (True) or failed
        (False: embedder_error says why); the caller bounds the wait. A search that needs
        a query vector asks this first."""
        if self.model_id is None and self.embedder_error is None:
            self.want_embedder()
            await self._embedder_tried.wait()
        return self.model_id is not None

    async def _use_model(self, project: Project) -> None:
        assert self.model_id is not None
        previous = await project.store.set_model(self.model_id, self.embedder.dims)
        if previous == "":  # a new project: nothing to re-embed
            log.info("model_set", project=project.id, model=self.model_id)
        elif previous == self.model_id:
            log.info("vectors_converted", project=project.id, model=self.model_id,
                     vector_type=(await project.store.space()).type)
        elif previous:
            log.info("model_changed", project=project.id, previous=previous, model=self.model_id,
                     action="re-embedding in the background; search uses the previous model until done")

    async def _embed_next(self) -> bool:
        """Embed one batch (live chunks first). False when there was nothing to do."""
        assert self.model_id is not None
        project_id, chunks = take_project_run(self._hot, EMBED_BATCH)
        if not chunks:
            project_id, chunks = await self._take_backlog()
        rechunks = not chunks
        if rechunks:  # upgrades last: their files keep their old vectors meanwhile
            project_id, chunks = self._rechunks.take(EMBED_BATCH)
        if not chunks or project_id not in self.projects:
            return False
        project = self.projects[project_id]
        by_hash = {chunk.content_hash: chunk for chunk in chunks}
        cached = await self.store.cached_vectors(self.model_id, list(by_hash))
        if cached and not rechunks:
            self.progress.reused += await self.store.save_vectors(self.model_id, cached, [project.store])
        todo = [chunk for h, chunk in by_hash.items() if h not in cached]
        if not todo:
            if rechunks:
                self._release_rechunks(project_id, by_hash)
            return True
        started = time.perf_counter()
        try:
            fresh = await self._embed(project_id, todo)
        except EmbedderUnavailable:
            if rechunks:
                self._rechunks.put_back(project_id, todo)
            else:
                self._requeue_hot(project_id, todo)
            raise
        if not fresh:  # every text failed for good (given up)
            if rechunks:  # write those files anyway
                self._release_rechunks(project_id, by_hash)
            return True
        batch = EmbeddingBatch(self.model_id, self.embedder.model_name, self.embedder.model_version,
                               self.embedder.dims, len(fresh), time.perf_counter() - started)
        await self._saved.wait()  # at most one save in flight
        self._saved = anyio.Event()
        assert self._saves is not None  # embed_worker opened it
        self._saves.start_soon(self._save, project, fresh, batch, chunks if rechunks else None)
        return True

    async def _embed(self, project_id: str, chunks: list[Chunk]) -> dict[str, Vectors]:
        """Vectors of `chunks` by content hash. A batch the embedder fails on for good (not
        EmbedderUnavailable, which propagates: e.g. the wrong shape) is embedded one text
        at a time, so that only a text failing alone is given up (and left out)."""
        try:
            vectors = await self.embedder.embed_documents([embedding_text(c) for c in chunks])
            return {chunk.content_hash: vectors[i] for i, chunk in enumerate(chunks)}
        except EmbedderUnavailable:
            raise
        except CodequarryError as exc:
            if len(chunks) == 1:
                log.error("embedding_failed", project=project_id, error=str(exc))
                self._give_up(project_id, [chunks[0].content_hash], str(exc))
                return {}
            log.error("embedding_failed", project=project_id, error=str(exc), texts=len(chunks),
                      action="embedding them one at a time")
        fresh: dict[str, Vectors] = {}
        for chunk in chunks:
            fresh.update(await self._embed(project_id, [chunk]))
        return fresh

    def _release_rechunks(self, project_id: str, hashes: Iterable[str]) -> None:
        """Queue the held files whose new chunks are now all cached: they swap in at once."""
        for path in self._rechunks.settle(project_id, hashes):
            self.queue.offer(project_id, path, ChangeKind.MODIFIED, Lane.BACKLOG)

    async def _save(self, project: Project, vectors: dict[str, Vectors], batch: EmbeddingBatch,
                    rechunked: list[Chunk] | None = None) -> None:
        """Store one batch of vectors; runs while the next batch is being embedded. A batch
        lost to a connection failure is simply embedded again: its chunks still lack vectors
        (held re-chunks, `rechunked`: the batch's chunks, whose vectors go to the cache
        only, are put back in line). A batch that fails of anything else is saved one
        vector at a time, so that only a vector failing alone is given up."""
        try:
            self.progress.embedded += await self.store.save_vectors(
                batch.model_id, vectors, [] if rechunked is not None else [project.store],
                batch=batch, project_id=project.id)
            if rechunked is not None:
                self._release_rechunks(project.id, (c.content_hash for c in rechunked))
        except Exception as exc:
            if is_transient(exc):
                self._save_lost(project, exc, rechunked)
            else:
                log.error("saving_vectors_failed", project=project.id, error=describe(exc),
                          action="saving them one at a time")
                await self._save_each(project, vectors, batch.model_id, rechunked)
        finally:
            self._saved.set()

    async def _save_each(self, project: Project, vectors: dict[str, Vectors], model_id: str,
                         rechunked: list[Chunk] | None) -> None:
        for content_hash, vector in vectors.items():
            try:
                self.progress.embedded += await self.store.save_vectors(
                    model_id, {content_hash: vector}, [] if rechunked is not None else [project.store])
            except Exception as exc:
                if is_transient(exc):  # the rest is found (or put back) and saved again later
                    self._save_lost(project, exc, rechunked)
                    return
                log.error("saving_vector_failed", project=project.id, error=describe(exc))
                self._give_up(project.id, [content_hash], f"saving a vector failed: {describe(exc)}")
        if rechunked is not None:  # those that failed too: their files are written without them
            self._release_rechunks(project.id, (c.content_hash for c in rechunked))

    def _save_lost(self, project: Project, exc: Exception, rechunked: list[Chunk] | None) -> None:
        """A save lost to the connection: its chunks still lack vectors, so the backlog
        finds them again; held re-chunks (`rechunked`) are put back in line."""
        log.warning("store_unavailable", project=project.id, error=describe(exc))
        if rechunked is not None:
            self._rechunks.put_back(project.id, rechunked)

    def _give_up(self, project_id: str, hashes: Iterable[str], reason: str) -> None:
        """Never embed these again in this process; the project's status and `index` say why."""
        self._failed_hashes.setdefault(project_id, set()).update(hashes)
        self.embedding_failures[project_id] = reason

    async def _forget_failures(self) -> None:
        """Once no chunk that failed is left without a vector (its files were changed or
        deleted), the project's failure is over: a stale reason must not show as an error
        while later edits embed, and content that comes back is tried again."""
        for project_id, hashes in list(self._failed_hashes.items()):
            project = self.projects.get(project_id)
            if project is None or not await project.store.lacking_vectors(hashes):
                self.embedding_failures.pop(project_id, None)
                self._failed_hashes.pop(project_id, None)

    def _requeue_hot(self, project_id: str, chunks: list[Chunk]) -> None:
        self._hot.extendleft((project_id, chunk) for chunk in reversed(chunks))

    async def _take_backlog(self) -> tuple[str | None, list[Chunk]]:
        """The next batch from a pool of backlog chunks sorted by length: batches of
        similar length waste little on padding, and stay small enough that a live edit
        never waits long behind one."""
        if not self._pool:
            await self._saved.wait()  # else the refill would fetch the batch being saved
            for project in list(self.projects.values()):
                chunks = await project.store.unembedded(
                    BACKLOG_POOL, sorted(self._failed_hashes.get(project.id, ())))
                if chunks:
                    lengths = self.embedder.token_counts([embedding_text(c) for c in chunks])
                    ordered = sorted(zip(lengths, range(len(chunks)), chunks, strict=True))
                    self._pool = deque((project.id, chunk) for _, _, chunk in ordered)
                    break
        return take_project_run(self._pool, EMBED_BATCH)  # the pool holds one project

    def embedding_settled(self) -> bool:
        return self._settled_generation == self._work_generation and not self._hot and not self._rechunks

    def _wake_embedder(self) -> None:
        self._work_generation += 1
        self._embed_wake.set()
        self._embed_wake = anyio.Event()
