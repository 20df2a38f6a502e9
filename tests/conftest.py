"""Shared fixtures: one real embedded PostgreSQL (pgvector) per test run (per xdist
worker), a fresh database per test, an isolated HOME/XDG environment, settings built from
a real config file on disk, and an initialised embedded data dir to copy into the data dir
of a `codequarry` process whose subject is not the server's first start.

The server is started from a plain synchronous session fixture; async engines are made
per test, so no event loop outlives its test (see design.md on "different loop" errors).
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
import structlog
import tomlkit

from codequarry.config import DatabaseConfig, Settings, load_settings
from codequarry.embedding.base import Vectors
from codequarry.store.embedded import EmbeddedPostgres

from .fakes import HashEmbedder
from .tcp_postgres import tcp_postgres  # noqa: F401  (the team-server tests' TCP server)

if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from codequarry.service import Daemon


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL 18 + pgvector server shared by the whole run."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def embedded_pgdata_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A stopped embedded data dir made by the product's own first start (initdb, then the
    default shared_buffers and the restart it needs), without its server log. initdb takes
    seconds on a loaded machine; a copy of its result takes a tenth of one."""
    pgdata = tmp_path_factory.mktemp("pgtemplate") / "pg"
    server = EmbeddedPostgres(pgdata)
    server.start(DatabaseConfig().embedded_shared_buffers_mb)
    server.stop()
    (pgdata / "log").unlink(missing_ok=True)
    return pgdata


@pytest.fixture
def seeded_store(process_env: dict[str, str], embedded_pgdata_template: Path) -> None:
    """The data dir of `process_env` (test_daemon.py) starts with an initialised, stopped
    embedded PostgreSQL, as after any earlier run: for process tests whose subject is not
    the first start. `cp -a` keeps the server user's ownership and modes."""
    pgdata = Path(process_env["CODEQUARRY_HOME"]) / "pg"
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run(["cp", "-a", str(embedded_pgdata_template), str(pgdata)], check=True)


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> Iterator[str]:
    """A new, empty database for one test: its own shared schema and embedding cache."""
    name = "t_" + uuid.uuid4().hex[:12]
    postgres.psql(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes the real user's config, data or runtime directories."""
    home = tmp_path / "home"
    home.mkdir()
    for key in ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                "XDG_RUNTIME_DIR", "NOTIFY_SOCKET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    yield
    structlog.reset_defaults()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Write a config file for this test (database = the test's database) and load it."""

    def build(projects: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> Settings:
        document: dict[str, Any] = {"data_dir": str(tmp_path / "data"),
                                    "database": {"url": database_url}}
        document.update(sections)
        if projects:
            document["projects"] = projects
        path = tmp_path / "config.toml"
        path.write_text(tomlkit.dumps(document))
        return load_settings(path)

    return build


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


def write_files(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


# Files whose tests start `codequarry` processes or servers of their own, slowest first.
# With xdist's --dist loadfile (pyproject addopts) the files are handed out in collection
# order, so these go first and the run does not end on one of them while the other worker
# idles. Only the order of files changes; a file missing here just goes later.
SLOW_FILES = ("test_trust.py", "test_discovery.py", "test_daemon.py", "test_cli.py", "test_mcp.py",
              "test_team_server.py", "test_fastcli.py", "test_clients.py")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FILES)))  # stable: same order within a file


os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")


# ---- running a real daemon in-process (added for test_daemon/test_mcp/test_units) ------


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private XDG_RUNTIME_DIR, so the daemon's socket path stays under sun_path."""
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="cq", dir="/tmp"))
    path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@asynccontextmanager
async def running_daemon(settings: Settings, embedder: Any = None) -> AsyncIterator[Daemon]:
    """A real Daemon serving in the test's event loop until the block ends."""
    import anyio

    from codequarry.service import Daemon

    daemon = Daemon(settings, embedder)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.serve)
        with anyio.fail_after(60):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()


class SlowEmbedder(HashEmbedder):
    """The deterministic embedder with a fixed latency per batch, like a busy model."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        import anyio

        await anyio.sleep(self.delay)
        return await super().embed_documents(texts)


async def lock_waiters(engine: AsyncEngine) -> int:
    """How many client backends of the engine's database wait for a lock: a test holds a
    writer at a real lock and waits for this instead of sleeping. (A fresh connection each
    time: pg_stat_activity is snapshotted per transaction.)"""
    from sqlalchemy import text

    async with engine.connect() as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
            "AND backend_type = 'client backend' AND wait_event_type = 'Lock'"))).scalar() or 0)


async def until(condition: Callable[[], Awaitable[bool]], seconds: float = 20.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail the test after `seconds`."""
    import anyio

    try:
        with anyio.fail_after(seconds):
            while True:
                if await condition():
                    return
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {seconds}s waiting for {what or condition.__name__}")
