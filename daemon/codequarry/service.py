"""The daemon's lifespan: start, watch, serve, reload config, shut down cleanly.

Start: store, embedder and workers; one watcher per project (each scans and reconciles
once its watcher is live); the MCP socket; then READY for systemd. Shutdown on the first
SIGTERM/SIGINT: stop serving and watching, let the batch in flight finish (bounded by
drain_timeout_seconds), cancel the rest, stop the embedded PostgreSQL. A second signal
cancels at once. Work not done is not lost: it is found again by the next start's scan.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
import watchfiles
from anyio.abc import TaskGroup

from codequarry import __version__
from codequarry.config import ProjectConfig, Settings, load_settings
from codequarry.daemon_lock import IndexLock
from codequarry.embedding import Embedder
from codequarry.errors import CodequarryError, DaemonRunning
from codequarry.logs import get_logger
from codequarry.runtime import Runtime, open_runtime
from codequarry.store.db import is_transient
from codequarry.watch import watch_repository

log = get_logger(__name__)
HOUSEKEEPING_SECONDS = 60.0


class _UnixServer(uvicorn.Server):
    """uvicorn without its own signal handlers: the daemon owns signals."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped = anyio.Event()

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            self.stopped.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self.settings = settings
        self._embedder = embedder
        self.started_at = time.time()
        self.ready = anyio.Event()
        self.runtime: Runtime | None = None
        self._tasks: TaskGroup | None = None
        self._watchers: dict[str, tuple[ProjectConfig, anyio.CancelScope]] = {}
        self._servers: list[_UnixServer] = []
        self._stop = anyio.Event()
        self._analyzed: dict[str, int] = {}

    def info(self) -> dict[str, Any]:
        runtime = self.runtime
        return {"running": True, "pid": os.getpid(), "version": __version__,
                "socket": str(self.settings.socket_path),
                "uptime_seconds": round(time.time() - self.started_at),
                "model": runtime.indexer.model_id if runtime else None,
                "embedder_error": runtime.indexer.embedder_error if runtime else None,
                "watching": sorted(self._watchers)}

    def request_stop(self) -> None:
        self._stop.set()

    # ---- lifespan ------------------------------------------------------------------

    async def serve(self) -> None:
        async with open_runtime(self.settings, self._embedder) as runtime:
            self.runtime = runtime
            async with anyio.create_task_group() as tasks:
                self._tasks = tasks
                tasks.start_soon(runtime.indexer.run)
                for project in self.settings.config.projects:
                    await self.start_project(project)
                await self._start_socket_server(tasks)
                tasks.start_soon(self._watch_config)
                tasks.start_soon(self._housekeeping)
                log.info("daemon_ready", socket=str(self.settings.socket_path),
                         projects=[p.id for p in self.settings.config.projects])
                sd_notify("READY=1")
                self.ready.set()
                await self._stop.wait()
                sd_notify("STOPPING=1")
                await self._shutdown()
                tasks.cancel_scope.cancel()

    async def _shutdown(self) -> None:
        log.info("daemon_stopping", drain_timeout=self.settings.config.daemon.drain_timeout_seconds)
        for server in self._servers:
            server.should_exit = True
        for _, scope in self._watchers.values():
            scope.cancel()
        assert self.runtime is not None
        with anyio.move_on_after(self.settings.config.daemon.drain_timeout_seconds):
            await self.runtime.indexer.drain()
        with anyio.move_on_after(5):  # let uvicorn finish its lifespan before we cancel
            for server in self._servers:
                await server.stopped.wait()
        self._remove_socket()

    # ---- projects ------------------------------------------------------------------

    async def start_project(self, config: ProjectConfig) -> None:
        """Watch and index a project; restarts it if its config changed. Idempotent."""
        current = self._watchers.get(config.id)
        if current is not None:
            if current[0] == config:
                return
            self.stop_project(config.id)
        assert self.runtime is not None
        assert self._tasks is not None
        try:
            project = await self.runtime.indexer.add_project(config)
        except Exception as exc:
            if not isinstance(exc, CodequarryError) and not is_transient(exc):
                raise
            log.error("project_start_failed", project=config.id, error=str(exc))
            return
        scope = anyio.CancelScope()
        self._watchers[config.id] = (config, scope)
        indexer = self.runtime.indexer

        async def watch() -> None:
            with scope:
                await watch_repository(
                    project.root, project.rules, self.settings.config.daemon.debounce_ms,
                    lambda changes: indexer.notify(config.id, changes),
                    lambda: indexer.request_rescan(config.id))

        self._tasks.start_soon(watch)
        log.info("project_watching", project=config.id, root=str(config.path))

    def stop_project(self, project_id: str) -> None:
        entry = self._watchers.pop(project_id, None)
        if entry is not None:
            entry[1].cancel()
        if self.runtime is not None:
            self.runtime.indexer.remove_project(project_id)
        log.info("project_stopped", project=project_id)

    async def _watch_config(self) -> None:
        """Apply project additions, removals and changes from the config file, no restart."""
        path = self.settings.config_path
        path.parent.mkdir(parents=True, exist_ok=True)
        async for _ in watchfiles.awatch(path.parent, debounce=200, recursive=False, rust_timeout=500,
                                         watch_filter=lambda _c, p: Path(p).name == path.name):
            try:
                fresh = load_settings(path)
            except CodequarryError as exc:
                log.error("config_invalid", error=str(exc), action="keeping the running config")
                continue
            await self.apply_settings(fresh)

    async def apply_settings(self, fresh: Settings) -> None:
        before = {p.id: p for p in self.settings.config.projects}
        after = {p.id: p for p in fresh.config.projects}
        if (fresh.config.embedder, fresh.config.database) != (
                self.settings.config.embedder, self.settings.config.database):
            log.warning("config_needs_restart", sections="[embedder]/[database]")
        self.settings = fresh
        for project_id in sorted(set(before) - set(after)):
            self.stop_project(project_id)
        for _, config in sorted(after.items()):
            await self.start_project(config)

    async def _housekeeping(self) -> None:
        """Retry projects that could not start, refresh planner statistics after big changes
        (lexical idf uses them), prune old events."""
        last_prune = 0.0
        while True:
            await anyio.sleep(HOUSEKEEPING_SECONDS)
            assert self.runtime is not None
            for config in self.settings.config.projects:  # retry projects that failed to start
                if config.id not in self._watchers:
                    await self.start_project(config)
            for project in list(self.runtime.indexer.projects.values()):
                try:
                    chunks, _ = await project.store.vector_counts()
                    if abs(chunks - self._analyzed.get(project.id, 0)) > max(100, chunks // 10):
                        await project.store.analyze()
                        self._analyzed[project.id] = chunks
                    if time.time() - last_prune > 86_400:
                        await project.store.prune_events()
                except Exception as exc:
                    log.warning("housekeeping_failed", project=project.id, error=str(exc))
            last_prune = time.time() if time.time() - last_prune > 86_400 else last_prune

    # ---- the socket ----------------------------------------------------------------

    async def _start_socket_server(self, tasks: TaskGroup) -> None:
        from codequarry.api import DaemonApi
        from codequarry.logs import quiet_fastmcp_logging
        from codequarry.mcp_server import build_server

        assert self.runtime is not None
        path = self.settings.socket_path
        prepare_socket_path(path)
        mcp = build_server(DaemonApi(self.runtime, self))
        quiet_fastmcp_logging()
        server = _UnixServer(uvicorn.Config(mcp.http_app(path="/mcp"), uds=str(path), log_level="warning",
                                            timeout_graceful_shutdown=2, lifespan="on"))
        self._servers.append(server)
        tasks.start_soon(server.serve)
        while not server.started:
            if server.should_exit:
                raise CodequarryError(f"cannot serve on {path}")
            await anyio.sleep(0.01)
        os.chmod(path, 0o600)
        if self.settings.config.mcp.http:
            from codequarry.mcp_server import tcp_app

            host, _, port = self.settings.config.mcp.http.rpartition(":")
            app = tcp_app(mcp, self.settings.token_path)
            tcp = _UnixServer(uvicorn.Config(app, host=host.strip("[]"), port=int(port),
                                             log_level="warning", timeout_graceful_shutdown=2))
            self._servers.append(tcp)
            tasks.start_soon(tcp.serve)

    def _remove_socket(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.settings.socket_path.unlink()


def prepare_socket_path(path: Path) -> None:
    """A 0700 directory; a stale socket (crashed daemon) is removed, a live one refused."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path.parent, 0o700)
    if path.exists() or path.is_symlink():
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(str(path))
        except OSError:
            path.unlink()  # nobody listens: left over from a crash
        else:
            raise DaemonRunning(f"another daemon is serving on {path}")
        finally:
            probe.close()


def sd_notify(message: str) -> bool:
    """Tell systemd (Type=notify) about our state; a no-op outside systemd."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(address)
            sock.sendall(message.encode())
        except OSError as exc:
            log.warning("sd_notify_failed", error=str(exc))
            return False
    return True


def run_daemon(settings: Settings) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop."""
    from codequarry.warmup import import_in_background

    import_in_background("codequarry.mcp_server")  # issue 13: overlaps the PostgreSQL start
    lock = IndexLock(settings.lock_path, "daemon", wait=False)
    try:
        lock.__enter__()
    except DaemonRunning:
        if "daemon" in lock.holder():
            raise
        lock = IndexLock(settings.lock_path, "daemon", wait=True)  # an index run: wait for it
        lock.__enter__()
    try:
        daemon = Daemon(settings)
        anyio.run(_serve_until_signal, daemon)
    finally:
        lock.__exit__(None, None, None)
    return 0


async def _serve_until_signal(daemon: Daemon) -> None:
    async with anyio.create_task_group() as tasks:
        async def on_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                count = 0
                async for signum in signals:
                    count += 1
                    log.info("signal", signal=signal.Signals(signum).name, count=count)
                    if count == 1:
                        daemon.request_stop()
                    elif count == 2:
                        tasks.cancel_scope.cancel()  # the second signal: stop now
                    else:
                        os._exit(128 + signum)

        tasks.start_soon(on_signals)
        await daemon.serve()
        tasks.cancel_scope.cancel()
