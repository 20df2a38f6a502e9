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

from codequarry.client import DaemonClient
from codequarry.errors import CodequarryError

stderr = Console(stderr=True)
# piped output is not cut to 80 columns: a table row stays on one line
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)


class IndexProgress:
    """Two bars: files checked and chunks with vectors. Silent when stderr is no TTY."""

    def __init__(self, project: str, enabled: bool = True) -> None:
        self.enabled = enabled
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


def follow_daemon_index(client: DaemonClient, project: str, path: str) -> int:
    """Ask the running daemon to index, then show its progress until the project is idle."""
    client.post("/api/index", {"path": path, "project": project})
    with IndexProgress(project, enabled=sys.stderr.isatty()) as progress:
        while True:
            status = _project_status(client, project)
            if status is not None:
                files = status["files"] + status["skipped_files"]
                progress.update(files, files + status["pending_files"],
                                round(status["vector_coverage"] * status["chunks"]), status["chunks"])
                if status["pending_files"] == 0 and status["pending_events"] == 0 and (
                        status["vector_coverage"] >= 1.0 or (status["errors"][:1] and
                        status["errors"][0].startswith("embedder"))):
                    break
            time.sleep(0.3)
    print(f"{project}: {status['files']} files, {status['chunks']} chunks, "
          f"{status['vector_coverage']:.0%} with vectors (indexed by the daemon)", file=sys.stderr)
    if status["vector_coverage"] < 1.0:
        raise CodequarryError(status["errors"][0])
    return 0


def _project_status(client: DaemonClient, project: str) -> dict[str, Any] | None:
    for entry in client.get("/api/status")["projects"]:
        if entry["project"] == project:
            return dict(entry)
    return None


def print_results(answer: dict[str, Any]) -> None:
    results = answer["results"]
    for note in answer.get("notes", []):
        stderr.print(f"[yellow]note:[/] {note}")
    if not results:
        stderr.print("no results")
    for rank, hit in enumerate(results, 1):
        symbol = f"  [bold]{hit['symbol']}[/]" if hit.get("symbol") else ""
        stdout.print(f"[cyan]{rank:>2}. {hit['project']}:{hit['path']}:{hit['start_line']}-"
                     f"{hit['end_line']}[/]{symbol}  [dim]{hit['language']} {hit['score']:.4f}[/]")
        for line in hit["snippet"].split("\n")[:6]:
            stdout.print("      " + line[:160], markup=False)
    fresh = answer["freshness"]
    if fresh["pending_files"] or fresh["vector_coverage"] < 1:
        stderr.print(f"[dim]index: {fresh['pending_files']} files pending, vectors cover "
                     f"{fresh['vector_coverage']:.0%}[/]")


def print_status(answer: dict[str, Any]) -> None:
    daemon = answer["daemon"]
    state = f"running (pid {daemon.get('pid')})" if daemon.get("running") else "not running"
    stdout.print(f"daemon: {state}; data: {answer['data_dir']}; config: {answer['config']}")
    if not answer["projects"]:
        stdout.print("no projects; register one with: codequarry add PATH --project ID")
        return
    table = Table("project", "files", "skipped", "chunks", "vectors", "pending", "last change",
                  "lag", "errors")
    for p in answer["projects"]:
        table.add_row(p["project"], str(p["files"]), str(p["skipped_files"]), str(p["chunks"]),
                      f"{p['vector_coverage']:.1%}", str(p["pending_files"]),
                      (p["last_event_at"] or "-")[:19].replace("T", " "), f"{p['index_lag_seconds']:.1f}s",
                      "; ".join(p["errors"])[:60] or "-")
    stdout.print(table)
    for p in answer["projects"]:
        _print_skipped(p)


SKIPPED_SHOWN = 10


def _print_skipped(project: dict[str, Any]) -> None:
    """Name the first skipped files of a project with their reasons, and how to list all."""
    total = project.get("skipped_files", 0)
    listed = project.get("skipped", [])
    if not total:
        return
    stdout.print(f"{project['project']}: {total} skipped file{'s' if total != 1 else ''} "
                 "(not searchable):")
    for entry in listed[:SKIPPED_SHOWN]:
        stdout.print(f"  {entry['path']}: {entry['reason']}", markup=False)
    if total > min(len(listed), SKIPPED_SHOWN):
        stdout.print(f"  ... and {total - min(len(listed), SKIPPED_SHOWN)} more; list them with: "
                     f"codequarry status --project {project['project']} --json", markup=False)
