"""Where codequarry keeps things, derived from the environment and HOME.

MCP clients start `codequarry mcp` with a minimal environment (HOME, USER, PATH...),
so every default here must be computable from HOME and the uid alone. The one thing that
depends on the daemon's environment (XDG_RUNTIME_DIR decides where its socket lives) is
written down by the daemon in `<data dir>/daemon.json`; clients read that record first.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

APP = "codequarry"
# sun_path is 108 bytes on Linux and 104 on macOS; stay below both.
_MAX_SOCKET_PATH = 100


def _xdg(var: str, fallback: str) -> Path:
    value = os.environ.get(var)
    if value and os.path.isabs(value):
        return Path(value)
    return Path.home() / fallback


def default_config_path() -> Path:
    """$CODEQUARRY_CONFIG, else $XDG_CONFIG_HOME/codequarry/config.toml."""
    explicit = os.environ.get("CODEQUARRY_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    return _xdg("XDG_CONFIG_HOME", ".config") / APP / "config.toml"


def default_data_dir() -> Path:
    """$XDG_DATA_HOME/codequarry (the env var CODEQUARRY_HOME wins over this and the config)."""
    return _xdg("XDG_DATA_HOME", ".local/share") / APP


def env_data_dir() -> Path | None:
    value = os.environ.get("CODEQUARRY_HOME")
    return Path(value).expanduser() if value else None


def runtime_dir(data_dir: Path) -> Path:
    """A private directory for the daemon's socket: $XDG_RUNTIME_DIR/codequarry or data/run.

    Two data dirs must never share a socket, so the runtime dir is keyed by the data dir
    unless it is the default one.
    """
    base = os.environ.get("XDG_RUNTIME_DIR")
    if base and os.path.isdir(base):
        root = Path(base) / APP
        if data_dir.resolve() != default_data_dir().resolve():
            root = root / _short_hash(data_dir)
        return root
    return data_dir / "run"


def socket_path(data_dir: Path, configured: Path | None = None) -> Path:
    """The daemon's MCP socket; falls back to a short /tmp path when the usual one is too long."""
    return _shorten(configured or runtime_dir(data_dir) / "mcp.sock", data_dir)


def _short_hash(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:12]


# ---- discovery: the daemon's record in its data dir ----------------------------------------

RECORD_NAME = "daemon.json"


def lock_path(data_dir: Path) -> Path:
    """`<data dir>/daemon.lock`: the one-writer lock (codequarry.daemon_lock)."""
    return data_dir / "daemon.lock"


def daemon_record_path(data_dir: Path) -> Path:
    """`<data dir>/daemon.json`: {socket, pid, version, started_at, data_dir} of the running daemon."""
    return data_dir / RECORD_NAME


def write_daemon_record(data_dir: Path, socket: Path, pid: int, version: str, started_at: float) -> None:
    """Record where the daemon listens: written atomically (temp file + rename), mode 0600."""
    data_dir.mkdir(parents=True, exist_ok=True)
    record = {"socket": str(socket), "pid": pid, "version": version, "started_at": started_at,
              "data_dir": str(data_dir)}
    target = daemon_record_path(data_dir)
    temporary = target.with_name(f".{RECORD_NAME}.{pid}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        json.dump(record, handle)
        handle.write("\n")
    os.replace(temporary, target)


def read_daemon_record(data_dir: Path) -> dict[str, Any] | None:
    """The record of a daemon whose process is alive, else None (missing, torn or stale)."""
    try:
        record = json.loads(daemon_record_path(data_dir).read_text())
        pid = int(record["pid"])
        socket = str(record["socket"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not socket or not alive(pid):
        return None
    return dict(record)


def remove_daemon_record(data_dir: Path, pid: int) -> None:
    """Remove the record if it is this daemon's (a newer daemon may have replaced it)."""
    path = daemon_record_path(data_dir)
    try:
        if int(json.loads(path.read_text())["pid"]) != pid:
            return
    except (OSError, ValueError, KeyError, TypeError):
        return
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def socket_candidates(data_dir: Path, configured: Path | None = None) -> list[Path]:
    """Where a daemon of `data_dir` may listen, most likely first: a configured socket; else
    the daemon's record; the default for this environment; the defaults for an environment
    with and without XDG_RUNTIME_DIR (a client started with fewer variables than its daemon)."""
    if configured is not None:
        return [configured]
    found: list[Path] = []
    record = read_daemon_record(data_dir)
    if record is not None:
        found.append(Path(record["socket"]))
    found.append(socket_path(data_dir))
    uid = os.getuid() if sys.platform != "win32" else 0
    login_runtime = Path(f"/run/user/{uid}")
    if login_runtime.is_dir():
        root = login_runtime / APP
        if data_dir.resolve() != default_data_dir().resolve():
            root = root / _short_hash(data_dir)
        found.append(_shorten(root / "mcp.sock", data_dir))
    found.append(_shorten(data_dir / "run" / "mcp.sock", data_dir))
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def find_socket(data_dir: Path, configured: Path | None = None) -> Path:
    """The socket a client should use: the first candidate that exists, else the default
    (so that an error message names where the daemon would listen)."""
    candidates = socket_candidates(data_dir, configured)
    for path in candidates:
        if path.exists():
            return path
    return socket_path(data_dir, configured)


def _shorten(candidate: Path, data_dir: Path) -> Path:
    if len(os.fsencode(candidate)) <= _MAX_SOCKET_PATH:
        return candidate
    uid = os.getuid() if sys.platform != "win32" else 0
    return Path(tempfile.gettempdir()) / f"{APP}-{uid}" / _short_hash(data_dir) / "mcp.sock"


def alive(pid: int) -> bool:
    """Whether process `pid` exists (it may belong to another user)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---- what an MCP client may register -------------------------------------------------------

# never indexed on an MCP client's word, whatever the allowed roots say
SYSTEM_DIRS = tuple(Path(p) for p in (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/proc", "/run", "/sbin", "/sys",
    "/usr", "/var", "/System", "/Library", "/private/etc", "/private/var"))


def default_allowed_roots() -> list[Path]:
    """[mcp] allowed_roots when the config says nothing: the user's home."""
    return [Path.home()]


def mcp_refusal(path: Path, allowed_roots: list[Path]) -> str | None:
    """Why an MCP client may not register `path` (None: it may). Refused: the filesystem
    root and system directories; anything outside `allowed_roots`; an allowed root's
    dot-directories (~/.ssh, ~/.gnupg, ~/.aws ...); the home directory itself (it holds
    them). Symlinks are resolved first, so a link cannot smuggle a path in."""
    real = Path(os.path.realpath(path))
    if real == Path("/") or any(real == d or real.is_relative_to(d) for d in SYSTEM_DIRS):
        return f"refusing to index the system directory {real} over MCP; use the CLI if you mean it"
    if real == Path(os.path.realpath(Path.home())):
        return (f"refusing to index the whole home directory {real} over MCP (it holds ~/.ssh, "
                "~/.gnupg ...); give a repository inside it")
    for root in allowed_roots:
        base = Path(os.path.realpath(root))
        if real == base or real.is_relative_to(base):
            hidden = next((part for part in real.relative_to(base).parts if part.startswith(".")), None)
            if hidden is not None:
                return f"refusing to index {real} over MCP: {hidden} is a dot-directory"
            return None
    allowed = ", ".join(str(r) for r in allowed_roots) or "none"
    return (f"refusing to index {real} over MCP: it is outside the allowed roots ({allowed}); "
            "add its parent to [mcp] allowed_roots in the config, or run `codequarry index PATH`")
