"""Discovery that does not depend on the environment (issue 11, behaviour 1): real
`codequarry daemon` processes started in several environments, found by real bridge and
CLI processes started with the minimal environment MCP clients pass, or the full one; and
Claude Code's own health check (`claude mcp list`) from npm."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomlkit

from codequarry import paths

from .ollama_standin import OllamaStandIn

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "matrix", "version": "1"}}})
START_SECONDS = 180.0


def minimal_env(home: Path) -> dict[str, str]:
    """What Claude Desktop or the MCP SDK pass to a server: HOME, PATH, SHELL, TERM, USER, LOGNAME."""
    return {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "SHELL": "/bin/sh",
            "TERM": "dumb", "USER": os.environ.get("USER", "root"),
            "LOGNAME": os.environ.get("LOGNAME", "root")}


@dataclass
class Setup:
    home: Path
    data_dir: Path
    daemon_env: dict[str, str]
    login_env: dict[str, str]  # a terminal in the user's login session
    same_setting: dict[str, str]  # what a client must share with the daemon (CODEQUARRY_HOME)


@pytest.fixture(scope="module")
def ollama() -> Iterator[OllamaStandIn]:
    """An embedder the daemon processes start at once (the local model is not the subject)."""
    with OllamaStandIn(dims=64) as standin:
        yield standin


def make_setup(tmp_path: Path, database_url: str, runtime: Path | None, data: str,
               embedder_url: str) -> Setup:
    """A fresh HOME whose default config names the test database; the data dir comes from
    HOME ("default"), from `data_dir` in the default config ("config") or from the daemon's
    CODEQUARRY_HOME ("env")."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    document: dict[str, object] = {"database": {"url": database_url},
                                   "embedder": {"kind": "ollama", "url": embedder_url}}
    data_dir = home / ".local" / "share" / "codequarry"
    same: dict[str, str] = {}
    if data == "config":
        data_dir = tmp_path / "cfg-data"
        document["data_dir"] = str(data_dir)
    elif data == "env":
        data_dir = tmp_path / "env-data"
        same = {"CODEQUARRY_HOME": str(data_dir)}
    config = home / ".config" / "codequarry" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(tomlkit.dumps(document))
    inherited = {k: v for k, v in os.environ.items()
                 if not k.startswith(("CODEQUARRY_", "XDG_")) and k != "NOTIFY_SOCKET"}
    login = inherited | {"HOME": str(home)}
    login_runtime = runtime or tmp_path / "login-run"  # a daemon without one: the terminal has one
    login_runtime.mkdir(mode=0o700, exist_ok=True)
    login["XDG_RUNTIME_DIR"] = str(login_runtime)
    daemon_env = (login if runtime is not None else inherited | {"HOME": str(home)}) | same
    return Setup(home, data_dir, daemon_env, login | same, same)


