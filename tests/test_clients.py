"""MCP clients started the way clients really start servers (issue 11): the stdio bridge as
a raw JSON-lines peer and through the official SDK, the protocol surface an agent sees,
index_repository as an agent needs it, and what MCP may register (issue 10, behaviour 9)."""

from __future__ import annotations

import json
import logging
import os
import queue
import subprocess
import sys
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types
import pytest
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from structlog.testing import capture_logs

from codequarry.config import Settings, load_settings
from codequarry.mcp_listing import compact_schema

from .conftest import SlowEmbedder, running_daemon, until, write_files
from .fakes import HashEmbedder
from .test_mcp import ALPHA, call, call_error, searchable, uds_session

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
MINIMAL_KEYS = ("HOME", "PATH", "SHELL", "TERM", "USER", "LOGNAME")


def minimal_env(**extra: str) -> dict[str, str]:
    """What Claude Desktop or the MCP SDK pass to a server: HOME, PATH, SHELL, TERM, USER, LOGNAME."""
    env = {"HOME": os.environ["HOME"], "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
           "SHELL": "/bin/sh", "TERM": "dumb", "USER": os.environ.get("USER", "root"),
           "LOGNAME": os.environ.get("LOGNAME", "root")}
    return env | extra


class RawBridge:
    """`codequarry mcp` as a client sees it: JSON lines in, JSON lines out."""

    def __init__(self, env: dict[str, str], cwd: Path, errlog: Path) -> None:
        self._err = errlog.open("w")
        self.process = subprocess.Popen([CODEQUARRY, "mcp"], env=env, cwd=cwd, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, stderr=self._err)
        self.lines: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.seen: list[dict[str, Any]] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(json.loads(line))
        self.lines.put(None)

    def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        self.process.stdin.flush()

    async def expect(self, predicate: Callable[[dict[str, Any]], bool], within: float = 60) -> dict[str, Any]:
        """The next message matching `predicate` (all messages are kept in `seen`)."""
        with anyio.fail_after(within):
            while True:
                message = await anyio.to_thread.run_sync(self.lines.get)
                if message is None:
                    raise AssertionError(f"the bridge closed stdout; seen: {self.seen[-3:]}")
                self.seen.append(message)
                if predicate(message):
                    return message

    async def request(self, request_id: int, method: str, params: dict[str, Any] | None = None,
                      within: float = 60) -> dict[str, Any]:
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params or {}})
        return await self.expect(lambda m: m.get("id") == request_id and "method" not in m, within)

    async def initialize(self) -> dict[str, Any]:
        answer = await self.request(1, "initialize", {
            "protocolVersion": "2025-06-18", "capabilities": {},
            "clientInfo": {"name": "raw-test", "version": "1"}})
        self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return answer

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        self._err.close()


@contextmanager
def raw_bridge(env: dict[str, str], cwd: Path, errlog: Path) -> Iterator[RawBridge]:
    bridge = RawBridge(env, cwd, errlog)
    try:
        yield bridge
    finally:
        bridge.close()


def bridge_env(settings: Settings, **extra: str) -> dict[str, str]:
    return minimal_env(CODEQUARRY_CONFIG=str(settings.config_path), **extra)


def tool_result(answer: dict[str, Any]) -> dict[str, Any]:
    assert "result" in answer, answer
    result = answer["result"]
    assert not result.get("isError"), result
    return dict(result["structuredContent"])


# ---- the protocol surface -----------------------------------------------------------------


