"""A team's PostgreSQL server (issue 15), against a real standalone server on 127.0.0.1:
password auth over TCP, unprivileged roles, two installations sharing one database,
concurrent first starts, and the server restarting under a running daemon.

The server (tests/tcp_postgres.py) is one postmaster for the run; each test gets its own
role and database, so tests never see each other's schemas or embedding caches.
"""

from __future__ import annotations

import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
import tomlkit

from codequarry.config import Settings, load_settings
from codequarry.errors import CodequarryError, ConfigError, StoreUnavailable
from codequarry.runtime import open_runtime
from codequarry.search import SearchRequest
from codequarry.store import url as dburl
from codequarry.store.db import Store
from codequarry.verify import verify_project

from .conftest import running_daemon, until, write_files
from .fakes import HashEmbedder
from .tcp_postgres import TcpPostgres

CODEQUARRY = str(Path(sys.executable).parent / "codequarry")
REPO = {
    "src/geometry.py": "import math\n\n\ndef torus_volume(major, minor):\n"
                       "    return 2 * math.pi ** 2 * major * minor ** 2\n\n\n"
                       "class Shape:\n    def area(self):\n        return 0\n",
    "src/config.py": "def parse_config(path):\n    \"\"\"Read a config file.\"\"\"\n"
                     "    return open(path).read()\n",
    "docs/README.md": "# Demo\n\nA small demo repository about tori and shapes.\n",
}
# the teammate's checkout of the same project id holds different code
OTHER = {
    "lib/ledger.py": "def settle_invoice(invoice, ledger):\n    ledger.append(invoice.total)\n"
                     "    return sum(ledger)\n",
    "lib/README.md": "# Ledger\n\nBookkeeping helpers.\n",
}


@dataclass
class TeamDatabase:
    server: TcpPostgres
    role: str
    password: str
    database: str

    @property
    def url(self) -> str:
        """The URL with the password in it (the simplest setup)."""
        return self.server.dsn(self.role, self.password, self.database)

    def url_without_password(self, **query: str) -> str:
        return self.server.dsn(self.role, None, self.database, **query)


@pytest.fixture
def team_db(tcp_postgres: TcpPostgres) -> Iterator[TeamDatabase]:
    """An unprivileged role owning a fresh database in which a superuser installed pgvector:
    the README's team-server setup."""
    role, password, database = tcp_postgres.role_and_database()
    yield TeamDatabase(tcp_postgres, role, password, database)
    tcp_postgres.drop_database(database)


def installation(base: Path, url: str, projects: list[dict[str, Any]] | None = None,
                 **sections: Any) -> Settings:
    """One codequarry installation: its own data dir and config file under `base`."""
    base.mkdir(parents=True, exist_ok=True)
    document: dict[str, Any] = {"data_dir": str(base / "data"), "database": {"url": url}, **sections}
    if projects:
        document["projects"] = projects
    path = base / "config.toml"
    path.write_text(tomlkit.dumps(document))
    return load_settings(path)


async def index_project(settings: Settings, embedder: HashEmbedder, project_id: str) -> None:
    """Cold-index one project of `settings` in-process until chunked and embedded."""
    async with open_runtime(settings, embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project(project_id))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.indexer.run)
            await runtime.indexer.reconcile(project_id)
            await until(_settled(runtime.indexer), 60, "indexing to settle")
            tasks.cancel_scope.cancel()


def _settled(indexer: Any) -> Any:
    async def settled() -> bool:
        return bool(indexer.idle() and indexer.embedding_settled())
    return settled


async def search_paths(settings: Settings, embedder: HashEmbedder, query: str, project_id: str,
                       mode: str = "lexical") -> list[str]:
    async with open_runtime(settings, embedder) as runtime:
        response = await runtime.searcher.search(
            SearchRequest(query, (project_id,), mode), embedder.model_id)  # type: ignore[arg-type]
        return [hit.path for hit in response.results]


# ---- the URL: libpq names mapped for asyncpg, password never rendered --------------------


