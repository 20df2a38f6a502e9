"""One writer per data directory: the daemon, or a CLI command when none runs.

An flock on data_dir/daemon.lock; the kernel releases it when the holder dies, even by
kill -9, so a stale lock never blocks a restart. The holder writes its role and pid into
the file ("codequarry daemon (pid 12)"), so others can tell a daemon (talk to it over its
socket) from a one-shot command (wait for it). Whoever holds the lock owns the embedded
PostgreSQL (store/embedded.py).
"""

from __future__ import annotations

import fcntl
import os
import re
import sys
import time
from pathlib import Path
from types import TracebackType

from codequarry.errors import DaemonRunning
from codequarry.paths import alive

_held: set[str] = set()  # lock files this process holds


def holds(path: Path) -> bool:
    """Does this process hold the lock at `path`?"""
    return os.path.abspath(path) in _held


def labelled_holder(lock: IndexLock, seconds: float = 2.0) -> str:
    """The holder's label, waiting briefly for a holder that just took the lock to write it."""
    deadline = time.monotonic() + seconds
    while not (label := lock.holder()) and time.monotonic() < deadline:
        time.sleep(0.02)
    return label or "another process"


def daemon_holder(path: Path) -> int | None:
    """The pid of the daemon that holds the lock at `path`; None when the lock is free, held
    by a one-shot command, or not yet labelled. Never blocks and never disturbs a holder."""
    try:
        label = path.read_text().strip()
    except OSError:
        return None
    found = re.fullmatch(r"codequarry daemon \(pid (\d+)\)", label)
    if found is None or not alive(int(found[1])):
        return None  # after a kill -9 the kernel freed the lock but the label stayed
    try:
        handle = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        # a shared lock is refused while the daemon holds its exclusive one; granted, it
        # means the label is stale (its pid reused), and it is given back at once
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return int(found[1])
    finally:
        os.close(handle)  # closing releases a shared lock we were granted
    return None


def lock_for_daemon(path: Path) -> IndexLock:
    """The daemon's hold on the lock at `path` (entered; leave it with __exit__). Raises
    DaemonRunning while another daemon holds it; a one-shot command holding it is waited for."""
    lock = IndexLock(path, "daemon", wait=False)
    try:
        return lock.__enter__()
    except DaemonRunning:
        if "daemon" in labelled_holder(lock):
            raise
    return IndexLock(path, "daemon", wait=True).__enter__()  # an index run: wait for it


class IndexLock:
    def __init__(self, path: Path, role: str, wait: bool = True) -> None:
        self.path = path
        self.role = role
        self.wait = wait
        self._handle: int | None = None

    def holder(self) -> str:
        """The holder's description, "" when the lock was just taken and not yet labelled."""
        try:
            return self.path.read_text().strip()
        except OSError:
            return ""

    def __enter__(self) -> IndexLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if not self.wait:
                os.close(handle)
                raise DaemonRunning(f"{self.holder() or 'another process'} already uses "
                                    f"{self.path.parent}; stop it first (only one daemon per "
                                    "data directory)") from None
            print(f"codequarry: waiting for {self.holder() or 'another process'} to finish",
                  file=sys.stderr)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)  # the kernel wakes us when it is released
            except BaseException:
                os.close(handle)
                raise
        os.ftruncate(handle, 0)
        os.write(handle, f"codequarry {self.role} (pid {os.getpid()})".encode())
        self._handle = handle
        _held.add(os.path.abspath(self.path))
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            _held.discard(os.path.abspath(self.path))
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None