async def test_server_info_output_schemas_annotations_capabilities_and_one_line_argument_errors(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder, caplog: pytest.LogCaptureFixture) -> None:
    """...and a client's mistakes are logged as warnings with their reason, never as errors."""
    from codequarry import __version__

    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        async with uds_session(settings.socket_path) as session:
            info = await session.initialize()
            assert (info.server_info.name, info.server_info.version) == ("codequarry", __version__)
            assert info.capabilities.prompts is None  # none served, none advertised
            assert info.capabilities.resources is not None
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            for tool in tools.values():
                assert tool.output_schema is not None, tool.name
                assert tool.output_schema.get("properties"), tool.name
                assert tool.annotations is not None, tool.name
                assert tool.annotations.open_world_hint is False, tool.name
                assert tool.annotations.idempotent_hint is True, tool.name
            for name in ("search_code", "get_status", "recent_changes", "list_projects"):
                assert tools[name].annotations.read_only_hint is True, name  # type: ignore[union-attr]
            assert tools["index_repository"].annotations.read_only_hint is False  # type: ignore[union-attr]
            search_schema = tools["search_code"].output_schema
            assert search_schema is not None
            assert {"results", "freshness"} <= set(search_schema["required"])
            assert set(search_schema["properties"]["results"]["items"]["properties"]) >= {
                "path", "start_line", "end_line", "symbol", "kind", "snippet"}
            assert set(tools["index_repository"].output_schema["properties"]) >= {  # type: ignore[index]
                "project", "files_to_index", "estimated_seconds", "state"}
            # every session pays for the list: it stays compact (issue 12: was 16,661 characters)
            listed = (await session.list_tools()).model_dump(by_alias=True, exclude_none=True, mode="json")
            assert len(json.dumps(listed["tools"], separators=(",", ":"))) <= 9000
            # the SDK checks each structured answer against the listed output schema
            for tool, arguments in (
                    ("search_code", {"query": "moor a ship", "detail": "full"}),
                    ("get_status", {}), ("recent_changes", {}), ("list_projects", {}),
                    ("find_symbol", {"name": "Harbor.moor"}),
                    ("read_code", {"path": "src/harbor.py", "project": "alpha"}),
                    ("find_references", {"name": "ship"})):
                assert await call(session, tool, **arguments), tool

            with capture_logs() as logs:
                assert await call_error(session, "search_code", query="x", limit=0) == \
                    "limit must be between 1 and 50, got 0"
                text = await call_error(session, "search_code", query="x", mode="fuzzy")
                assert text.startswith("mode must be one of")
                assert "\n" not in text
                text = await call_error(session, "recent_changes", limit=500)
                assert text == "limit must be between 1 and 200, got 500"
                assert "pydantic" not in text
                assert "http" not in text
                unknown = await call_error(session, "search_code", query="x", project="nope")
                outside = await call_error(session, "read_code", path="/etc/passwd")
            refused = [(e["tool"], e["reason"], e["log_level"]) for e in logs if e["event"] == "tool_refused"]
            assert refused[0] == ("search_code", "limit must be between 1 and 50, got 0", "warning")
            assert refused[-2:] == [("search_code", unknown, "warning"), ("read_code", outside, "warning")]
            assert len(refused) == 5
            assert not [e for e in logs if e["log_level"] in ("error", "critical")]
            assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text

            resources = {str(r.uri) for r in (await session.list_resources()).resources}
            assert "codequarry://projects" in resources
            read = await session.read_resource("codequarry://projects")
            listed = json.loads(read.contents[0].text)  # type: ignore[union-attr]
            assert [p["project"] for p in listed["projects"]] == ["alpha"]
            status = await session.read_resource("codequarry://projects/alpha/status")
            assert json.loads(status.contents[0].text)["projects"][0]["files"] == len(ALPHA)  # type: ignore[union-attr]

            projects = await call(session, "list_projects")
            assert projects["projects"] == [{
                "project": "alpha", "path": str(alpha), "state": "complete", "files": len(ALPHA),
                "chunks": projects["projects"][0]["chunks"], "vector_coverage": 1.0, "pending_files": 0,
                "last_indexed_change": projects["projects"][0]["last_indexed_change"],
                "index_lag_seconds": 0.0, "errors": []}]


def test_compact_schemas_keep_their_meaning_in_fewer_characters() -> None:
    schema = {"title": "Answer", "type": "object", "required": ["title"], "properties": {
        "title": {"title": "Title", "type": "string"},  # a field named "title" stays
        "limit": {"anyOf": [{"type": "integer", "minimum": 1}, {"type": "null"}], "default": None,
                  "description": "Most rows."},
        "status": {"title": "Status", "type": "object", "properties": {
            "files": {"title": "Files", "type": "integer"}}}}}
    assert compact_schema(schema) == {"type": "object", "required": ["title"], "properties": {
        "title": {"type": "string"},
        "limit": {"type": ["integer", "null"], "minimum": 1, "description": "Most rows."},
        "status": {"type": "object", "properties": {"files": {"type": "integer"}}}}}
    assert compact_schema(schema, depth=0)["properties"]["status"] == {"type": "object"}
    assert schema["properties"]["title"] == {"title": "Title", "type": "string"}  # not modified


