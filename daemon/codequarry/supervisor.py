"""The daemon's projects: one owner for config changes, one runner per project, and a guard
that brings the embedded PostgreSQL back when its postmaster dies.

Config changes (CLI `index`/`add`/`remove` through the API, MCP `index_repository`, the
config-file watcher, hot reload) are applied by the Supervisor one at a time (an anyio
lock). Each registered project has a ProjectRunner whose state is one of

- ``starting``: creating or migrating the project's schema;
- ``scanning``: watching, and comparing the tree with the store;
- ``watching``: following the tree live;
- ``retrying``: its start, scan, index or watch raised; the error and the time of the
  next try are shown, tries back off from 1 s doubling to 60 s;
- ``stopped``: not run (removed, or the daemon is stopping).

An exception in one project never reaches the daemon's task group: the daemon exits only
on a signal or a fault of its own.
"""

from __future__ import annotations

import contextlib
import enum
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import watchfiles
from anyio.abc import TaskGroup

from codequarry.config import ProjectConfig, Settings, load_settings
from codequarry.embedding.base import describe
from codequarry.errors import CodequarryError, UsageError
from codequarry.logs import get_logger
from codequarry.registration import register, unregister
from codequarry.runtime import Runtime
from codequarry.store.db import is_transient
from codequarry.watch import watch_repository

log = get_logger(__name__)

BACKOFF_START = 1.0
BACKOFF_MAX = 60.0
START_WAIT_SECONDS = 30.0  # how long a config change waits for a new project's schema
HOUSEKEEPING_SECONDS = 60.0
GUARD_SECONDS = 1.0


class State(enum.StrEnum):
    STARTING = "starting"
    SCANNING = "scanning"
    WATCHING = "watching"
    RETRYING = "retrying"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class RunnerReport:
    """What status shows of a runner: `retry_at` is a UNIX time (seconds) or None."""

    state: State
    error: str | None
    retry_at: float | None

    def to_json(self) -> dict[str, Any]:
        retry = datetime.fromtimestamp(self.retry_at, UTC).isoformat() if self.retry_at else None
        return {"state": str(self.state), "error": self.error, "retry_at": retry}


class ProjectRunner:
    """Runs one project until cancelled: add it to the indexer, watch it (the watcher asks
    for the scan once live), and start over with backoff after any exception."""

    def __init__(self, config: ProjectConfig, runtime: Runtime, debounce_ms: int) -> None:
        self.config = config
        self.runtime = runtime
        self.debounce_ms = debounce_ms
        self.scope = anyio.CancelScope()
        self.started = anyio.Event()  # set once the first start succeeded or failed
        self._phase = State.STARTING
        self._error: str | None = None
        self._retry_at: float | None = None
        self._fault: BaseException | None = None
        self._faulted = anyio.Event()

    @property
    def id(self) -> str:
        return self.config.id

    def report(self) -> RunnerReport:
        state = self._phase
        if state == State.WATCHING and self.runtime.indexer.scanning(self.id):
            state = State.SCANNING
        return RunnerReport(state, self._error, self._retry_at)

    def fail(self, exc: BaseException) -> None:
        """A worker's failure on this project: the runner restarts it after a backoff."""
        if self._fault is None:
            self._fault = exc
            self._faulted.set()

    def stop(self) -> None:
        self.scope.cancel()
        self._phase = State.STOPPED
        self.runtime.indexer.remove_project(self.id)

    async def run(self) -> None:
        backoff = BACKOFF_START
        with self.scope:
            while True:
                began = time.monotonic()
                try:
                    await self._run_once()
                except Exception as exc:
                    if time.monotonic() - began > BACKOFF_MAX:  # it ran fine for a while
                        backoff = BACKOFF_START
                    self.runtime.indexer.remove_project(self.id)  # a rescan finds its work again
                    self._phase, self._error = State.RETRYING, describe(exc)
                    self._retry_at = time.time() + backoff
                    log.error("project_failed", project=self.id, error=self._error,
                              retry_in=backoff, transient=is_transient(exc))
                    self.started.set()
                    await anyio.sleep(backoff)
                    backoff = min(backoff * 2, BACKOFF_MAX)
        self._phase = State.STOPPED

    async def _run_once(self) -> None:
        self._phase = State.STARTING if self._phase != State.RETRYING else self._phase
        self._fault, self._faulted = None, anyio.Event()
        root = self.config.path
        if root.exists() and not root.is_dir():
            raise CodequarryError(f"the project's root is not a directory: {root}")
        indexer = self.runtime.indexer
        project = await indexer.add_project(self.config)
        self._phase, self._error, self._retry_at = State.WATCHING, None, None
        self.started.set()
        log.info("project_watching", project=self.id, root=str(root))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(watch_repository, project.root, project.rules, self.debounce_ms,
                             lambda changes: indexer.notify(self.id, changes),
                             lambda: indexer.request_rescan(self.id))
            await self._faulted.wait()
            tasks.cancel_scope.cancel()
        assert self._fault is not None
        raise self._fault  # a worker's failure on this project: start over


