"""The daemon's lifespan: start, watch, serve, reload config, shut down cleanly.

Start: the data dir's lock first (the daemon owns its embedded PostgreSQL), then store,
embedder and workers; the supervisor's runner per project (each watches, then scans and
reconciles once its watcher is live); the MCP socket; then READY for systemd. Shutdown on the first
SIGTERM/SIGINT: stop serving (end the MCP sessions' open notification streams, let requests
in flight finish within 2 s) and watching, let the batch in flight finish (bounded by
drain_timeout_seconds), cancel the rest, stop the embedded PostgreSQL. A second signal
cancels at once. Work not done is not lost: it is found again by the next start's scan.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import uvicorn
from anyio.abc import TaskGroup

from codequarry import __version__, paths
from codequarry.config import ProjectConfig, Settings
from codequarry.daemon_lock import IndexLock, lock_for_daemon
from codequarry.embedding import Embedder
from codequarry.errors import CodequarryError, DaemonRunning
from codequarry.logs import get_logger
from codequarry.runtime import Runtime, open_runtime
from codequarry.supervisor import Supervisor

log = get_logger(__name__)
# what FastMCP imports lazily at the first tool call: its session-state store (key_value,
# beartype-decorated) and the result post-processing (prefab_*, jsonschema): ~0.2 s
FASTMCP_FIRST_CALL_IMPORTS = ("key_value.aio.adapters.pydantic", "key_value.aio.stores.memory",
                              "fastmcp.server.providers.prefab_payload",
                              "fastmcp.server.providers.prefab_synthesis")


class _UnixServer(uvicorn.Server):
    """uvicorn without its own signal handlers (the daemon owns signals), whose shutdown
    ends the MCP sessions' notification streams before waiting for requests to end."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.stopped = anyio.Event()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        from codequarry.mcp_streams import close_notification_streams

        for server in self.servers:  # refuse new connections first (uvicorn does it again)
            server.close()
        sessions = close_notification_streams(self.config.app)
        log.info("mcp_streams_closed", sessions=sessions)
        await super().shutdown(sockets)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            self.stopped.set()

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class Daemon:
    """The daemon process's parts: runtime, supervisor (projects), socket servers, signals."""

    def __init__(self, settings: Settings, embedder: Embedder | None = None) -> None:
        self._settings = settings
        self._embedder = embedder
        self.started_at = time.time()
        self.ready = anyio.Event()
        self.runtime: Runtime | None = None
        self.supervisor: Supervisor | None = None
        self._servers: list[_UnixServer] = []
        self._stop = anyio.Event()

    @property
    def settings(self) -> Settings:
        """The config in force (the supervisor's, once it runs: hot reload replaces it)."""
        return self.supervisor.settings if self.supervisor is not None else self._settings

    def info(self) -> dict[str, Any]:
        runtime = self.runtime
        return {"running": True, "pid": os.getpid(), "version": __version__,
                "socket": str(self.settings.listen_socket_path),
                "uptime_seconds": round(time.time() - self.started_at),
                "model": runtime.indexer.model_id if runtime else None,
                "embedder_error": runtime.indexer.embedder_error if runtime else None,
                "watching": self.supervisor.watching() if self.supervisor else []}

    def project_states(self) -> dict[str, dict[str, Any]]:
        """Project id -> {"state", "error", "retry_at"} of every project the daemon runs."""
        if self.supervisor is None:
            return {}
        return {pid: report.to_json() for pid, report in self.supervisor.reports().items()}

    async def register(self, path: str | Path, project_id: str | None = None) -> ProjectConfig:
        assert self.supervisor is not None
        return await self.supervisor.register(path, project_id)

    async def purge(self, project_id: str, unregister_first: bool = False) -> bool:
        assert self.supervisor is not None
        return await self.supervisor.purge(project_id, unregister_first)

    def request_stop(self) -> None:
        self._stop.set()

    # ---- lifespan ------------------------------------------------------------------

    async def serve(self) -> None:
        try:
            await self._serve()
        finally:
            # only once the store has stopped: until then a client that finds the socket
            # silent sees a daemon stopping, not starting (daemon_phase)
            paths.remove_daemon_record(self.settings.data_dir, os.getpid())

    async def _serve(self) -> None:
        async with open_runtime(self._settings, self._embedder) as runtime:
            self.runtime = runtime
            async with anyio.create_task_group() as tasks:
                supervisor = Supervisor(self._settings, runtime, tasks)
                self.supervisor = supervisor
                tasks.start_soon(runtime.indexer.run)
                await supervisor.apply(self._settings)
                await self._start_socket_server(tasks)
                tasks.start_soon(supervisor.watch_config)
                tasks.start_soon(supervisor.housekeeping)
                tasks.start_soon(supervisor.guard_store)
                log.info("daemon_ready", socket=str(self.settings.listen_socket_path),
                         projects=[p.id for p in self.settings.config.projects])
                sd_notify("READY=1")
                self.ready.set()
                await self._stop.wait()
                sd_notify("STOPPING=1")
                await self._shutdown()
                tasks.cancel_scope.cancel()
        log.info("daemon_stopped")

    async def _shutdown(self) -> None:
        log.info("daemon_stopping", drain_timeout=self.settings.config.daemon.drain_timeout_seconds)
        for server in self._servers:
            server.should_exit = True
        assert self.runtime is not None
        assert self.supervisor is not None
        for runner in self.supervisor.runners.values():
            runner.scope.cancel()  # stop watching; the indexer keeps its projects to drain
        with anyio.move_on_after(self.settings.config.daemon.drain_timeout_seconds) as drain:
            await self.runtime.indexer.drain()
        if drain.cancelled_caught:  # what was left is picked up by the next start's reconcile
            log.warning("drain_timed_out", drain_timeout=self.settings.config.daemon.drain_timeout_seconds)
        with anyio.move_on_after(5):  # let uvicorn finish its lifespan before we cancel
            for server in self._servers:
                await server.stopped.wait()
        self._remove_socket()

    async def apply_settings(self, fresh: Settings) -> None:
        """Apply a new config now (the config-file watcher does the same on its own)."""
        assert self.supervisor is not None
        await self.supervisor.apply(fresh)

    # ---- the socket ----------------------------------------------------------------

    async def _start_socket_server(self, tasks: TaskGroup) -> None:
        # FastMCP's import is the biggest part of a start: in a thread (it waits for the one
        # codequarry.warmup began), so the event loop meanwhile watches and reconciles
        await anyio.to_thread.run_sync(importlib.import_module, "codequarry.mcp_server")
        from codequarry.api import DaemonApi
        from codequarry.logs import quiet_fastmcp_logging
        from codequarry.mcp_server import build_server

        assert self.runtime is not None
        path = self.settings.listen_socket_path
        prepare_socket_path(path)
        mcp = build_server(DaemonApi(self.runtime, self))
        quiet_fastmcp_logging()
        server = _UnixServer(uvicorn.Config(mcp.http_app(path="/mcp"), uds=str(path), log_config=None,
                                            log_level="warning", timeout_graceful_shutdown=2,
                                            lifespan="on"))
        self._servers.append(server)
        tasks.start_soon(server.serve)
        while not server.started:
            if server.should_exit:
                raise CodequarryError(f"cannot serve on {path}")
            await anyio.sleep(0.01)
        os.chmod(path, 0o600)
        # clients started with another environment (no XDG_RUNTIME_DIR) find us through this
        paths.write_daemon_record(self.settings.data_dir, path, os.getpid(), __version__, self.started_at)
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
            self.settings.listen_socket_path.unlink()


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