@pytest.fixture
def alpha(tmp_path: Path) -> Path:
    return write_files(tmp_path / "alpha", ALPHA)


# ---- index_repository -------------------------------------------------------------------


async def test_index_repository_takes_a_path_relative_to_the_clients_directory_and_waits_with_progress(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings(mcp={"allowed_roots": [str(tmp_path)]})
    work = tmp_path / "work"
    repo = write_files(work / "gizmo", {f"g{i}.py": f"def gizmo_part_{i}():\n    return {i}\n"
                                        for i in range(30)})
    async with running_daemon(settings, hash_embedder):
        with raw_bridge(bridge_env(settings), work, tmp_path / "bridge.err") as bridge:
            await bridge.initialize()
            answer = await bridge.request(2, "tools/call", {
                "name": "index_repository", "arguments": {"path": "gizmo", "wait": "complete"},
                "_meta": {"progressToken": "tok-1"}})
            result = tool_result(answer)
            assert result["project"] == "gizmo"
            assert result["path"] == str(repo)  # the client's directory, not the daemon's
            assert result["files_to_index"] == 30
            assert result["waited_for"] == "complete"
            assert result["state"] == "complete"
            assert result["status"]["files"] == 30
            assert result["status"]["vector_coverage"] == 1.0
            progress = [m for m in bridge.seen if m.get("method") == "notifications/progress"]
            assert progress, "no progress notifications while waiting"
            assert all(m["params"]["progressToken"] == "tok-1" for m in progress)
            values = [m["params"]["progress"] for m in progress]
            assert values == sorted(values)
            assert load_settings(settings.config_path).config.project("gizmo").path == repo

            listed = tool_result(await bridge.request(3, "tools/call",
                                                      {"name": "list_projects", "arguments": {}}))
            assert [(p["project"], p["state"]) for p in listed["projects"]] == [("gizmo", "complete")]


async def test_client_roots_are_the_base_of_relative_paths_and_the_default_projects_of_search(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}], mcp={"allowed_roots": [str(tmp_path)]})
    gamma = write_files(tmp_path / "gamma", {"lamp.py": "def lighthouse_lamp():\n    return 'lighthouse'\n"})
    offered = [mcp_types.Root(uri=gamma.as_uri(), name="gamma")]  # type: ignore[arg-type]

    async def list_roots(context: Any) -> mcp_types.ListRootsResult:
        return mcp_types.ListRootsResult(roots=offered)

    params = StdioServerParameters(command=CODEQUARRY, args=["mcp"], env=bridge_env(settings), cwd=alpha)
    async with running_daemon(settings, hash_embedder) as daemon:
        await searchable(daemon, "alpha", len(ALPHA))
        with (tmp_path / "bridge.err").open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write, list_roots_callback=list_roots) as session:
                await session.initialize()
                indexed = await call(session, "index_repository", path=".", wait="lexical")
                assert (indexed["project"], indexed["path"]) == ("gamma", str(gamma))  # the root, not the cwd
                assert indexed["state"] in ("embedding", "complete")
                answer = await call(session, "search_code", query="lighthouse", mode="lexical")
                assert answer["results"]
                # one project searched: the answer states it once, not per result
                assert {hit.get("project", answer.get("project")) for hit in answer["results"]} == {
                    "gamma"}  # alpha matches too
                offered.clear()  # no roots any more: the working directory decides again
                answer = await call(session, "search_code", query="lighthouse", mode="lexical")
                assert {hit.get("project", answer.get("project")) for hit in answer["results"]} == {"alpha"}


