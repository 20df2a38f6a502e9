"""`codequarry mcp`: MCP over stdio, forwarded to the daemon's streamable-HTTP endpoint.

MCP clients start it with a minimal environment and wait for it, so it is a plain
forwarder built on the standard library alone (no MCP SDK, no HTTP client library, no
pydantic): one JSON-RPC message per stdin line becomes one POST to `/mcp` on the daemon's
unix socket; a JSON answer or each event of a `text/event-stream` answer becomes one
stdout line. The daemon is found the way every client finds it (paths.find_socket: its
record in the data dir first). stdout carries protocol frames only; notes go to stderr.

It follows its client and its daemon: it exits as soon as stdin closes; a request the
daemon cannot answer (stopped, crashed) gets a JSON-RPC error at once; a restarted daemon
is re-initialized with the client's own `initialize` and the request is sent again. A
daemon process that holds the data dir's lock but does not answer, starting or stopping
(daemon_phase), is waited for, at start and on a request: STARTING_WAIT_SECONDS at most,
and when it exits meanwhile (a restart), RESTART_GRACE_SECONDS for the next one.
"""

from __future__ import annotations

import http.client
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import quote

from codequarry import paths
from codequarry.daemon_phase import daemon_phase
from codequarry.errors import ConfigError, DaemonNotRunning

CWD_HEADER = "x-codequarry-cwd"  # the client's working directory, percent-encoded
SESSION_HEADER = "mcp-session-id"
VERSION_HEADER = "mcp-protocol-version"
AUTOSTART_SECONDS = 60.0
# a starting daemon: PostgreSQL, the model and the MCP server (a few seconds; more on a
# first start or a migration); a stopping one: its drain and PostgreSQL's stop (2-4 s).
# A client gets its answer or the error after this at most
STARTING_WAIT_SECONDS = 60.0
# after a daemon that was waited for exits: `systemctl restart`, launchd or a user's
# restart starts the next one at once, and it takes the lock before its imports
# (cli.cmd_daemon; ~0.2 s on a loaded 2-core machine); a daemon only stopped costs this delay
RESTART_GRACE_SECONDS = 3.0
CONNECT_SECONDS = 5.0
EXIT_GRACE_SECONDS = 0.5
DAEMON_GONE = -32000  # JSON-RPC "server error": the daemon does not answer


@dataclass(frozen=True)
class BridgeTarget:
    """What the bridge needs from the config, read without validating the whole file."""

    config_path: Path
    data_dir: Path
    socket: Path | None  # [mcp] socket, when configured
    autostart: bool

    def find_socket(self) -> Path:
        return paths.find_socket(self.data_dir, self.socket)


def load_target(config_path: Path | None) -> BridgeTarget:
    """The data dir (CODEQUARRY_HOME, else `data_dir` in the config, else from HOME), the
    configured socket and [mcp] autostart. Raises ConfigError for unreadable TOML."""
    path = config_path or paths.default_config_path()
    raw: dict[str, Any] = {}
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        pass
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config: {exc}") from None
    mcp = raw.get("mcp") if isinstance(raw.get("mcp"), dict) else {}
    assert isinstance(mcp, dict)
    configured = raw.get("data_dir")
    data_dir = paths.env_data_dir() or (Path(configured).expanduser() if isinstance(configured, str)
                                        else paths.default_data_dir())
    sock = mcp.get("socket")
    return BridgeTarget(config_path=path, data_dir=Path(os.path.abspath(data_dir)),
                        socket=Path(sock).expanduser() if isinstance(sock, str) else None,
                        autostart=mcp.get("autostart") is True)


def run_bridge(target: BridgeTarget, stdin: BinaryIO | None = None, stdout: BinaryIO | None = None) -> int:
    """Forward until stdin closes; 0 then. Raises DaemonNotRunning when no daemon answers
    at start (nor within STARTING_WAIT_SECONDS when one is starting) and [mcp] autostart
    is off."""
    if not await_daemon(target):
        refusal = _refusal(target)
        if refusal is not None:
            _answer_first_request(stdin or sys.stdin.buffer, stdout or sys.stdout.buffer, str(refusal))
            raise refusal
        start_daemon(target)
    Forwarder(target, stdout or sys.stdout.buffer).run(stdin or sys.stdin.buffer)
    return 0


def _refusal(target: BridgeTarget) -> DaemonNotRunning | None:
    """Why the bridge cannot serve; None when it should start a daemon itself (autostart)."""
    phase = daemon_phase(target.data_dir)
    if phase.pid is not None:  # waited for in vain: starting another would only be refused
        return DaemonNotRunning(_hung(target, phase.pid))
    if target.autostart:
        return None
    return DaemonNotRunning(
        f"no codequarry daemon answers on {target.find_socket()}; start one with `codequarry "
        "daemon` (or `codequarry service install` to start it at login, or set [mcp] autostart "
        "= true)")


