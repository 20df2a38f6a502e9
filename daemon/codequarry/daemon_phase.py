"""Where a daemon that does not answer is in its life, as its data dir tells: for clients.

Two signs, both read without disturbing the daemon: the data dir's lock, held by a live
process labelled as the daemon (daemon_lock.daemon_holder), and daemon.json, which the
daemon writes once it serves and removes only after its store has stopped, just before it
lets the lock go (service.Daemon.serve). So a holder that daemon.json does not record is
starting, and one that it records but that does not answer is stopping (or hung, which
only a bound on the wait tells). Standard library only: the stdio bridge uses it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codequarry import paths
from codequarry.daemon_lock import daemon_holder


@dataclass(frozen=True)
class DaemonPhase:
    """pid: the daemon process holding the data dir's lock, None when none does;
    recorded: whether daemon.json records that process."""

    pid: int | None
    recorded: bool

    @property
    def name(self) -> str:
        """"gone" (no daemon holds the lock), "starting" or "stopping"."""
        if self.pid is None:
            return "gone"
        return "stopping" if self.recorded else "starting"


def daemon_phase(data_dir: Path) -> DaemonPhase:
    """The phase of the daemon of `data_dir`, for a client that found it not answering."""
    pid = daemon_holder(paths.lock_path(data_dir))
    if pid is None:
        return DaemonPhase(None, False)
    record = paths.read_daemon_record(data_dir)
    return DaemonPhase(pid, record is not None and record.get("pid") == pid)
