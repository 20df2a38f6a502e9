"""What one project's status entry (an element of `codequarry status --json`'s "projects")
says about its index: one word for its state, and when following an index ends and why it
failed. The daemon's answers (list_projects, index_repository's wait), `codequarry index`
following the daemon (codequarry.console) and its fast front door (codequarry.fastcli)
all decide with this module, so they agree. Standard library only (the front door imports
it without the rest of codequarry).

Reasons why an index cannot become complete now, each an "errors" line of the entry with
its prefix (runtime.status_report writes them):
- MISSING: the repository directory is gone;
- EMBEDDER: the embedder fails (counts only while chunks lack vectors);
- UNREADABLE: files whose read failed (EIO, EACCES...); the daemon retries them in the
  background, and the entry's "unreadable_files" counts them among "pending_files";
- FAILED: files whose writing failed on a bug path (recorded on their change events).
A project the daemon keeps retrying (state "retrying") is given RETRYING_GIVE_UP_SECONDS.
"""

from __future__ import annotations

from typing import Any

# `index` with the daemon up: how long a project may stay in the daemon's "retrying" state
# (a failing start, retried with backoff) before the command gives up with its error
RETRYING_GIVE_UP_SECONDS = 30.0

MISSING = "repository directory is missing: "
EMBEDDER = "embedder: "
UNREADABLE = "unreadable: "
FAILED = "failed: "


def project_state(entry: dict[str, Any]) -> str:
    """One word for a status entry: starting, retrying (after an error), not indexed,
    scanning, indexing (files pending), embedding (searchable by words, vectors pending),
    complete, or error (nothing left to do now, yet incomplete: see failure())."""
    errors = [str(e) for e in entry.get("errors", [])]
    if entry.get("state") in ("starting", "retrying"):  # the supervisor's view of the project
        return str(entry["state"])
    if any(e.startswith(MISSING) for e in errors):
        return "error"
    if "files" not in entry or "not indexed yet" in errors:
        return "not indexed"
    if entry.get("scanning"):
        return "scanning"
    unreadable = int(entry.get("unreadable_files", 0))
    # files that cannot be read stay pending (retried in the background): they wait on no one
    if int(entry.get("pending_files", 0)) > unreadable or (entry.get("pending_events", 0) and not unreadable):
        return "indexing"
    if any(e.startswith(EMBEDDER) for e in errors):
        return "error"  # every file is searchable by words; vectors cannot come
    if entry.get("chunks", 0) and float(entry.get("vector_coverage", 0.0)) < 1.0:
        return "embedding"
    if unreadable or any(e.startswith(FAILED) for e in errors):
        return "error"
    return "complete"


def failure(entry: dict[str, Any]) -> str | None:
    """Why an entry whose state is "error" is not a complete index (its reasons joined by
    "; "), or None when it is one after all (the embedder fails, yet no vector is missing)."""
    complete_vectors = float(entry.get("vector_coverage", 0.0)) >= 1.0
    reasons = [str(e) for e in entry.get("errors", []) if str(e).startswith((MISSING, UNREADABLE, FAILED))
               or (str(e).startswith(EMBEDDER) and not complete_vectors)]
    return "; ".join(reasons) or None


class IndexFollower:
    """`codequarry index` with the daemon up: feed each poll of the project's status entry
    to check(); it says when to stop and with which failure."""

    def __init__(self, project: str) -> None:
        self.project = project
        self._retrying_since: float | None = None

    def check(self, entry: dict[str, Any] | None, now: float) -> tuple[bool, str | None]:
        """(done, failure): keep polling while not done; done with a failure (exit 1) or
        None (complete). `now` is time.monotonic()."""
        state = project_state(entry) if entry is not None else "not indexed"
        if state != "retrying":
            self._retrying_since = None
        elif self._retrying_since is None:
            self._retrying_since = now
        elif now - self._retrying_since > RETRYING_GIVE_UP_SECONDS:
            assert entry is not None
            return True, (f"{self.project} cannot be indexed now (the daemon keeps retrying it): "
                          f"{entry.get('error')}")
        if state == "complete":
            return True, None
        if state == "error":
            assert entry is not None
            return True, failure(entry)
        return False, None