def _hung(target: BridgeTarget, pid: int) -> str:
    return (f"the codequarry daemon (pid {pid}) holds {target.data_dir} but did not answer on "
            f"{target.find_socket()} within {STARTING_WAIT_SECONDS:.0f} s; see its log "
            f"(`--log-file`, {target.data_dir / 'daemon.log'} when the bridge started it, or "
            "`journalctl --user -u codequarry`)")


def await_daemon(target: BridgeTarget, closing: threading.Event | None = None) -> bool:
    """True once a daemon answers: at once, or after waiting (polled every 0.1 s) while a
    daemon process holds the data dir's lock without answering, starting or stopping
    (said on stderr), STARTING_WAIT_SECONDS at most in all; when the holder exits during
    the wait (a restart), RESTART_GRACE_SECONDS more for the next one to take the lock.
    False when none answers and none holds the lock, after those bounds, or when
    `closing` is set."""
    closing = closing or threading.Event()
    deadline: float | None = None
    gone_since: float | None = None
    said: tuple[int, str] | None = None
    while not _answers(target.find_socket()):
        phase = daemon_phase(target.data_dir)
        now = time.monotonic()
        if closing.is_set() or (deadline is not None and now > deadline):
            return False
        if phase.pid is None:
            if deadline is None:
                return False  # nobody was there to wait for: the error at once
            if gone_since is None:
                gone_since, said = now, None
                print(f"codequarry mcp: the daemon exited; waiting {RESTART_GRACE_SECONDS:.0f} s "
                      "for the next one", file=sys.stderr)
            if now - gone_since > RESTART_GRACE_SECONDS:
                return False
        else:
            gone_since = None
            deadline = deadline or now + STARTING_WAIT_SECONDS
            if said != (phase.pid, phase.name):
                said = (phase.pid, phase.name)
                print(f"codequarry mcp: the daemon (pid {phase.pid}) is {phase.name}; waiting "
                      f"(up to {max(0.0, deadline - now):.0f} s)", file=sys.stderr)
        closing.wait(0.1)
    return True


def _answer_first_request(stdin: BinaryIO, stdout: BinaryIO, message: str) -> None:
    """Answer the client's first request (its `initialize`) with a JSON-RPC error saying
    why, so the client shows the reason rather than "connection closed"."""
    line = stdin.readline()
    try:
        request = json.loads(line)
    except ValueError:
        return
    if isinstance(request, dict) and "id" in request:
        error = {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32000, "message": message}}
        stdout.write(json.dumps(error).encode() + b"\n")
        stdout.flush()


def start_daemon(target: BridgeTarget) -> None:
    """Start `codequarry daemon` in the background (its log in the data dir) and wait until
    it answers; used when [mcp] autostart = true."""
    target.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = target.data_dir / "daemon.log"
    executable = Path(sys.executable).with_name("codequarry")
    command = [str(executable) if executable.exists() else "codequarry", "daemon",
               "--config", str(target.config_path), "--log-file", str(log_file)]
    subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    print(f"codequarry mcp: started a daemon (log: {log_file})", file=sys.stderr)
    deadline = time.monotonic() + AUTOSTART_SECONDS
    while not _answers(target.find_socket()):
        if time.monotonic() > deadline:
            raise DaemonNotRunning(f"the daemon did not start within {AUTOSTART_SECONDS:.0f} s; "
                                   f"see {log_file}")
        time.sleep(0.1)


