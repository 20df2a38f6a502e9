"""Where codequarry keeps things, derived from the environment and HOME.

MCP clients start `codequarry mcp` with a minimal environment (HOME, USER, PATH...),
so every default here must be computable from HOME and the uid alone.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
from pathlib import Path

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
    candidate = configured or runtime_dir(data_dir) / "mcp.sock"
    if len(os.fsencode(candidate)) <= _MAX_SOCKET_PATH:
        return candidate
    uid = os.getuid() if sys.platform != "win32" else 0
    return Path(tempfile.gettempdir()) / f"{APP}-{uid}" / _short_hash(data_dir) / "mcp.sock"


def _short_hash(path: Path) -> str:
    return hashlib.sha256(os.fsencode(path.resolve())).hexdigest()[:12]