def test_the_url_maps_sslmode_to_asyncpg_and_renders_without_the_password() -> None:
    parsed = dburl.parse("postgresql://team:s3cret-pw@db.example:5433/cq?sslmode=require")
    assert parsed.drivername == "postgresql+asyncpg"
    assert dict(parsed.query) == {"ssl": "require"}
    assert (parsed.host, parsed.port, parsed.database, parsed.username) == ("db.example", 5433, "cq", "team")
    assert parsed.password == "s3cret-pw"
    assert "s3cret-pw" not in str(parsed)
    assert dburl.mask("postgresql://team:s3cret-pw@db.example/cq") == "postgresql://team:***@db.example/cq"
    masked = dburl.mask("postgresql://team@db.example/cq?password=s3cret-pw")
    assert "s3cret-pw" not in masked
    assert dburl.mask_text("failed: postgresql://team:s3cret-pw@db/cq", None) == "failed: postgresql://team:***@db/cq"
    assert dburl.parse("postgres://team@db/cq").drivername == "postgresql+asyncpg"
    socket_url = dburl.parse("postgresql://team@/cq?host=/run/postgresql&sslmode=disable")
    assert dict(socket_url.query) == {"host": "/run/postgresql", "ssl": "disable"}


def test_a_bad_sslmode_or_unknown_url_parameter_is_one_config_line_without_the_password(
        tmp_path: Path) -> None:
    cases = (("sslmode=always", "sslmode must be one of"), ("sslcompression=1", "sslcompression"))
    for query, named in cases:
        path = tmp_path / "config.toml"
        path.write_text(f'[database]\nurl = "postgresql://team:s3cret-pw@db.example/cq?{query}"\n')
        with pytest.raises(ConfigError) as caught:
            load_settings(path)
        message = str(caught.value)
        assert named in message
        assert "s3cret-pw" not in message
        assert "\n" not in message


# ---- least privilege: passwords from the environment, sslmode, roles -----------------------


async def _open_and_close(url: str, tmp_path: Path) -> None:
    store = await Store.open(installation(tmp_path / "inst", url))
    await store.close()