class Supervisor:
    """Owns the registered projects of a running daemon (see the module doc)."""

    def __init__(self, settings: Settings, runtime: Runtime, tasks: TaskGroup) -> None:
        self.settings = settings
        self.runtime = runtime
        self.runners: dict[str, ProjectRunner] = {}
        self._tasks = tasks
        self._lock = anyio.Lock()
        self._analyzed: dict[str, int] = {}
        runtime.indexer.on_project_error = self._project_failed

    # ---- config changes, one at a time ------------------------------------------------

    async def apply(self, fresh: Settings) -> None:
        """Make the running projects those of `fresh`: stop removed ones, start new ones,
        restart changed ones. Waits (bounded) until each new project passed `starting`."""
        async with self._lock:
            await self._apply(fresh)

    async def reload(self) -> None:
        """Apply the config file as it is now; an invalid file keeps the running config."""
        async with self._lock:
            try:
                fresh = load_settings(self.settings.config_path)
            except CodequarryError as exc:
                log.error("config_invalid", error=str(exc), action="keeping the running config")
                return
            await self._apply(fresh)

    async def register(self, path: str | Path, project_id: str | None = None) -> ProjectConfig:
        """Register a repository in the config file and start it (idempotent)."""
        async with self._lock:
            config = register(self.settings.config_path, path, project_id)
            await self._apply(load_settings(self.settings.config_path))
            return config

    async def purge(self, project_id: str, unregister_first: bool = False) -> bool:
        """Delete a project's indexed data; True if there was any. A project still
        registered is refused unless `unregister_first` (then it is removed from the config)."""
        async with self._lock:
            if unregister_first:
                with contextlib.suppress(UsageError):  # not registered (any more): an orphan
                    unregister(self.settings.config_path, project_id)
            fresh = load_settings(self.settings.config_path)
            if any(p.id == project_id for p in fresh.config.projects):
                raise UsageError(f"project {project_id!r} is registered; "
                                 f"run: codequarry remove {project_id} --purge")
            await self._apply(fresh)
            return await self.runtime.store.drop_project(project_id)

    async def _apply(self, fresh: Settings) -> None:
        old = self.settings.config
        if (fresh.config.embedder, fresh.config.database) != (old.embedder, old.database):
            log.warning("config_needs_restart", sections="[embedder]/[database]")
        self.settings = fresh
        after = {p.id: p for p in fresh.config.projects}
        for project_id in sorted(set(self.runners) - set(after)):
            self._stop(project_id)
        started = [runner for config in sorted(after.values(), key=lambda p: p.id)
                   if (runner := self._start(config)) is not None]
        with anyio.move_on_after(START_WAIT_SECONDS):
            for runner in started:
                await runner.started.wait()

    def _start(self, config: ProjectConfig) -> ProjectRunner | None:
        """Start a runner for `config`; None if one runs for this exact config already."""
        current = self.runners.get(config.id)
        if current is not None:
            if current.config == config:
                return None
            self._stop(config.id)
        runner = ProjectRunner(config, self.runtime, self.settings.config.daemon.debounce_ms)
        self.runners[config.id] = runner
        self._tasks.start_soon(runner.run)
        return runner

    def _stop(self, project_id: str) -> None:
        runner = self.runners.pop(project_id, None)
        if runner is not None:
            runner.stop()
            log.info("project_stopped", project=project_id)

    def _project_failed(self, project_id: str, exc: BaseException) -> None:
        runner = self.runners.get(project_id)
        if runner is not None:
            runner.fail(exc)

    def stop_all(self) -> None:
        for project_id in list(self.runners):
            self._stop(project_id)

    # ---- what status shows -------------------------------------------------------------

    def reports(self) -> dict[str, RunnerReport]:
        return {project_id: runner.report() for project_id, runner in self.runners.items()}

    def watching(self) -> list[str]:
        live = (State.SCANNING, State.WATCHING)
        return sorted(pid for pid, report in self.reports().items() if report.state in live)

    # ---- background duties -------------------------------------------------------------

    async def watch_config(self) -> None:
        """Apply project additions, removals and changes from the config file, no restart."""
        path = self.settings.config_path
        while True:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                first = True
                async for changes in watchfiles.awatch(
                        path.parent, debounce=200, recursive=False, rust_timeout=500,
                        yield_on_timeout=True, watch_filter=lambda _c, p: Path(p).name == path.name):
                    if changes or first:  # first: what changed before the watcher was live
                        first = False
                        await self.reload()
            except (OSError, RuntimeError) as exc:  # e.g. the config's directory vanished
                log.warning("config_watch_failed", error=describe(exc), retry_in=2)
            await anyio.sleep(2)
            await self.reload()  # changes made while not watching

    async def housekeeping(self) -> None:
        """Refresh planner statistics after big changes (lexical idf uses them), prune old
        events. A failure is logged and tried again next round."""
        last_prune = 0.0
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            prune = time.time() - last_prune > 86_400
            for project in list(self.runtime.indexer.projects.values()):
                try:
                    chunks, _ = await project.store.vector_counts()
                    if abs(chunks - self._analyzed.get(project.id, 0)) > max(100, chunks // 10):
                        await project.store.analyze()
                        self._analyzed[project.id] = chunks
                    if prune:
                        await project.store.prune_events()
                except Exception as exc:
                    log.warning("housekeeping_failed", project=project.id, error=describe(exc))
            last_prune = time.time() if prune else last_prune

    async def guard_store(self) -> None:
        """Bring the embedded PostgreSQL back if its postmaster died (kill -9, the OOM
        killer): restart it, reset the connection pool, rescan every project so edits made
        meanwhile are indexed. Only for the embedded server this daemon owns."""
        embedded = self.runtime.store.embedded
        if embedded is None or not embedded.owned:
            return
        backoff = BACKOFF_START
        while True:
            await anyio.sleep(GUARD_SECONDS)
            if embedded.alive():
                backoff = BACKOFF_START
                continue
            log.warning("embedded_postgres_died", action="restarting it")
            try:
                await anyio.to_thread.run_sync(embedded.restart)
            except CodequarryError as exc:  # the old server's backends may still linger
                log.warning("embedded_postgres_restart_failed", error=str(exc), retry_in=backoff)
                await anyio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            await self.runtime.store.engine.dispose()  # every pooled connection died with it
            for project_id in list(self.runtime.indexer.projects):
                self.runtime.indexer.request_rescan(project_id)
            log.info("embedded_postgres_recovered")