async def test_mcp_refuses_system_directories_dot_directories_home_and_paths_outside_allowed_roots(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    home = Path(os.environ["HOME"])
    settings = make_settings()
    inside = write_files(home / "src" / "inside", {"a.py": "x = 1\n"})
    (home / ".ssh").mkdir()
    secret = write_files(home / ".aws" / "creds", {"config": "key = 1\n"})
    outside = write_files(tmp_path / "outside", {"b.py": "y = 2\n"})
    sneaky = home / "src" / "link-to-outside"
    sneaky.symlink_to(outside)
    async with running_daemon(settings, hash_embedder), uds_session(settings.socket_path) as session:
        for path, words in [("/etc", "system directory"), ("/", "system directory"),
                            (str(home / ".ssh"), ".ssh is a dot-directory"),
                            (str(secret), ".aws is a dot-directory"),
                            (str(home), "whole home directory"),
                            (str(outside), "outside the allowed roots"),
                            (str(sneaky), "outside the allowed roots")]:
            text = await call_error(session, "index_repository", path=path)
            assert words in text, (path, text)
            assert "\n" not in text
        text = await call_error(session, "index_repository", path="relative/dir")
        assert "needs the client's working directory or roots" in text  # never the daemon's cwd
        assert (await call(session, "index_repository", path=str(inside)))["project"] == "inside"
    registered = {p.id for p in load_settings(settings.config_path).config.projects}
    assert registered == {"inside"}


async def test_roots_offered_by_a_client_never_widen_the_allowed_roots(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings()
    outside = write_files(tmp_path / "outside", {"b.py": "y = 2\n"})

    async def list_roots(context: Any) -> mcp_types.ListRootsResult:
        return mcp_types.ListRootsResult(roots=[mcp_types.Root(uri=outside.as_uri())])  # type: ignore[arg-type]

    params = StdioServerParameters(command=CODEQUARRY, args=["mcp"], env=bridge_env(settings), cwd=tmp_path)
    async with running_daemon(settings, hash_embedder):
        with (tmp_path / "bridge.err").open("w") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), \
                    ClientSession(read, write, list_roots_callback=list_roots) as session:
                await session.initialize()
                text = await call_error(session, "index_repository", path=".")
                assert "outside the allowed roots" in text
    assert load_settings(settings.config_path).config.projects == []


async def test_a_cancelled_request_gets_no_response_and_the_session_goes_on(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path) -> None:
    settings = make_settings(mcp={"allowed_roots": [str(tmp_path)]})
    big = write_files(tmp_path / "big", {f"m{i:03d}.py": f"def slow_{i}(v):\n    return v - {i}\n"
                                         for i in range(300)})
    async with running_daemon(settings, SlowEmbedder(delay=0.3)):
        with raw_bridge(bridge_env(settings), tmp_path, tmp_path / "bridge.err") as bridge:
            await bridge.initialize()
            bridge.send({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {
                "name": "index_repository", "arguments": {"path": str(big), "wait": "complete"},
                "_meta": {"progressToken": 7}}})
            await bridge.expect(lambda m: m.get("method") == "notifications/progress")  # it is waiting
            bridge.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                         "params": {"requestId": 7, "reason": "the user pressed Esc"}})
            assert "result" in await bridge.request(8, "ping")
            status = tool_result(await bridge.request(9, "tools/call",
                                                      {"name": "get_status", "arguments": {}}))
            assert status["projects"][0]["project"] == "big"
            assert "result" in await bridge.request(10, "ping")
            assert not [m for m in bridge.seen if m.get("id") == 7 and "method" not in m]


# ---- the bridge follows its client and its daemon ------------------------------------------