async def test_the_password_comes_from_pgpassword(team_db: TeamDatabase, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    url = team_db.url_without_password()
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(StoreUnavailable) as caught:
        await _open_and_close(url, tmp_path)
    assert "set PGPASSWORD or add a ~/.pgpass line" in str(caught.value)
    monkeypatch.setenv("PGPASSWORD", team_db.password)
    await _open_and_close(url, tmp_path)


async def test_the_password_comes_from_a_pgpass_file_in_home(team_db: TeamDatabase, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PGPASSWORD", raising=False)
    monkeypatch.delenv("PGPASSFILE", raising=False)
    home = tmp_path / "teammate-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    pgpass = home / ".pgpass"
    pgpass.write_text(f"127.0.0.1:{team_db.server.port}:{team_db.database}:{team_db.role}:{team_db.password}\n")
    pgpass.chmod(0o600)
    await _open_and_close(team_db.url_without_password(), tmp_path)


async def test_sslmode_disable_and_prefer_connect_and_require_fails_in_one_line(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    for mode in ("disable", "prefer"):
        await _open_and_close(team_db.server.dsn(team_db.role, team_db.password, team_db.database,
                                                 sslmode=mode), tmp_path / mode)
    with pytest.raises(StoreUnavailable) as caught:
        await _open_and_close(team_db.server.dsn(team_db.role, team_db.password, team_db.database,
                                                 sslmode="require"), tmp_path / "require")
    message = str(caught.value)
    assert "\n" not in message
    assert "does not offer TLS" in message
    assert "sslmode" in message
    assert team_db.password not in message


def test_a_wrong_password_is_reported_and_never_logged(team_db: TeamDatabase, tmp_path: Path) -> None:
    wrong = "wrong-" + team_db.password[::-1]
    settings = installation(tmp_path / "inst", team_db.server.dsn(team_db.role, wrong, team_db.database))
    log_file = tmp_path / "daemon.log"
    done = subprocess.run(
        [CODEQUARRY, "daemon", "--config", str(settings.config_path),
         "--log-level", "debug", "--log-file", str(log_file)],
        capture_output=True, text=True, timeout=120,
        env={k: v for k, v in os.environ.items() if k != "PGPASSWORD"})
    assert done.returncode != 0
    output = done.stdout + done.stderr + (log_file.read_text() if log_file.exists() else "")
    assert "password authentication failed" in output
    assert wrong not in output, "the daemon's output or log contains the password"


async def test_a_role_that_cannot_create_extensions_works_when_vector_is_installed(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    superuser = team_db.server.psql(f"SELECT rolsuper FROM pg_roles WHERE rolname = '{team_db.role}'")
    assert superuser.strip() == "f"
    repo = write_files(tmp_path / "repo", REPO)
    settings = installation(tmp_path / "inst", team_db.url, [{"id": "ext", "path": str(repo)}])
    embedder = HashEmbedder()
    await index_project(settings, embedder, "ext")
    assert await search_paths(settings, embedder, "torus_volume", "ext") == ["src/geometry.py"]
    assert await search_paths(settings, embedder, "torus volume major minor", "ext", "semantic")


async def test_without_the_vector_extension_the_error_names_the_sql_an_admin_must_run(
        tcp_postgres: TcpPostgres, tmp_path: Path) -> None:
    role, password, database = tcp_postgres.role_and_database(vector=False)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await _open_and_close(tcp_postgres.dsn(role, password, database), tmp_path)
        message = str(caught.value)
        assert "CREATE EXTENSION vector;" in message
        assert database in message
        assert role in message
        assert "\n" not in message
        assert password not in message
    finally:
        tcp_postgres.drop_database(database)


async def test_without_create_on_the_database_the_error_names_the_grant(
        tcp_postgres: TcpPostgres, tmp_path: Path) -> None:
    role, password, database = tcp_postgres.role_and_database(owner=False)
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await _open_and_close(tcp_postgres.dsn(role, password, database), tmp_path)
        assert f"GRANT CREATE ON DATABASE \"{database}\" TO \"{role}\";" in str(caught.value)
    finally:
        tcp_postgres.drop_database(database)


async def test_teammates_with_their_own_login_roles_share_the_team_role(
        tcp_postgres: TcpPostgres, tmp_path: Path) -> None:
    """The README's per-person roles: members of the team role that own nothing themselves
    (ALTER ROLE ... SET role), so one teammate's tables are usable by the next."""
    team, _, database = tcp_postgres.role_and_database()
    try:
        urls = {}
        for person in ("alice", "bob"):
            login, password = f"{person}_{database}", "pw-" + person + "-" + database[-6:]
            tcp_postgres.create_role(login, password)
            tcp_postgres.psql(f"GRANT {team} TO {login}")
            tcp_postgres.psql(f"ALTER ROLE {login} SET role = '{team}'")
            urls[person] = tcp_postgres.dsn(login, password, database)
        for person, project in (("alice", "api"), ("bob", "web")):
            repo = write_files(tmp_path / person / "checkout", REPO if person == "alice" else OTHER)
            settings = installation(tmp_path / person, urls[person], [{"id": project, "path": str(repo)}])
            await index_project(settings, HashEmbedder(), project)
        owners = tcp_postgres.psql("SELECT DISTINCT tableowner FROM pg_tables WHERE schemaname = "
                                   "'codequarry' OR schemaname LIKE 'cq%'", database=database)
        assert owners.split() == [team]
    finally:
        tcp_postgres.drop_database(database)


# ---- two installations on one server -------------------------------------------------------


async def test_two_installations_with_the_same_project_id_never_clobber_each_other(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    mine = write_files(tmp_path / "alice" / "checkout", REPO)
    theirs = write_files(tmp_path / "bob" / "checkout", OTHER)
    alice = installation(tmp_path / "alice", team_db.url, [{"id": "ext", "path": str(mine)}])
    bob = installation(tmp_path / "bob", team_db.url, [{"id": "ext", "path": str(theirs)}])
    await index_project(alice, HashEmbedder(), "ext")
    await index_project(bob, HashEmbedder(), "ext")

    assert await search_paths(alice, HashEmbedder(), "torus_volume", "ext") == ["src/geometry.py"]
    assert await search_paths(alice, HashEmbedder(), "settle_invoice", "ext") == [], \
        "alice's searches return bob's files: the installations share one index"
    assert await search_paths(bob, HashEmbedder(), "settle_invoice", "ext") == ["lib/ledger.py"]
    assert await search_paths(bob, HashEmbedder(), "torus_volume", "ext") == []
    for settings in (alice, bob):
        problems = await anyio.to_thread.run_sync(verify_project, settings, settings.config.project("ext"))
        assert problems == [], f"verify of {settings.data_dir}: {problems}"


async def test_a_teammates_cold_index_of_the_same_tree_computes_at_most_1_percent_of_the_embeddings(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    files = {f"pkg/module_{i}.py": f"def function_{i}(value):\n    \"\"\"Step {i} of the pipeline.\"\"\"\n"
                                   f"    return value * {i} + {i * 7}\n" for i in range(120)}
    first_tree = write_files(tmp_path / "alice" / "checkout", files)
    second_tree = shutil.copytree(first_tree, tmp_path / "bob" / "checkout")
    alice = installation(tmp_path / "alice", team_db.url, [{"id": "ext", "path": str(first_tree)}])
    bob = installation(tmp_path / "bob", team_db.url, [{"id": "ext", "path": str(second_tree)}])
    first, second = HashEmbedder(), HashEmbedder()
    await index_project(alice, first, "ext")
    await index_project(bob, second, "ext")
    assert len(first.embedded_texts) >= 120
    assert len(second.embedded_texts) <= 0.01 * len(first.embedded_texts)
    async with open_runtime(bob, HashEmbedder()) as runtime:
        chunks, embedded = await (await runtime.store.project("ext")).vector_counts()
        assert chunks == embedded >= 120, "bob's index is not complete"
        computed = await runtime.store.embeddings_computed(first.model_id)
        assert computed == len(first.embedded_texts) + len(second.embedded_texts)


async def test_a_copied_installation_identity_pointing_the_project_elsewhere_is_refused_in_one_line(
        team_db: TeamDatabase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A data dir copied to another machine (installation-id included) whose config points
    the same project id at a different checkout must not silently take over the index."""
    mine = write_files(tmp_path / "laptop" / "checkout", REPO)
    elsewhere = write_files(tmp_path / "desktop" / "checkout", OTHER)
    laptop = installation(tmp_path / "laptop", team_db.url, [{"id": "ext", "path": str(mine)}])
    await index_project(laptop, HashEmbedder(), "ext")
    identity = laptop.data_dir / "installation-id"
    assert identity.exists(), "an installation keeps its identity in <data dir>/installation-id"
    desktop = installation(tmp_path / "desktop", team_db.url, [{"id": "ext", "path": str(elsewhere)}])
    desktop.data_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy2(identity, desktop.data_dir / "installation-id")
    other_host = "desktop-" + socket.gethostname()
    monkeypatch.setattr(socket, "gethostname", lambda: other_host)
    monkeypatch.setattr(platform, "node", lambda: other_host)

    with pytest.raises(CodequarryError) as caught:
        async with open_runtime(desktop, HashEmbedder()) as runtime:
            await runtime.indexer.add_project(desktop.config.project("ext"))
    message = str(caught.value)
    assert "\n" not in message, f"the refusal should be one line, got {message!r}"
    assert "installation" in message, f"the refusal should name the shared installation identity: {message!r}"
    assert "installation-id" in message, f"the refusal should say how to get a new identity: {message!r}"
    monkeypatch.undo()  # back on the laptop's own host
    assert await search_paths(laptop, HashEmbedder(), "torus_volume", "ext") == ["src/geometry.py"], \
        "the refused installation changed the original's index"


# ---- many daemons, one server ---------------------------------------------------------------


def _start_daemon(settings: Settings, log_file: Path, runtime_dir: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [CODEQUARRY, "daemon", "--config", str(settings.config_path),
         "--log-level", "info", "--log-file", str(log_file)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "XDG_RUNTIME_DIR": str(runtime_dir)})


def test_two_daemons_starting_at_once_on_an_empty_database_both_come_up(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    started: list[tuple[subprocess.Popen[bytes], Path, Settings]] = []
    configs = []
    for name in ("alice", "bob"):
        repo = write_files(tmp_path / name / "checkout", REPO)
        settings = installation(tmp_path / name, team_db.url, [{"id": "ext", "path": str(repo)}],
                                daemon={"drain_timeout_seconds": 1})
        (tmp_path / name / "run").mkdir(mode=0o700)
        configs.append((tmp_path / name / "daemon.log", settings))
    for log, settings in configs:  # both at once, before either has migrated anything
        started.append((_start_daemon(settings, log, log.parent / "run"), log, settings))
    try:
        deadline = time.monotonic() + 240
        pending = {log for _, log, _ in started}
        while pending:
            for process, log, _ in started:
                text_so_far = log.read_text() if log.exists() else ""
                if "daemon_ready" in text_so_far:
                    pending.discard(log)
                elif process.poll() is not None:
                    stderr = process.stderr.read().decode() if process.stderr else ""
                    pytest.fail(f"daemon of {log.parent.name} exited {process.returncode}: "
                                f"{stderr[-2000:]}{text_so_far[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after 240s: {sorted(p.parent.name for p in pending)}")
            time.sleep(0.1)  # poll interval; the loop checks the daemons' own ready lines
        for _, log, _ in started:
            assert "project_start_failed" not in log.read_text(), log.read_text()[-2000:]
    finally:
        for process, _, _ in started:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process, _, _ in started:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    versions = team_db.server.psql("SELECT scope || '=' || version FROM codequarry.schema_version",
                                   database=team_db.database)
    assert "shared=" in versions


async def test_a_daemon_meeting_a_newer_schema_refuses_in_one_line_and_changes_nothing(
        team_db: TeamDatabase, tmp_path: Path) -> None:
    await _open_and_close(team_db.url, tmp_path / "first")
    team_db.server.psql("UPDATE codequarry.schema_version SET version = version + 100 "
                        "WHERE scope = 'shared'", database=team_db.database)
    before = team_db.server.psql("SELECT scope, version, applied_at FROM codequarry.schema_version "
                                 "ORDER BY scope", database=team_db.database)
    with pytest.raises(StoreUnavailable) as caught:
        await _open_and_close(team_db.url, tmp_path / "older")
    message = str(caught.value)
    assert "\n" not in message
    assert "newer" in message.lower() or "upgrade" in message.lower(), \
        f"an older daemon should say the schema is newer and ask for an upgrade: {message!r}"
    assert team_db.server.psql("SELECT scope, version, applied_at FROM codequarry.schema_version "
                               "ORDER BY scope", database=team_db.database) == before


# ---- the server goes away and comes back ----------------------------------------------------


async def test_edits_made_while_the_server_is_down_become_searchable_after_it_returns(
        team_db: TeamDatabase, tmp_path: Path, runtime_dir: Path) -> None:
    repo = write_files(tmp_path / "repo", REPO)
    settings = installation(tmp_path / "inst", team_db.url, [{"id": "ext", "path": str(repo)}])
    embedder = HashEmbedder()
    async with running_daemon(settings, embedder) as daemon:
        assert daemon.runtime is not None
        runtime = daemon.runtime

        async def finds(query: str, path: str) -> bool:
            try:
                response = await runtime.searcher.search(SearchRequest(query, ("ext",), "lexical"),
                                                         embedder.model_id)
            except Exception:  # the server is still coming back: keep polling
                return False
            return any(hit.path == path for hit in response.results)

        async def indexed() -> bool:
            return await finds("torus_volume", "src/geometry.py")

        await until(indexed, 60, "the first index")
        await anyio.to_thread.run_sync(team_db.server.stop)
        try:
            edited = "def parse_config(path):\n    return quokka_marmalade(path)\n"
            (repo / "src" / "config.py").write_text(edited)
            write_files(repo, {"src/fresh.py": "def wombat_ledger():\n    return 42\n"})
            (repo / "docs" / "README.md").unlink()
        finally:
            await anyio.to_thread.run_sync(team_db.server.start)

        async def edits_landed() -> bool:
            return (await finds("quokka_marmalade", "src/config.py")
                    and await finds("wombat_ledger", "src/fresh.py")
                    and not await finds("tori shapes", "docs/README.md"))

        await until(edits_landed, 120, "the edits made while the server was down")
        await until(_settled(runtime.indexer), 60, "indexing to settle")
    problems = await anyio.to_thread.run_sync(verify_project, settings, settings.config.project("ext"))
    assert problems == []


def test_tcp_server_fixture_restarts_on_the_same_port(tcp_postgres: TcpPostgres) -> None:
    port = tcp_postgres.port
    tcp_postgres.restart()
    assert tcp_postgres.port == port
    assert tcp_postgres.psql("SELECT 1").strip() == "1"
