"""The MCP server of a real daemon, seen by real clients: the official MCP SDK over the
unix socket, the same SDK through the `codequarry mcp` stdio bridge, FastMCP's in-memory
client, plain HTTP on the optional TCP listener, and the MCP Inspector CLI."""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
import pytest
from fastmcp import Client as FastMCPClient
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from codequarry.api import DaemonApi
from codequarry.client import DaemonClient
from codequarry.config import Settings, load_settings
from codequarry.embedding.base import Vectors
from codequarry.mcp_server import build_server
from codequarry.service import Daemon

from .conftest import SlowEmbedder, running_daemon, until, write_files
from .fakes import HashEmbedder

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
TOOLS = {"search_code", "index_repository", "get_status", "recent_changes", "list_projects",
         "find_symbol", "read_code", "find_references"}

ALPHA = {
    "src/lighthouse.py": "def lighthouse_beacon(signal):\n    \"\"\"Flash the lighthouse lamp.\"\"\"\n"
                         "    return signal * 2\n",
    "src/harbor.py": "class Harbor:\n    def moor(self, ship):\n        return ship\n",
}
BETA = {"lib/lighthouse_keeper.py": "def lighthouse_keeper_log(entry):\n    return [entry]\n"}


# ---- helpers --------------------------------------------------------------------------


def projects_of(answer: dict[str, Any]) -> set[str]:
    """The projects of an answer's results (stated once when one project was asked)."""
    return {hit.get("project", answer.get("project")) for hit in answer["results"]}


@pytest.fixture
def alpha(tmp_path: Path) -> Path:
    return write_files(tmp_path / "alpha", ALPHA)


@pytest.fixture
def beta(tmp_path: Path) -> Path:
    return write_files(tmp_path / "beta", BETA)