def run_daemon(settings: Settings, lock: IndexLock | None = None) -> int:
    """Run until SIGTERM/SIGINT; 0 after a clean stop. `lock`: the data dir's lock, taken
    already (daemon_lock.lock_for_daemon; released here), else taken here."""
    from codequarry.warmup import import_in_background

    # issue 13: overlaps the PostgreSQL start; then what the first tool call would import
    import_in_background("codequarry.mcp_server", *FASTMCP_FIRST_CALL_IMPORTS)
    lock = lock or lock_for_daemon(settings.lock_path)
    try:
        daemon = Daemon(settings)
        try:
            anyio.run(_serve_until_signal, daemon)
        except ExceptionGroup as group:
            raise _user_error(group) or group from None
    finally:
        lock.__exit__(None, None, None)
    return 0


def _user_error(group: BaseExceptionGroup[Any]) -> CodequarryError | None:
    """The error to report when a task group failed only of user-caused errors (a wrong
    database password at startup), so the CLI prints its one line, not "internal error"."""
    matched, rest = group.split(CodequarryError)
    if matched is None or rest is not None:
        return None
    leaves: list[BaseException] = list(matched.exceptions)
    while leaves and isinstance(leaves[0], BaseExceptionGroup):
        leaves = list(leaves[0].exceptions)
    return leaves[0] if leaves and isinstance(leaves[0], CodequarryError) else None


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
