"""This installation's identity: created once, kept in the data dir.

A PostgreSQL server may be shared by several installations (a team server); each
project index belongs to (installation, project id), so two working trees never write
one index even when their project ids match. What installations share is the embedding
cache. The id is a random 128-bit hex string in `<data dir>/installation-id` (0600).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from codequarry.errors import ConfigError

FILE_NAME = "installation-id"


def installation_id(data_dir: Path) -> str:
    """The id stored in `data_dir`, created on first use (race-free between processes)."""
    path = data_dir / FILE_NAME
    try:
        return _read(path)
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now
        return _read(path)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(uuid.uuid4().hex + "\n")
    return _read(path)


def _read(path: Path) -> str:
    value = path.read_text().strip()
    if len(value) != 32 or any(c not in "0123456789abcdef" for c in value):
        raise ConfigError(f"{path} does not hold an installation id; delete it to create a new one")
    return value


def host_name() -> str:
    return socket.gethostname() or "unknown-host"