async def test_the_bridge_exits_when_its_client_closes_stdin(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    async with running_daemon(settings, hash_embedder):
        with raw_bridge(bridge_env(settings), tmp_path, tmp_path / "bridge.err") as bridge:
            await bridge.initialize()
            assert "result" in await bridge.request(2, "tools/list")
            assert bridge.process.stdin is not None
            bridge.process.stdin.close()
            code = await anyio.to_thread.run_sync(lambda: bridge.process.wait(30))
            assert code == 0


async def test_a_stopped_daemon_gives_an_error_at_once_and_a_restart_is_waited_for(
        make_settings: Callable[..., Settings], alpha: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    """A restart, with the real lock and record: while the old daemon holds the data dir's
    lock and is recorded but does not answer (stopping), then exits, then the new one holds
    the lock and does not serve yet (starting), a bridge started then and a request of a
    connected bridge wait, then are answered by the new daemon."""
    from codequarry import paths
    from codequarry.daemon_lock import IndexLock

    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    initialize = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "late", "version": "1"}}}
    with ExitStack() as stack:
        async with running_daemon(settings, hash_embedder) as daemon:
            bridge = stack.enter_context(raw_bridge(bridge_env(settings), tmp_path, tmp_path / "bridge.err"))
            await bridge.initialize()
            await searchable(daemon, "alpha", len(ALPHA))
            assert tool_result(await bridge.request(2, "tools/call", {"name": "get_status", "arguments": {}}))
        # the daemon is gone (no process holds the lock): an error result, not silence
        gone = await bridge.request(3, "tools/call", {"name": "get_status", "arguments": {}}, within=30)
        assert gone["error"]["code"] == -32000
        assert "did not answer" in gone["error"]["message"]
        assert bridge.process.poll() is None

        def said(phrase: str, times: int = 2) -> Callable[[], Awaitable[bool]]:
            async def check() -> bool:
                logs = [tmp_path / "late.err", tmp_path / "bridge.err"]
                return sum(p.read_text().count(phrase) for p in logs if p.exists()) == times
            return check

        # the old daemon stopping: it holds the lock, its record stays until its store stopped
        old = IndexLock(settings.lock_path, "daemon", wait=False).__enter__()
        paths.write_daemon_record(settings.data_dir, settings.listen_socket_path, os.getpid(), "old", 0.0)
        late = stack.enter_context(raw_bridge(bridge_env(settings), tmp_path, tmp_path / "late.err"))
        late.send(initialize)
        bridge.send({"jsonrpc": "2.0", "id": 4, "method": "tools/call",
                     "params": {"name": "get_status", "arguments": {}}})
        await until(said("is stopping; waiting"), what="both bridges to wait for the stopping daemon")
        assert late.process.poll() is None, (tmp_path / "late.err").read_text()
        # it exits; within the grace the next one takes the lock, then serves
        paths.remove_daemon_record(settings.data_dir, os.getpid())
        old.__exit__(None, None, None)
        await until(said("daemon exited; waiting"), what="both bridges to see it exit")
        with IndexLock(settings.lock_path, "daemon", wait=False):
            await until(said("is starting; waiting"), what="both to wait for the next one")
            async with running_daemon(settings, hash_embedder):
                assert "result" in await late.expect(lambda m: m.get("id") == 1)
                again = await bridge.expect(lambda m: m.get("id") == 4)
                assert tool_result(again)["daemon"]["running"] is True
                assert "result" in await bridge.request(5, "tools/list")
    assert "reconnected to the daemon" in (tmp_path / "bridge.err").read_text()


def test_a_hung_daemon_gets_the_error_after_the_bound_naming_its_pid_and_log(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A daemon process that holds the lock and never answers is waited for only up to the
    bound; then the client's initialize gets an error naming its pid and where its log is."""
    import io

    from codequarry import bridge
    from codequarry.daemon_lock import IndexLock
    from codequarry.errors import DaemonNotRunning

    settings = make_settings([])
    monkeypatch.setattr(bridge, "STARTING_WAIT_SECONDS", 0.3)  # the real bound is a minute
    target = bridge.BridgeTarget(settings.config_path, settings.data_dir, None, autostart=True)
    stdout = io.BytesIO()
    request = io.BytesIO(b'{"jsonrpc":"2.0","id":9,"method":"initialize"}\n')
    with IndexLock(settings.lock_path, "daemon", wait=False), pytest.raises(DaemonNotRunning) as refused:
        bridge.run_bridge(target, request, stdout)
    message = str(refused.value)
    answer = json.loads(stdout.getvalue())
    assert answer["id"] == 9
    assert answer["error"]["message"] == message
    assert f"the codequarry daemon (pid {os.getpid()})" in message
    assert "did not answer" in message
    assert "log" in message


# ---- the CLI and the log ---------------------------------------------------------------------


def test_the_cli_says_whether_the_daemon_it_waits_for_is_stopping_or_starting(
        make_settings: Callable[..., Settings], runtime_dir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """The real lock and record: recorded and silent is a daemon stopping, unrecorded one
    starting; a hung one gets the error after the bound."""
    from codequarry import cli, paths
    from codequarry.daemon_lock import IndexLock
    from codequarry.errors import DaemonNotRunning

    settings = make_settings([])
    monkeypatch.setattr(cli, "DAEMON_WAIT_SECONDS", 0.1)  # the real bound is two minutes
    with IndexLock(settings.lock_path, "daemon", wait=False):
        paths.write_daemon_record(settings.data_dir, settings.socket_path, os.getpid(), "t", 0.0)
        with pytest.raises(DaemonNotRunning, match="did not answer"), cli.store_access(settings, "status"):
            pass
        assert "codequarry: daemon stopping, waiting…" in capsys.readouterr().err
        paths.remove_daemon_record(settings.data_dir, os.getpid())
        with pytest.raises(DaemonNotRunning, match="did not answer"), cli.store_access(settings, "status"):
            pass
        assert "codequarry: daemon starting, waiting…" in capsys.readouterr().err


def test_plain_progress_lines_name_files_chunks_vectors_and_an_eta(
        capsys: pytest.CaptureFixture[str]) -> None:
    from codequarry.console import IndexProgress, progress_line

    assert progress_line("big", 50, 100, 10, 400, 20.0) == \
        "big: files 50/100, chunks 400, vectors 10/400, 20s elapsed, ETA 13m00s"
    assert progress_line("big", 100, 100, 400, 400, 75.0).endswith("1m15s elapsed, done")
    with IndexProgress("big", enabled=False, plain_every=0.0) as progress:
        progress.update(1, 10, 0, 5)
        progress.update(2, 10, 1, 5)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2
    assert lines[1].startswith("big: files 2/10, chunks 5, vectors 1/5")


async def test_a_new_project_is_not_logged_as_a_model_change(
        make_settings: Callable[..., Settings], alpha: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(alpha)}])
    with capture_logs() as logs:
        async with running_daemon(settings, hash_embedder) as daemon:
            await searchable(daemon, "alpha", len(ALPHA))
    events = [entry["event"] for entry in logs]
    assert "model_set" in events
    assert "model_changed" not in events