# ---- HTTP over the unix socket --------------------------------------------------------


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 on a unix socket; connecting is bounded, reading is not (a tool may wait)."""

    def __init__(self, path: Path, read_timeout: float | None) -> None:
        super().__init__("localhost", timeout=read_timeout)
        self._path = path
        self._read_timeout = read_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(CONNECT_SECONDS)
        try:
            sock.connect(str(self._path))
        except OSError:
            sock.close()
            raise
        sock.settimeout(self._read_timeout)
        self.sock = sock


def _answers(path: Path) -> bool:
    """Whether a daemon answers its health route on `path` (2 s at most)."""
    if not path.exists():
        return False
    connection = _UnixConnection(path, 2.0)
    try:
        connection.request("GET", "/api/health")
        return connection.getresponse().status == 200
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


class _DaemonGone(Exception):
    """The daemon closed the connection or does not listen."""


class _SessionLost(Exception):
    """The daemon answered 404 to our session id: it restarted."""


def _events(response: http.client.HTTPResponse) -> Iterator[bytes]:
    """The `data` of each server-sent event, as it arrives."""
    data: list[bytes] = []
    while True:
        line = response.readline()
        if not line:
            return
        line = line.rstrip(b"\r\n")
        if not line:
            if data:
                yield b"\n".join(data)
                data = []
        elif line.startswith(b"data:"):
            data.append(line[5:].removeprefix(b" "))


class Forwarder:
    """One client session: stdin lines -> POSTs; answers and events -> stdout lines."""

    def __init__(self, target: BridgeTarget, stdout: BinaryIO, cwd: str | None = None) -> None:
        self.target = target
        self.stdout = stdout
        self.cwd = cwd if cwd is not None else os.getcwd()
        self.socket = target.find_socket()
        self.session_id: str | None = None
        self.protocol_version: str | None = None
        self.initialize: dict[str, Any] | None = None  # the client's, replayed after a restart
        self.initialized = False
        self.generation = 0  # bumped by every (re-)initialization
        self.hung: int | None = None  # a daemon that holds the lock and was waited for in vain
        self.cancelled: set[Any] = set()
        self.closing = threading.Event()
        self._write_lock = threading.Lock()
        self._session_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._listener: threading.Thread | None = None
        self._requests: list[threading.Thread] = []

    # ---- the client side ---------------------------------------------------------

    def run(self, stdin: BinaryIO) -> None:
        for raw in iter(stdin.readline, b""):
            line = raw.strip()
            if not line:
                continue
            try:
                message = json.loads(line)
            except ValueError:
                self.write({"jsonrpc": "2.0", "id": None,
                            "error": {"code": -32700, "message": "parse error: not a JSON line"}})
                continue
            self.dispatch(message)
        # stdin closed: the client is gone or done. Answers already on their way get a
        # moment (EXIT_GRACE_SECONDS in all) to reach a client that reads to the end.
        deadline = time.monotonic() + EXIT_GRACE_SECONDS
        for thread in list(self._requests):
            thread.join(max(0.0, deadline - time.monotonic()))
        self.closing.set()
        self._end_session()

    def dispatch(self, message: Any) -> None:
        if not isinstance(message, dict):
            self._start_request(message)
            return
        method = message.get("method")
        if method == "initialize":
            self.initialize = message
            self._forward(message)  # answered before anything else is sent: it names the session
        elif method is None or "id" not in message:  # a notification, or an answer to the daemon
            if method == "notifications/cancelled":
                self.cancelled.add((message.get("params") or {}).get("requestId"))
            self._forward(message)
            if method == "notifications/initialized":
                self.initialized = True
                self._listen()
        else:
            self._start_request(message)

    def _start_request(self, message: Any) -> None:
        """A request in its own thread: stdin keeps being read (a cancellation may follow)."""
        thread = threading.Thread(target=self._forward, args=(message,), daemon=True)
        self._requests = [t for t in self._requests if t.is_alive()]
        self._requests.append(thread)
        thread.start()

    def write(self, message: Any) -> None:
        line = message if isinstance(message, bytes) else json.dumps(message, separators=(",", ":")).encode()
        with self._write_lock:
            try:
                self.stdout.write(line.replace(b"\n", b"") + b"\n")
                self.stdout.flush()
            except (BrokenPipeError, ValueError):
                self.closing.set()  # the client is gone

    # ---- the daemon side ---------------------------------------------------------

    def _forward(self, message: Any) -> None:
        request_id = message.get("id") if isinstance(message, dict) and "method" in message else None
        for attempt in range(2):
            generation = self.generation
            try:
                answered = self._post(message, relay=True)
            except (_DaemonGone, _SessionLost) as exc:
                if attempt == 0 and not self.closing.is_set() and self._recover(generation, exc):
                    continue
                answered = False
                if request_id is not None and request_id not in self.cancelled:
                    self.write(self._gone(request_id))
                return
            if not answered and request_id is not None and request_id not in self.cancelled \
                    and not self.closing.is_set():
                self.write(self._gone(request_id))  # the stream ended without our answer
            self.cancelled.discard(request_id)
            return

    def _gone(self, request_id: Any) -> dict[str, Any]:
        message = _hung(self.target, self.hung) if self.hung is not None else (
            f"the codequarry daemon did not answer on {self.socket} (stopped or restarting); "
            "start it with `codequarry daemon` and call again")
        return {"jsonrpc": "2.0", "id": request_id, "error": {"code": DAEMON_GONE, "message": message}}

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   CWD_HEADER: quote(self.cwd)}
        if self.session_id:
            headers[SESSION_HEADER] = self.session_id
        if self.protocol_version:
            headers[VERSION_HEADER] = self.protocol_version
        return headers

    def _post(self, message: Any, relay: bool) -> bool:
        """POST one message; relay (or, for a replayed initialize, absorb) what comes back.
        True when an answer to the message's id came back (or none was due)."""
        wanted = message.get("id") if isinstance(message, dict) and "method" in message else None
        is_initialize = isinstance(message, dict) and message.get("method") == "initialize"
        connection = _UnixConnection(self.socket, None)
        try:
            try:
                connection.request("POST", "/mcp", body=json.dumps(message).encode(), headers=self._headers())
                response = connection.getresponse()
            except (OSError, http.client.HTTPException) as exc:
                raise _DaemonGone(str(exc)) from None
            if response.status == 404 and self.session_id and not is_initialize:
                response.read()
                raise _SessionLost()
            if is_initialize and response.getheader(SESSION_HEADER):
                self.session_id = response.getheader(SESSION_HEADER)
            if response.status == 202 or (wanted is None and response.status < 300):
                response.read()
                return True
            kind = (response.getheader("content-type") or "").split(";")[0].strip()
            answered = False
            try:
                bodies = _events(response) if kind == "text/event-stream" else iter([response.read()])
                for body in bodies:
                    if not body.strip():
                        continue
                    answered = self._relay(body, wanted, relay, response.status) or answered
            except (OSError, http.client.HTTPException) as exc:
                if not answered:
                    raise _DaemonGone(str(exc)) from None
            return answered or wanted is None
        finally:
            connection.close()

    def _relay(self, body: bytes, wanted: Any, relay: bool, status: int) -> bool:
        try:
            parsed = json.loads(body)
        except ValueError:
            if wanted is None:
                return False
            parsed = {"jsonrpc": "2.0", "id": wanted, "error": {
                "code": -32603, "message": f"the daemon answered HTTP {status}: {body[:200]!r}"}}
        if isinstance(parsed, dict) and "jsonrpc" not in parsed and wanted is not None:
            parsed = {"jsonrpc": "2.0", "id": wanted, "error": {
                "code": -32603, "message": str(parsed.get("error", parsed))[:300]}}
        if isinstance(parsed, dict) and parsed.get("id") is None and "error" in parsed and wanted is not None:
            parsed["id"] = wanted
        answered = isinstance(parsed, dict) and "method" not in parsed and parsed.get("id") == wanted
        if isinstance(parsed, dict) and "method" not in parsed and parsed.get("id") in self.cancelled:
            # the HTTP transport ends a cancelled request's stream with an error; on stdio the
            # spec says a cancelled request gets no response at all
            return True
        if answered and isinstance(parsed, dict):
            version = (parsed.get("result") or {}).get("protocolVersion") if isinstance(
                parsed.get("result"), dict) else None
            if isinstance(version, str):
                self.protocol_version = version
        if relay:
            self.write(parsed)
        return answered

    def _recover(self, generation: int, problem: Exception) -> bool:
        """After a lost daemon or session: find the daemon again and, with the client's own
        initialize, open a new session. False when no daemon answers."""
        with self._session_lock:
            if self.generation != generation:
                return True  # another thread already did it
            if self.initialize is None or not await_daemon(self.target, self.closing):
                self.hung = daemon_phase(self.target.data_dir).pid  # waited for in vain
                return False
            self.hung = None
            self.socket = self.target.find_socket()
            self.session_id = None
            replay = dict(self.initialize, id=f"codequarry-bridge-{next(self._ids)}")
            try:
                self._post(replay, relay=False)
                if self.initialized:
                    self._post({"jsonrpc": "2.0", "method": "notifications/initialized"}, relay=False)
            except (_DaemonGone, _SessionLost):
                return False
            self.generation += 1
            print(f"codequarry mcp: reconnected to the daemon on {self.socket}", file=sys.stderr)
            return True

    def _listen(self) -> None:
        """The GET stream: messages the daemon sends outside any request."""
        if self._listener is not None or not self.session_id:
            return

        def listen() -> None:
            while not self.closing.is_set():
                connection = _UnixConnection(self.socket, None)
                try:
                    headers = {k: v for k, v in self._headers().items() if k != "Content-Type"}
                    connection.request("GET", "/mcp", headers=headers | {"Accept": "text/event-stream"})
                    response = connection.getresponse()
                    if response.status != 200:
                        if response.status in (404, 409):  # a restarted daemon, or a stream open already
                            self.closing.wait(1.0)
                            continue
                        return  # the daemon does not offer the stream
                    for body in _events(response):
                        self._relay(body, None, True, 200)
                except (OSError, http.client.HTTPException):
                    pass
                finally:
                    connection.close()
                self.closing.wait(1.0)

        self._listener = threading.Thread(target=listen, daemon=True)
        self._listener.start()

    def _end_session(self) -> None:
        """Tell the daemon the session is over (best effort, half a second at most)."""
        if not self.session_id:
            return
        connection = _UnixConnection(self.socket, 0.5)
        try:
            connection.request("DELETE", "/mcp", headers=self._headers())
            connection.getresponse().read()
        except (OSError, http.client.HTTPException):
            pass
        finally:
            connection.close()
