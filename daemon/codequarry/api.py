"""What the daemon can be asked, shared by its MCP tools and its JSON routes for the CLI.

Every method validates its arguments and raises CodequarryError subclasses with a
message meant for the caller (an agent or a person); never a stack trace.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio

from codequarry import __version__, paths
from codequarry.code_tools import CodeTools
from codequarry.config import ProjectConfig, Settings
from codequarry.errors import UsageError
from codequarry.index_state import project_state
from codequarry.models import validate_project_id
from codequarry.runtime import Runtime, status_report
from codequarry.search import MODES, Mode, SearchRequest, filters_of

MAX_CHANGES = 200
# a search needing a query vector right after a start waits this long for the model to load
EMBEDDER_WAIT_SECONDS = 10.0
VERIFY_SETTLE_SECONDS = 60.0
# how long `index` waits for its reconcile's walk (the rescan worker may be busy with
# another project); then it answers from a walk of its own
RECONCILE_WAIT_SECONDS = 30.0


class DaemonControl(Protocol):
    """What the API needs of the daemon (service.Daemon; the supervisor behind it)."""

    @property
    def settings(self) -> Settings: ...

    def info(self) -> dict[str, Any]: ...

    def project_states(self) -> dict[str, dict[str, Any]]: ...

    async def register(self, path: str | Path, project_id: str | None = None) -> ProjectConfig: ...

    async def purge(self, project_id: str, unregister_first: bool = False) -> bool: ...


WAIT_LEVELS = ("none", "lexical", "complete")
WAIT_POLL_SECONDS = 0.5
WAIT_LIMIT_SECONDS = 3600.0
# a cold index on 2 cores with the local model: ~50 chunks/s, ~600 bytes per chunk (bench/)
CHUNKS_PER_SECOND = 50.0
BYTES_PER_CHUNK = 600.0

ProgressCallback = Callable[[float, float | None, str], Awaitable[None]]


def estimate_seconds(files: int, size: int) -> float:
    """A rough duration of a cold index of `files` files of `size` bytes in total."""
    return round(size / BYTES_PER_CHUNK / CHUNKS_PER_SECOND + files * 0.002, 1)


class DaemonApi:
    def __init__(self, runtime: Runtime, daemon: DaemonControl) -> None:
        self.runtime = runtime
        self.daemon = daemon

    def health(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": __version__, "data_dir": str(self.runtime.settings.data_dir),
                **_search_cache_stats(self.runtime.searcher)}

    async def search(self, query: str, projects: list[str] | None = None, mode: str = "hybrid",
                     languages: list[str] | None = None, path_glob: str | None = None,
                     limit: int = 10, cwd: str | None = None, detail: str = "snippet",
                     offset: int = 0, max_tokens: int | None = None) -> dict[str, Any]:
        chosen = [self.resolve_project(p) for p in projects or []]
        if not chosen and cwd:
            chosen = [p for p in [self.project_containing(cwd)] if p]
        request = SearchRequest(query, tuple(chosen), mode,  # type: ignore[arg-type]
                                tuple(languages or ()), path_glob or None, limit,
                                detail, offset, max_tokens).validate()  # type: ignore[arg-type]
        if request.mode != "lexical":
            with anyio.move_on_after(EMBEDDER_WAIT_SECONDS):  # else: lexical, with a note
                await self.runtime.indexer.wait_for_embedder()
        response = await self.runtime.searcher.search(request, self.runtime.indexer.model_id)
        return response.to_json()

    async def status(self, project: str | None = None) -> dict[str, Any]:
        report = await status_report(self.daemon.settings, self.runtime.store, self.runtime.indexer,
                                     self.daemon.info(), self.daemon.project_states())
        if project is not None:
            project_id = self.resolve_project(project)
            report["projects"] = [p for p in report["projects"] if p["project"] == project_id]
        return report

    async def index(self, path: str, project: str | None = None, *, base: str | None = None,
                    allowed_roots: list[Path] | None = None, wait: str = "none",
                    on_progress: ProgressCallback | None = None) -> dict[str, Any]:
        """Register a repository (persisted in the config) and reconcile it with its tree
        now (a stat walk compared with the store; unchanged files are not read).

        `path` relative: to `base` (the MCP client's root or working directory); without a
        base a relative path is refused, never read against the daemon's own directory.
        `allowed_roots` (MCP callers): refuse anything outside them, system directories and
        dot-directories (paths.mcp_refusal); None (the CLI, run by the user): any directory.
        `wait`: "none" returns at once; "lexical" when every file is chunked (searchable by
        words); "complete" when every chunk also has its vector. `on_progress(done, total,
        message)` is called about every half second while waiting.
        Returns {project, path, state, files_to_index, bytes_to_index, estimated_seconds,
        waited_for, status}. Raises UsageError for a bad path, id or wait level.
        """
        if wait not in WAIT_LEVELS:
            raise UsageError(f"wait must be one of {', '.join(WAIT_LEVELS)}, got {wait!r}")
        expanded = os.path.expanduser(path)
        if not os.path.isabs(expanded):
            if not base:
                raise UsageError(f"relative path {path!r} needs the client's working directory or "
                                 "roots; give an absolute path")
            expanded = os.path.join(base, expanded)
        repo = Path(os.path.abspath(expanded))
        if not repo.is_dir():
            raise UsageError(f"not a directory: {repo}")
        if allowed_roots is not None:
            refusal = paths.mcp_refusal(repo, allowed_roots)
            if refusal:
                raise UsageError(refusal)
        registered = await self.daemon.register(repo, project)  # applied now, not by the watcher
        project_id = registered.id
        # the watcher may not have seen (or delivered) every change yet: compare the tree
        # with the store now, so the answer (and `wait`) is about the tree as it is
        scan = None
        with anyio.move_on_after(RECONCILE_WAIT_SECONDS):
            scan = await self.runtime.indexer.fresh_scan(project_id)
        if scan is not None:
            files, size = scan.files, scan.bytes
        else:
            files, size = await anyio.to_thread.run_sync(self._indexable, registered)
        answer: dict[str, Any] = {
            "project": project_id, "path": str(registered.path), "files_to_index": files,
            "bytes_to_index": size, "estimated_seconds": estimate_seconds(files, size),
            "waited_for": wait}
        entry = await self._wait(project_id, wait, on_progress)
        answer["state"] = project_state(entry)
        answer["status"] = entry
        return answer

    def _indexable(self, project: ProjectConfig) -> tuple[int, int]:
        """Files and bytes a full index of `project` would read (ignore rules applied)."""
        from codequarry.ignore import IgnoreRules
        from codequarry.scan import scan_tree

        config = self.daemon.settings.config
        rules = IgnoreRules(project.path, [*config.index.exclude, *project.exclude], project.include)
        files = size = 0
        for stat in scan_tree(project.path, rules, config.index.max_file_bytes):
            if stat.skip_reason is None:
                files += 1
                size += stat.size
        return files, size

    async def _wait(self, project_id: str, wait: str, on_progress: ProgressCallback | None) -> dict[str, Any]:
        """Poll the project's status until `wait` is reached (or WAIT_LIMIT_SECONDS pass)."""
        deadline = time.monotonic() + WAIT_LIMIT_SECONDS
        done_before = 0.0
        while True:
            entries = (await self.status(project_id))["projects"]
            entry: dict[str, Any] = entries[0] if entries else {"project": project_id}
            state = project_state(entry)
            reached = (wait == "none" or state in ("complete", "error", "retrying")
                       or (wait == "lexical" and state == "embedding"))
            if on_progress is not None and wait != "none":
                files, pending = int(entry.get("files", 0)), int(entry.get("pending_files", 0))
                chunks = int(entry.get("chunks", 0))
                embedded = round(float(entry.get("vector_coverage", 0.0)) * chunks)
                done, total = float(files), float(files + pending)
                if wait == "complete":
                    done, total = done + embedded, total + chunks
                done_before = max(done_before, done)  # progress never goes back
                await on_progress(done_before, max(total, done_before) or None,
                                  f"{state}: {files} files, {chunks} chunks, "
                                  f"{float(entry.get('vector_coverage', 0.0)):.0%} with vectors")
            if reached or time.monotonic() > deadline:
                return entry
            await anyio.sleep(WAIT_POLL_SECONDS)

    async def list_projects(self) -> dict[str, Any]:
        """Every registered or indexed project: {projects: [{project, path, state, files,
        chunks, vector_coverage, pending_files, last_indexed_change, index_lag_seconds,
        errors}]}; state as in project_state."""
        report = await self.status()
        return {"projects": [
            {"project": p["project"], "path": p["path"], "state": project_state(p),
             "files": p["files"], "chunks": p["chunks"], "vector_coverage": p["vector_coverage"],
             "pending_files": p["pending_files"], "last_indexed_change": p["last_indexed_change"],
             "index_lag_seconds": p["index_lag_seconds"], "errors": p["errors"]}
            for p in report["projects"]]}

    async def purge(self, project: str, unregister: bool = False) -> dict[str, Any]:
        """Delete a project's index: {"project", "deleted": whether there was one}. A
        registered project is refused unless `unregister` (then it is unregistered first)."""
        project_id = validate_project_id(project)
        return {"project": project_id, "deleted": await self.daemon.purge(project_id, unregister)}

    async def verify(self, project: str) -> dict[str, Any]:
        """Compare a project's index with a fresh index of its tree, once the daemon has
        no work pending (waits up to a minute): {"project", "problems": [str]}."""
        from codequarry.verify import check_project

        project_id = self.resolve_project(project)
        indexer = self.runtime.indexer
        with anyio.move_on_after(VERIFY_SETTLE_SECONDS):
            while not (indexer.idle() and indexer.embedding_settled()):  # noqa: ASYNC110 (polled state)
                await anyio.sleep(0.1)
        config = self.daemon.settings.config.project(project_id)
        problems = await check_project(self.daemon.settings, config, self.runtime.store,
                                       indexer.chunker)
        return {"project": project_id, "problems": problems}

    async def evaluate(self, queries: list[dict[str, Any]], projects: list[str],
                       modes: list[str]) -> dict[str, Any]:
        """`codequarry eval` on the daemon's store: queries as in the qrels file."""
        from codequarry.evaluation import Query, Span, evaluate

        chosen: list[Mode] = [m for m in MODES if m in (modes or MODES)]
        try:
            parsed = [Query(str(q["query"]), tuple(Span(str(r["path"]), int(r["start_line"]),
                                                        int(r["end_line"])) for r in q["relevant"]))
                      for q in queries]
        except (KeyError, TypeError, ValueError) as exc:
            raise UsageError(f"malformed queries: {type(exc).__name__}: {exc}") from None
        if chosen != ["lexical"]:
            with anyio.move_on_after(EMBEDDER_WAIT_SECONDS):
                await self.runtime.indexer.wait_for_embedder()
        model_id = self.runtime.indexer.model_id
        if chosen != ["lexical"] and model_id is None:
            raise UsageError("semantic modes need the embedder, which is not ready: "
                             f"{self.runtime.indexer.embedder_error or 'still loading'}")
        return await evaluate(self.runtime.searcher, model_id, parsed,
                              [self.resolve_project(p) for p in projects], chosen)

    async def recent_changes(self, project: str | None = None, limit: int = 20) -> dict[str, Any]:
        if not 1 <= limit <= MAX_CHANGES:
            raise UsageError(f"limit must be between 1 and {MAX_CHANGES}, got {limit}")
        projects = [self.resolve_project(project)] if project else list(
            await self.runtime.store.indexed_projects())
        events = []
        for project_id in projects:
            store = await self.runtime.store.project(project_id)
            events.extend(await store.recent_changes(limit))
        events.sort(key=lambda e: e.detected_at, reverse=True)
        return {"changes": [
            {"project": e.project, "path": e.path, "kind": str(e.kind),
             "detected_at": e.detected_at.isoformat(),
             "processed_at": e.processed_at.isoformat() if e.processed_at else None,
             "error": e.error, "previous_path": e.previous_path} for e in events[:limit]]}

    def resolve_project(self, project: str) -> str:
        """A project id, or a path inside a registered project, to a project id."""
        if "/" in project or project.startswith((".", "~")):
            found = self.project_containing(project)
            if found is None:
                raise UsageError(f"path {project!r} is outside every registered project")
            return found
        validate_project_id(project)
        self.daemon.settings.config.project(project)  # UnknownProject if not registered
        return project

    def project_containing(self, path: str) -> str | None:
        target = Path(os.path.abspath(os.path.expanduser(path)))
        best: tuple[int, str] | None = None
        for project in self.daemon.settings.config.projects:
            if target == project.path or target.is_relative_to(project.path):
                depth = len(project.path.parts)
                if best is None or depth > best[0]:
                    best = (depth, project.id)
        return best[1] if best else None

    def projects_for_root(self, root: str) -> list[str]:
        """Registered projects a client root covers: the one containing it, and those inside it."""
        target = Path(os.path.abspath(os.path.expanduser(root)))
        inside = [p.id for p in self.daemon.settings.config.projects if p.path.is_relative_to(target)]
        containing = self.project_containing(str(target))
        return sorted({*inside, *([containing] if containing else [])})

    # ---- follow-up tools (code_tools) -----------------------------------------------------

    def code_tools(self) -> CodeTools:
        return CodeTools(self.runtime.store, self.daemon.settings.config.projects)

    def _scope(self, project: str | None, cwd: str | None) -> list[str]:
        if project:
            return [self.resolve_project(project)]
        found = self.project_containing(cwd) if cwd else None
        return [found] if found else []

    async def find_symbol(self, name: str, kind: str | None = None, project: str | None = None,
                          limit: int = 10, cwd: str | None = None) -> dict[str, Any]:
        return await self.code_tools().find_symbol(name, kind or None, self._scope(project, cwd), limit)

    async def read_code(self, path: str | None = None, start_line: int | None = None,
                        end_line: int | None = None, symbol: str | None = None,
                        project: str | None = None, max_tokens: int | None = None,
                        cwd: str | None = None) -> dict[str, Any]:
        scope = self._scope(project, cwd if path and not os.path.isabs(path) else None)
        if path and not os.path.isabs(path) and cwd and not project:
            absolute = os.path.join(cwd, path)
            if os.path.exists(absolute) and self.project_containing(absolute):
                path, scope = absolute, []
        return await self.code_tools().read_code(path, start_line, end_line, symbol,
                                                 scope[0] if scope else None, max_tokens)

    async def find_references(self, name: str, project: str | None = None,
                              language: str | None = None, path_glob: str | None = None,
                              limit: int = 100, cwd: str | None = None) -> dict[str, Any]:
        return await self.code_tools().find_references(name, self._scope(project, cwd),
                                                       filters_of(language, path_glob), limit)

def _search_cache_stats(searcher: object) -> dict[str, Any]:
    """Issue 13: the result cache's counters (hit rate), when the searcher has a cache."""
    stats = getattr(searcher, "stats", None)
    return {"search_cache": stats()} if callable(stats) else {}