@contextmanager
def daemon_process(setup: Setup, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`codequarry daemon` in `setup.daemon_env`, until it has recorded where it listens."""
    with log.open("ab") as out:
        process = subprocess.Popen([CODEQUARRY, "daemon"], env=setup.daemon_env, cwd=setup.home,
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + START_SECONDS
        while paths.read_daemon_record(setup.data_dir) is None:
            assert process.poll() is None, f"the daemon exited: {log.read_text()[-600:]}"
            assert time.monotonic() < deadline, f"no daemon record after {START_SECONDS:.0f} s"
            time.sleep(0.1)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


def bridge_answers(env: dict[str, str], cwd: Path) -> str:
    """Spawn `codequarry mcp` as a client would; the serverInfo name of its initialize answer."""
    done = subprocess.run([CODEQUARRY, "mcp"], env=env, cwd=cwd, input=INITIALIZE + "\n",
                          capture_output=True, text=True, timeout=120, check=False)
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.strip()]
    answers = [m for m in lines if m.get("id") == 1 and "result" in m]
    assert answers, f"no initialize answer (rc {done.returncode}): {done.stderr.strip()[-300:]}"
    return str(answers[0]["result"]["serverInfo"]["name"])


def cli_sees_running(env: dict[str, str], cwd: Path) -> bool:
    done = subprocess.run([CODEQUARRY, "status", "--json"], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return bool(json.loads(done.stdout)["daemon"]["running"])


@pytest.mark.parametrize("data", ["default", "config", "env"])
@pytest.mark.parametrize("daemon", ["login-session", "no-runtime-dir"])
def test_bridge_and_cli_find_the_daemon_with_a_minimal_or_a_full_environment(
        tmp_path: Path, database_url: str, daemon: str, data: str, ollama: OllamaStandIn) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="cq", dir="/tmp")) if daemon == "login-session" else None
    setup = make_setup(tmp_path, database_url, runtime, data, ollama.url)
    clients = {"minimal": minimal_env(setup.home) | setup.same_setting, "full": setup.login_env}
    try:
        with daemon_process(setup, tmp_path / "daemon.log"):
            record = paths.read_daemon_record(setup.data_dir)
            assert record is not None
            socket = Path(record["socket"])
            if runtime is not None:
                assert socket.is_relative_to(runtime)  # the daemon listens under its runtime dir
            assert (paths.daemon_record_path(setup.data_dir).stat().st_mode & 0o777) == 0o600
            assert (socket.parent.stat().st_mode & 0o777) == 0o700
            with ThreadPoolExecutor(4) as pool:  # the four client processes at once
                asked = {name: (pool.submit(bridge_answers, env, setup.home),
                                pool.submit(cli_sees_running, env, setup.home))
                         for name, env in clients.items()}
                verdicts = {name: (bridge.result(), cli.result()) for name, (bridge, cli) in asked.items()}
            assert verdicts == {"minimal": ("codequarry", True), "full": ("codequarry", True)}
        assert not paths.daemon_record_path(setup.data_dir).exists()  # removed on a clean stop
    finally:
        if runtime is not None:
            shutil.rmtree(runtime, ignore_errors=True)


def test_a_stale_record_of_a_dead_daemon_is_ignored(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    dead = subprocess.Popen(["true"])
    dead.wait()
    paths.write_daemon_record(data_dir, tmp_path / "gone.sock", dead.pid, "0", time.time())
    assert paths.read_daemon_record(data_dir) is None
    assert paths.find_socket(data_dir) == paths.socket_path(data_dir)
    paths.write_daemon_record(data_dir, tmp_path / "live.sock", os.getpid(), "0", time.time())
    assert paths.socket_candidates(data_dir)[0] == tmp_path / "live.sock"
    paths.remove_daemon_record(data_dir, os.getpid() + 1)  # not ours: kept
    assert paths.read_daemon_record(data_dir) is not None
    paths.remove_daemon_record(data_dir, os.getpid())
    assert not paths.daemon_record_path(data_dir).exists()


# ---- Claude Code ------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def claude_code() -> Path:
    """The `claude` CLI from npm, installed once into $CQ_NPM_DIR (default: a shared temp dir)."""
    prefix = Path(os.environ.get("CQ_NPM_DIR") or Path(tempfile.gettempdir()) / "codequarry-npm")
    claude = prefix / "node_modules" / ".bin" / "claude"
    if not claude.exists():
        npm = shutil.which("npm")
        assert npm, "npm is needed for this test (apt-get install nodejs npm); .ci/run installs it"
        done = subprocess.run([npm, "install", "--prefix", str(prefix), "@anthropic-ai/claude-code"],
                              capture_output=True, text=True, timeout=900, check=False)
        assert done.returncode == 0, f"npm install failed: {done.stderr[-500:]}"
        assert claude.exists()
    return claude


def test_claude_code_health_check_shows_connected_with_and_without_xdg_runtime_dir(
        tmp_path: Path, database_url: str, claude_code: Path, ollama: OllamaStandIn) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="cq", dir="/tmp"))
    setup = make_setup(tmp_path, database_url, runtime, "default", ollama.url)
    project = setup.home / "proj"
    project.mkdir()
    node_path = f"{Path(claude_code).resolve().parent}:{os.environ.get('PATH', '/usr/bin:/bin')}"
    terminal = setup.login_env | {"PATH": node_path}
    try:
        with daemon_process(setup, tmp_path / "daemon.log"):
            subprocess.run([str(claude_code), "mcp", "add", "codequarry", "--", CODEQUARRY, "mcp"],
                           env=terminal, cwd=project, capture_output=True, text=True, timeout=120, check=True)
            lines = {}
            envs = {"login": terminal, "minimal": minimal_env(setup.home) | {"PATH": node_path}}
            for name, env in envs.items():
                listed = subprocess.run([str(claude_code), "mcp", "list"], env=env, cwd=project,
                                        capture_output=True, text=True, timeout=180, check=False)
                lines[name] = next((line for line in listed.stdout.splitlines() if "codequarry" in line),
                                   f"no codequarry line: {listed.stdout[-300:]} {listed.stderr[-300:]}")
            assert all("Connected" in line for line in lines.values()), lines
    finally:
        shutil.rmtree(runtime, ignore_errors=True)
