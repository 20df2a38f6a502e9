"""What the daemon can be asked, shared by its MCP tools and its JSON routes for the CLI.

Every method validates its arguments and raises CodequarryError subclasses with a
message meant for the caller (an agent or a person); never a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codequarry import __version__
from codequarry.config import add_project, load_settings
from codequarry.errors import UsageError
from codequarry.models import validate_project_id
from codequarry.runtime import Runtime, status_report
from codequarry.search import SearchRequest

if TYPE_CHECKING:
    from codequarry.service import Daemon

MAX_CHANGES = 200


class DaemonApi:
    def __init__(self, runtime: Runtime, daemon: Daemon) -> None:
        self.runtime = runtime
        self.daemon = daemon

    def health(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": __version__, "data_dir": str(self.runtime.settings.data_dir),
                **_search_cache_stats(self.runtime.searcher)}

    async def search(self, query: str, projects: list[str] | None = None, mode: str = "hybrid",
                     languages: list[str] | None = None, path_glob: str | None = None,
                     limit: int = 10, cwd: str | None = None) -> dict[str, Any]:
        chosen = [self.resolve_project(p) for p in projects or []]
        if not chosen and cwd:
            chosen = [p for p in [self.project_containing(cwd)] if p]
        request = SearchRequest(query, tuple(chosen), mode,  # type: ignore[arg-type]
                                tuple(languages or ()), path_glob or None, limit).validate()
        response = await self.runtime.searcher.search(request, self.runtime.indexer.model_id)
        return response.to_json()

    async def status(self, project: str | None = None) -> dict[str, Any]:
        report = await status_report(self.daemon.settings, self.runtime.store, self.runtime.indexer,
                                     self.daemon.info())
        if project is not None:
            project_id = self.resolve_project(project)
            report["projects"] = [p for p in report["projects"] if p["project"] == project_id]
        return report

    async def index(self, path: str, project: str | None = None) -> dict[str, Any]:
        """Register a repository (persisted in the config) and start indexing it."""
        from codequarry.cli import derive_project_id

        repo = Path(os.path.abspath(os.path.expanduser(path)))
        if not repo.is_dir():
            raise UsageError(f"not a directory: {repo}")
        project_id = validate_project_id(project) if project else derive_project_id(repo)
        settings = self.daemon.settings
        add_project(settings.config_path, project_id, repo)
        await self.daemon.apply_settings(load_settings(settings.config_path))  # not waiting for the watcher
        return await self.status(project_id)

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


def _search_cache_stats(searcher: object) -> dict[str, Any]:
    """Issue 13: the result cache's counters (hit rate), when the searcher has a cache."""
    stats = getattr(searcher, "stats", None)
    return {"search_cache": stats()} if callable(stats) else {}
