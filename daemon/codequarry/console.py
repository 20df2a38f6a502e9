"""What the CLI shows a person: progress bars, result lists and status tables (rich, on
stderr for progress, stdout for answers)."""

from __future__ import annotations

import sys
import time
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from codequarry.answer_text import coverage_percent
from codequarry.client import DaemonClient
from codequarry.errors import CodequarryError
from codequarry.index_state import IndexFollower


class _Console(Console):
    def on_broken_pipe(self) -> None:
        """The reader left (`| head`): rich would exit 1 here; fastcli.main decides, as for
        any other output."""
        self.quiet = True
        raise  # the BrokenPipeError being handled


stderr = _Console(stderr=True)
# piped output is not cut to 80 columns: a table row stays on one line
stdout = _Console(highlight=False, width=None if sys.stdout.isatty() else 200)


PLAIN_EVERY_SECONDS = 5.0  # a progress line at least this often when stderr is no terminal


class IndexProgress:
    """Two bars on a terminal: files checked and chunks with vectors. When stderr is no
    terminal (`enabled` False: a log file, a pipe, CI), one plain line every
    PLAIN_EVERY_SECONDS instead: files, chunks, vectors and an ETA."""

    def __init__(self, project: str, enabled: bool = True, plain_every: float = PLAIN_EVERY_SECONDS) -> None:
        self.enabled = enabled
        self.project = project
        self.plain_every = plain_every
        self._started = time.monotonic()
        self._last_line = self._started
        self._progress = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                                  MofNCompleteColumn(), TimeElapsedColumn(), console=stderr,
                                  transient=False)
        self._files = self._progress.add_task(f"{project} files", total=None)
        self._vectors = self._progress.add_task("vectors", total=None)

    def __enter__(self) -> IndexProgress:
        if self.enabled:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.enabled:
            self._progress.stop()

    def update(self, files_done: int, files_total: int, embedded: int, chunks: int) -> None:
        self._progress.update(self._files, completed=files_done, total=max(files_total, files_done))
        self._progress.update(self._vectors, completed=embedded, total=max(chunks, embedded))
        now = time.monotonic()
        if not self.enabled and now - self._last_line >= self.plain_every:
            self._last_line = now
            print(progress_line(self.project, files_done, files_total, embedded, chunks,
                                now - self._started), file=sys.stderr, flush=True)


def progress_line(project: str, files_done: int, files_total: int, embedded: int, chunks: int,
                  elapsed: float) -> str:
    """One line of progress for a log: files, chunks, vectors, elapsed time and an ETA
    (from the rate so far of the slower of files and vectors)."""
    files_total = max(files_total, files_done)
    chunks = max(chunks, embedded)
    pairs = ((files_done, files_total), (embedded, chunks))
    left = [(total - done) * elapsed / done for done, total in pairs if done and total > done and elapsed > 0]
    eta = f"ETA {_duration(max(left))}" if left else ("ETA -" if files_done < files_total or
                                                       embedded < chunks else "done")
    return (f"{project}: files {files_done}/{files_total}, chunks {chunks}, vectors {embedded}/{chunks}, "
            f"{_duration(elapsed)} elapsed, {eta}")


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def follow_daemon_index(client: DaemonClient, project: str, path: str) -> int:
    """Ask the running daemon to index, then show its progress until the index is complete
    (0) or cannot complete now (CodequarryError with the reasons: index_state.IndexFollower)."""
    # answered once the daemon has compared the tree with its index, with the project's status
    answer = client.post("/api/index", {"path": path, "project": project})
    first: dict[str, Any] | None = answer.get("status") if isinstance(answer, dict) else None
    follower = IndexFollower(project)
    with IndexProgress(project, enabled=sys.stderr.isatty()) as progress:
        while True:
            status = first if first and "pending_files" in first else _project_status(client, project)
            first = None
            done, failure = follower.check(status, time.monotonic())
            if status is not None and "files" in status:
                files = status["files"] + status["skipped_files"]
                progress.update(files, files + status["pending_files"],
                                round(status["vector_coverage"] * status["chunks"]), status["chunks"])
            if done:
                break
            time.sleep(0.3)
    if status is not None and "files" in status:
        print(f"{project}: {status['files']} files, {status['chunks']} chunks, "
              f"{coverage_percent(status['vector_coverage'])} with vectors (indexed by the daemon)",
              file=sys.stderr)
    if failure:
        raise CodequarryError(failure)
    return 0


