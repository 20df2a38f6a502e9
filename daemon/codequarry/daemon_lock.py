"""One writer per data directory: the daemon, or a `codequarry index` when none runs.

An flock on data_dir/daemon.lock; the kernel releases it when the holder dies, even by
kill -9, so a stale lock never blocks a restart.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType

from codequarry.errors import DaemonRunning


class IndexLock:
    def __init__(self, path: Path, role: str, wait: bool = True) -> None:
        self.path = path
        self.role = role
        self.wait = wait
        self._handle: int | None = None

    def holder(self) -> str:
        try:
            return self.path.read_text().strip() or "another process"
        except OSError:
            return "another process"

    def __enter__(self) -> IndexLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        announced = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not self.wait:
                    os.close(handle)
                    raise DaemonRunning(f"{self.holder()} already uses {self.path.parent}; "
                                        "stop it first (only one daemon per data directory)") from None
                if not announced:
                    print(f"codequarry: waiting for {self.holder()} to finish", file=sys.stderr)
                    announced = True
                time.sleep(0.5)
        os.ftruncate(handle, 0)
        os.write(handle, f"codequarry {self.role} (pid {os.getpid()})".encode())
        self._handle = handle
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._handle is not None:
            os.ftruncate(self._handle, 0)
            fcntl.flock(self._handle, fcntl.LOCK_UN)
            os.close(self._handle)
            self._handle = None