@asynccontextmanager
async def uds_session(socket_path: Path,
                      headers: dict[str, str] | None = None) -> AsyncIterator[ClientSession]:
    """An official MCP SDK client session over the daemon's unix socket."""
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)),
                              headers=headers or {}, timeout=httpx2.Timeout(30.0, read=120.0))
    async with http, streamable_http_client("http://localhost/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


@contextmanager
def sdk_notification_stream() -> Iterator[threading.Event]:
    """An event set once an MCP SDK client in this process has its session's GET stream
    (server-initiated messages; opened after `initialized`) established: the SDK says so
    at debug level once the daemon's response headers arrived."""
    established = threading.Event()

    class Established(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "GET SSE connection established" in record.getMessage():
                established.set()

    sdk = logging.getLogger("mcp.client.streamable_http")
    handler, level = Established(logging.DEBUG), sdk.level
    sdk.addHandler(handler)
    sdk.setLevel(logging.DEBUG)
    try:
        yield established
    finally:
        sdk.removeHandler(handler)
        sdk.setLevel(level)


def bridge_env(settings: Settings) -> dict[str, str]:
    """What an MCP client passes to `codequarry mcp`: a config, the user's HOME and runtime dir."""
    return {"CODEQUARRY_CONFIG": str(settings.config_path), "HOME": os.environ["HOME"],
            "XDG_RUNTIME_DIR": os.environ["XDG_RUNTIME_DIR"]}


@asynccontextmanager
async def bridge_session(settings: Settings, cwd: Path, errlog: TextIO) -> AsyncIterator[ClientSession]:
    """An official MCP SDK client session through the `codequarry mcp` stdio bridge."""
    params = StdioServerParameters(command=CODEQUARRY, args=["mcp"], env=bridge_env(settings), cwd=cwd)
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def call(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call a tool that must succeed; its structured result."""
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert not result.is_error, f"{tool}({arguments}) failed: {text}"
    assert result.structured_content is not None
    return dict(result.structured_content)


async def call_error(session: ClientSession, tool: str, **arguments: Any) -> str:
    """Call a tool that must fail; the text of its error."""
    result = await session.call_tool(tool, arguments)
    text = " ".join(getattr(part, "text", "") for part in result.content)
    assert result.is_error, f"{tool}({arguments}) did not fail: {text[:300]}"
    assert "Traceback" not in text
    assert 'File "' not in text
    return text


async def searchable(daemon: Daemon, project: str, files: int) -> None:
    """Wait until `project` holds `files` files, all embedded and nothing pending."""
    assert daemon.runtime is not None
    indexer = daemon.runtime.indexer

    async def ready() -> bool:
        if project not in indexer.projects:
            return False
        counts = await indexer.projects[project].store.counts()
        return (counts.files == files and counts.chunks == counts.embedded and indexer.idle()
                and counts.pending_events == 0)

    await until(ready, 30, f"{project} to be indexed")


# ---- tools over the socket, the bridge and in memory -----------------------------------


async def test_tools_are_listed_and_search_code_returns_results_and_freshness_over_socket_and_bridge(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        async with uds_session(settings.socket_path) as session:
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            assert all(tool.description for tool in tools.values())
            limit = tools["search_code"].input_schema["properties"]["limit"]
            assert (limit["minimum"], limit["maximum"]) == (1, 50)
            answer = await call(session, "search_code", query="lighthouse_beacon", project="alpha")
            assert answer["results"][0]["path"] == "src/lighthouse.py"
            assert answer["results"][0]["symbol"] == "lighthouse_beacon"
            assert answer["freshness"] == {"pending_files": 0, "vector_coverage": 1.0,
                                           "last_indexed_change": answer["freshness"]["last_indexed_change"]}
            assert answer["freshness"]["last_indexed_change"]

        with (tmp_path / "bridge.err").open("w") as errlog:
            async with bridge_session(settings, tmp_path, errlog) as session:
                assert {tool.name for tool in (await session.list_tools()).tools} == TOOLS
                answer = await call(session, "search_code", query="moor a ship in the harbor")
                assert "src/harbor.py" in [hit["path"] for hit in answer["results"]]
                assert answer["freshness"]["vector_coverage"] == 1.0
                status = await call(session, "get_status", project="alpha")
                assert status["projects"][0]["files"] == len(ALPHA)
                assert status["daemon"]["running"] is True
        assert "Traceback" not in (tmp_path / "bridge.err").read_text()


class SlowQueries(HashEmbedder):
    """The deterministic embedder, whose query embedding takes `delay` seconds."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0
        self.queries = 0

    async def embed_query(self, text: str) -> Vectors:
        self.queries += 1
        await anyio.sleep(self.delay)
        return await super().embed_query(text)


async def test_a_stop_with_a_session_open_answers_the_call_in_flight_and_logs_no_error(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    embedder, answers = SlowQueries(), []
    with sdk_notification_stream() as established:
        async with running_daemon(settings, embedder) as daemon:
            await searchable(daemon, "alpha", len(ALPHA))
            async with uds_session(settings.socket_path) as session:
                await session.list_tools()  # else the SDK asks for them again after the answer

                async def stream_open() -> bool:
                    return established.is_set()

                await until(stream_open, 30, "the session's GET stream")
                embedder.delay = 1.0
                async with anyio.create_task_group() as tasks:
                    async def ask() -> None:
                        answers.append(await call(session, "search_code", query="flash the lighthouse lamp",
                                                  project="alpha", mode="semantic"))

                    tasks.start_soon(ask)

                    async def in_flight() -> bool:
                        return embedder.queries > 0

                    await until(in_flight, 30, "the call to reach the daemon")
                    daemon.request_stop()

                async def socket_removed() -> bool:  # the servers stopped, the session still open
                    return not settings.socket_path.exists()

                await until(socket_removed, 30, "the daemon to stop serving")
    assert answers[0]["results"][0]["path"] == "src/lighthouse.py"
    # before, uvicorn waited 2 s for the never-ending GET stream, then cancelled it: two errors
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_the_in_memory_client_reaches_the_daemon_through_the_server_lifespan(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        await searchable(daemon, "alpha", len(ALPHA))
        async with FastMCPClient(build_server(DaemonApi(daemon.runtime, daemon))) as client:
            assert {tool.name for tool in await client.list_tools()} == TOOLS
            result = await client.call_tool("search_code", {"query": "Harbor", "mode": "lexical"})
            assert result.structured_content is not None
            assert [hit["path"] for hit in result.structured_content["results"]][:1] == ["src/harbor.py"]
            failed = await client.call_tool("get_status", {"project": "nope"}, raise_on_error=False)
            assert failed.is_error


async def test_caller_mistakes_are_tool_errors_with_one_clear_message_and_no_traceback(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        async with uds_session(settings.socket_path) as session:
            text = await call_error(session, "search_code", query="beacon", project="nope")
            assert "unknown project 'nope'" in text
            assert "alpha" in text  # it names the known ones
            text = await call_error(session, "search_code", query="beacon", project="Bad_ID!")
            assert "invalid project id 'Bad_ID!'" in text
            for limit in (0, 100000):
                text = await call_error(session, "search_code", query="beacon", limit=limit)
                assert "limit" in text
            text = await call_error(session, "search_code", query="beacon", project="/nonexistent/path")
            assert "outside every registered project" in text
            text = await call_error(session, "search_code", query="   ")
            assert "the query is empty" in text
            text = await call_error(session, "index_repository", path="/nonexistent/repo")
            assert "not a directory: /nonexistent/repo" in text
            text = await call_error(session, "recent_changes", limit=0)
            assert "limit" in text
            text = await call_error(session, "get_status", project="Bad_ID!")
            assert "invalid project id" in text
            # the session is still usable after the errors
            assert (await call(session, "search_code", query="lighthouse_beacon"))["results"]


async def test_index_repository_returns_at_once_and_the_project_then_becomes_searchable(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}], mcp={"allowed_roots": [str(tmp_path)]})
    fresh = write_files(tmp_path / "Fresh Repo", {
        f"mod{i:03d}.py": f"def quokka_helper_{i}(x):\n    return x + {i}\n" for i in range(200)})
    async with running_daemon(settings, hash_embedder) as daemon, \
            uds_session(settings.socket_path) as session:
        started = time.monotonic()
        status = await call(session, "index_repository", path=str(fresh))
        took = time.monotonic() - started
        assert took < 5, f"index_repository took {took:.1f}s"
        assert status["project"] == "fresh-repo"
        assert status["path"] == str(fresh)
        assert status["files_to_index"] == 200
        assert status["estimated_seconds"] > 0
        assert status["waited_for"] == "none"
        assert load_settings(settings.config_path).config.project("fresh-repo").path == fresh

        async def found() -> bool:
            answer = await call(session, "search_code", query="quokka_helper_123", project="fresh-repo")
            return [hit["path"] for hit in answer["results"]][:1] == ["mod123.py"]

        await until(found, 30, "the new project to become searchable")
        await searchable(daemon, "fresh-repo", 200)
        again = await call(session, "index_repository", path=str(fresh), project="fresh-repo")
        assert again["status"]["files"] == 200  # registering twice is harmless
        assert again["state"] == "complete"


async def test_recent_changes_lists_a_change_after_a_file_is_edited(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder) as daemon, \
            uds_session(settings.socket_path) as session:
        await searchable(daemon, "alpha", len(ALPHA))
        (alpha / "src" / "harbor.py").write_text("class Harbor:\n    def depart(self, ship):\n"
                                                 "        return None\n")

        async def listed() -> bool:
            changes = (await call(session, "recent_changes", project="alpha", limit=5))["changes"]
            return bool(changes) and changes[0]["path"] == "src/harbor.py" and \
                changes[0]["kind"] == "modified" and changes[0]["processed_at"] is not None

        await until(listed, 20, "the edit in recent_changes")
        everything = (await call(session, "recent_changes"))["changes"]
        assert {"project": "alpha", "path": "src/harbor.py", "kind": "modified"}.items() <= \
            everything[0].items()


async def test_the_bridge_searches_only_the_project_containing_its_working_directory(
        make_settings: Callable[..., Settings], alpha: Path, beta: Path, tmp_path: Path,
        runtime_dir: Path, hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}, {"id": "beta", "path": str(beta)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        await searchable(daemon, "beta", len(BETA))
        async with uds_session(settings.socket_path) as session:  # no working directory: all projects
            everywhere = await call(session, "search_code", query="lighthouse", mode="lexical")
            assert projects_of(everywhere) == {"alpha", "beta"}
            by_path = await call(session, "search_code", query="lighthouse", project=str(beta / "lib"))
            assert projects_of(by_path) == {"beta"}
        with (tmp_path / "bridge.err").open("w") as errlog:
            async with bridge_session(settings, alpha / "src", errlog) as session:
                answer = await call(session, "search_code", query="lighthouse", mode="lexical")
                assert answer["results"]
                assert projects_of(answer) == {"alpha"}
                explicit = await call(session, "search_code", query="lighthouse", project="beta")
                assert projects_of(explicit) == {"beta"}


async def test_ten_clients_search_concurrently_while_the_daemon_indexes_a_backlog(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path) -> None:
    big = write_files(tmp_path / "big", {
        f"pkg/m{i:04d}.py": f"def backlog_entry_{i}(value):\n    return value - {i}\n" for i in range(600)})
    settings = make_settings([{"id": "alpha", "path": str(alpha)}, {"id": "big", "path": str(big)}])
    async with running_daemon(settings, SlowEmbedder(delay=0.5)) as daemon:
        assert daemon.runtime is not None
        indexer = daemon.runtime.indexer

        async def searchable_by_words() -> bool:  # every file chunked, vectors still behind
            return "big" in indexer.projects and (await indexer.projects["big"].store.counts()).files == 600

        await until(searchable_by_words, 60, "the backlog to be chunked")
        answers: list[dict[str, Any]] = []

        async def client(number: int) -> None:
            async with uds_session(settings.socket_path) as session:
                for query in ("lighthouse_beacon", f"backlog_entry_{number}", "value minus a number"):
                    answers.append(await call(session, "search_code", query=query))

        async with anyio.create_task_group() as clients:
            for number in range(10):
                clients.start_soon(client, number)
        chunks, embedded = await indexer.projects["big"].store.vector_counts()
        assert embedded < chunks, "the backlog finished before the searches: nothing was concurrent"
        assert len(answers) == 30
        assert all(answer["results"] for answer in answers)
        assert any(answer["freshness"]["vector_coverage"] < 1.0 for answer in answers)


# ---- the socket ------------------------------------------------------------------------


async def test_the_socket_is_private_and_a_stale_socket_from_a_crash_is_replaced(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    path = settings.socket_path
    path.parent.mkdir(parents=True)
    crashed = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    crashed.bind(str(path))  # bound, never listening, then gone: what a crash leaves
    crashed.close()
    assert path.exists()
    assert not DaemonClient(path).running()
    async with running_daemon(settings, hash_embedder):
        assert stat.S_ISSOCK(path.stat().st_mode)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert await anyio.to_thread.run_sync(DaemonClient(path).running)
        async with uds_session(path) as session:
            assert (await call(session, "get_status"))["daemon"]["socket"] == str(path)
    assert not path.exists()


def test_the_bridge_without_a_daemon_exits_non_zero_with_advice_and_an_empty_stdout(
        tmp_path: Path, runtime_dir: Path) -> None:
    env = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ["HOME"],
           "XDG_RUNTIME_DIR": str(runtime_dir), "CODEQUARRY_CONFIG": str(tmp_path / "config.toml")}
    result = subprocess.run([CODEQUARRY, "mcp"], env=env, input="", capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode != 0
    assert result.stdout == ""
    assert "no codequarry daemon answers on" in result.stderr
    assert "start one with `codequarry daemon`" in result.stderr
    assert "Traceback" not in result.stderr


async def test_the_bridge_with_autostart_starts_a_daemon_and_then_serves_the_tools(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}], mcp={"autostart": True})
    client = DaemonClient(settings.socket_path)
    assert not client.running()
    with (tmp_path / "bridge.err").open("w") as errlog:
        try:
            async with bridge_session(settings, alpha, errlog) as session:
                listed = await session.list_tools()
                assert {tool.name for tool in listed.tools} == TOOLS
        finally:
            pid = client.get("/api/health")["pid"] if client.running() else None
            if pid:
                os.kill(pid, 15)
                await until(lambda: _gone(pid), 30, "the autostarted daemon to stop")
    assert "started a daemon" in (tmp_path / "bridge.err").read_text()
    assert (settings.data_dir / "daemon.log").exists()


async def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# ---- the optional TCP listener ---------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "codequarry-tests", "version": "1"}}}


async def test_the_tcp_listener_wants_the_token_a_loopback_host_and_a_loopback_origin(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    port = free_port()
    settings = make_settings([{"id": "alpha", "path": str(alpha)}], mcp={"http": f"127.0.0.1:{port}"})
    async with running_daemon(settings, hash_embedder), \
            httpx2.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
        token = settings.token_path.read_text().strip()
        assert len(token) >= 32
        assert stat.S_IMODE(settings.token_path.stat().st_mode) == 0o600
        mcp_headers = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}

        async def listening() -> bool:
            try:
                await http.get("/mcp")
            except httpx2.TransportError:
                return False
            return True

        await until(listening, 20, "the TCP listener")

        async def post(headers: dict[str, str]) -> httpx2.Response:
            return await http.post("/mcp", content=json.dumps(INITIALIZE), headers=mcp_headers | headers)

        bearer = {"Authorization": f"Bearer {token}"}
        assert (await post({})).status_code == 401
        assert (await post({"Authorization": "Bearer wrong"})).status_code == 401
        ok = await post(bearer)
        assert ok.status_code == 200, ok.text
        assert "codequarry" in ok.text
        assert (await post(bearer | {"Host": "evil.example"})).status_code == 421
        assert (await post(bearer | {"Origin": "http://evil.example"})).status_code == 403
        assert (await post(bearer | {"Origin": f"http://localhost:{port}"})).status_code == 200
        assert (await http.get("/api/health")).status_code == 401  # the JSON routes too
        assert (await http.get("/api/health", headers=bearer)).status_code == 200


# ---- the MCP Inspector CLI -------------------------------------------------------------


async def test_the_mcp_inspector_cli_lists_the_tools_and_calls_search_code_through_the_bridge(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    npx = shutil.which("npx")
    if npx is None:
        pytest.skip("npx (Node.js) is not installed, so the MCP Inspector CLI cannot run")
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    # the real user's npm cache (HOME is a temp dir here), so the inspector is downloaded once
    npm_cache = Path(pwd.getpwuid(os.getuid()).pw_dir) / ".npm"
    env = dict(os.environ) | bridge_env(settings) | {"npm_config_cache": str(npm_cache)}
    inspector = [npx, "-y", "@modelcontextprotocol/inspector", "--cli", CODEQUARRY, "mcp"]
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        with anyio.fail_after(300):  # the first run downloads the inspector
            listed = await anyio.run_process([*inspector, "--method", "tools/list"], env=env,
                                             cwd=tmp_path, check=False)
        assert listed.returncode == 0, listed.stderr.decode()
        assert {tool["name"] for tool in json.loads(listed.stdout)["tools"]} == TOOLS
        with anyio.fail_after(120):
            called = await anyio.run_process(
                [*inspector, "--method", "tools/call", "--tool-name", "search_code",
                 "--tool-arg", "query=lighthouse_beacon"], env=env, cwd=tmp_path, check=False)
        assert called.returncode == 0, called.stderr.decode()
        answer = json.loads(called.stdout)
        assert not answer.get("isError")
        results = answer["structuredContent"]["results"]
        assert results[0]["path"] == "src/lighthouse.py"