def _project_status(client: DaemonClient, project: str) -> dict[str, Any] | None:
    for entry in client.get("/api/status")["projects"]:
        if entry["project"] == project:
            return dict(entry)
    return None


def print_results(answer: dict[str, Any]) -> None:
    """The compact text answer (the one an agent reads), location lines highlighted."""
    from codequarry.answer_text import render_text

    if not stdout.is_terminal:  # scripts and pipes get the text exactly, as fastcli prints it
        sys.stdout.write(render_text(answer, cli=True) + "\n")
        return
    for line in render_text(answer, cli=True).split("\n"):
        located = line and not line[0].isspace() and not line.startswith(("note:", "index:", "…"))
        stdout.print(line, style="cyan" if located else None, markup=False, highlight=False,
                     soft_wrap=True)


def print_status(answer: dict[str, Any]) -> None:
    daemon = answer["daemon"]
    state = f"running (pid {daemon.get('pid')})" if daemon.get("running") else "not running"
    stdout.print(f"daemon: {state}; data: {answer['data_dir']}; config: {answer['config']}")
    if not answer["projects"]:
        stdout.print("no projects; register one with: codequarry add PATH --project ID")
        print_orphans(answer)
        return
    table = Table("project", "state", "files", "skipped", "chunks", "vectors", "pending", "last change",
                  "lag", "errors")
    for p in answer["projects"]:
        table.add_row(p["project"], p.get("state", "-"), str(p["files"]), str(p["skipped_files"]),
                      str(p["chunks"]),
                      f"{p['vector_coverage']:.1%}", str(p["pending_files"]),
                      (p["last_event_at"] or "-")[:19].replace("T", " "), f"{p['index_lag_seconds']:.1f}s",
                      "; ".join(p["errors"])[:60] or "-")
    stdout.print(table)
    for p in answer["projects"]:
        _print_skipped(p)
        _print_stuck(p)
    print_orphans(answer)


def print_orphans(answer: dict[str, Any]) -> None:
    """Indexes of projects no longer registered, with how to delete them."""
    for orphan in answer.get("orphaned", []):
        stdout.print(f"orphaned index: {orphan['project']} ({orphan['root']}, {orphan['files']} files); "
                     f"delete it with: codequarry remove --purge {orphan['project']}", markup=False)



SKIPPED_SHOWN = 10


def _print_skipped(project: dict[str, Any]) -> None:
    """Name the first skipped files of a project with their reasons, and how to list all."""
    _print_files(project, project.get("skipped_files", 0), project.get("skipped", []),
                 "skipped", "(not searchable)", "reason")


def _print_stuck(project: dict[str, Any]) -> None:
    """Name the files that keep the project's index from completing, with their errors."""
    for key, what in (("unreadable", "cannot be read (retried in the background)"),
                      ("failed", "could not be indexed (a bug, please report it)")):
        listed = project.get(key, [])
        total = project.get(f"{key}_files", len(listed))  # the list is bounded
        _print_files(project, total, listed, "", what, "error")


def _print_files(project: dict[str, Any], total: int, listed: list[dict[str, str]], kind: str,
                 what: str, why: str) -> None:
    """`P: N [kind] files what:`, then the first SKIPPED_SHOWN of `listed` with their `why`,
    and how many more there are and where to see them."""
    if not total:
        return
    name = project["project"]
    stdout.print(f"{name}: {total} {kind + ' ' if kind else ''}file{'s' if total != 1 else ''} {what}:",
                 markup=False)
    shown = listed[:SKIPPED_SHOWN]
    for entry in shown:
        stdout.print(f"  {entry['path']}: {entry[why]}", markup=False)
    if total > len(shown):
        stdout.print(f"  ... and {total - len(shown)} more; list them with: "
                     f"codequarry status --project {name} --json", markup=False)