def test_client_config_names_the_absolute_executable_for_every_client(tmp_path: Path) -> None:
    env = minimal_env(CODEQUARRY_HOME=str(tmp_path / "data"))
    printed = subprocess.run([CODEQUARRY, "client-config"], env=env, capture_output=True, text=True,
                             check=True, timeout=60).stdout
    for words in ("Claude Desktop", "Claude Code", "Cursor", "Codex", "MCP Inspector"):
        assert words in printed
    assert f"claude mcp add --scope user -e CODEQUARRY_HOME={tmp_path / 'data'} codequarry -- " \
        f"{CODEQUARRY} mcp" in printed
    desktop = printed.split("\n\n")[0]
    server = json.loads(desktop.split("\n", 1)[1])["mcpServers"]["codequarry"]
    assert server == {"command": CODEQUARRY, "args": ["mcp"],
                      "env": {"CODEQUARRY_HOME": str(tmp_path / "data")}}
    assert f'command = "{CODEQUARRY}"' in printed


def test_install_link_puts_codequarry_in_a_bin_directory_and_says_when_it_is_not_on_path(
        tmp_path: Path) -> None:
    bin_dir = tmp_path / "home" / ".local" / "bin"
    env = minimal_env(PATH="/usr/bin:/bin")
    done = subprocess.run([CODEQUARRY, "install-link"], env=env, capture_output=True, text=True,
                          check=True, timeout=60)
    link = bin_dir / "codequarry"
    assert link.is_symlink()
    assert link.resolve() == Path(CODEQUARRY).resolve()
    assert f"linked {link}" in done.stderr
    assert "is not on your PATH" in done.stderr
    version = subprocess.run(["codequarry", "--version"], env=env | {"PATH": f"{bin_dir}:/usr/bin:/bin"},
                             capture_output=True, text=True, check=True, timeout=60)
    assert version.stdout.startswith("codequarry ")


def test_without_a_daemon_the_bridge_answers_initialize_with_the_reason_and_exits(tmp_path: Path) -> None:
    """A client that spawns `codequarry mcp` while no daemon runs gets a JSON-RPC error to
    its `initialize` naming what to do, not a silently closed connection."""
    home = tmp_path / "home"  # made by the autouse fixture: empty, no daemon's data dir
    env = {"HOME": str(home), "PATH": os.environ["PATH"], "USER": "u", "LOGNAME": "u",
           "SHELL": "/bin/sh", "TERM": "dumb"}
    initialize = {"jsonrpc": "2.0", "id": 7, "method": "initialize",
                  "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                             "clientInfo": {"name": "test", "version": "1"}}}
    done = subprocess.run([str(Path(sys.executable).with_name("codequarry")), "mcp"], env=env,
                          input=json.dumps(initialize) + "\n", capture_output=True, text=True,
                          timeout=60, check=False)
    answer = json.loads(done.stdout.splitlines()[0])
    assert answer["id"] == 7
    assert "no codequarry daemon answers" in answer["error"]["message"]
    assert "codequarry daemon" in answer["error"]["message"]
    assert done.returncode == 1
    assert "no codequarry daemon answers" in done.stderr
