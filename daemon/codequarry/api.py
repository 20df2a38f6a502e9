"""What the daemon can be asked, shared by its MCP tools and its JSON routes for the CLI.

Every method validates its arguments and raises CodequarryError subclasses with a
message meant for the caller (an agent or a person); never a stack trace.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Protocol

import anyio

from codequarry import __version__
from codequarry.config import ProjectConfig, Settings
from codequarry.errors import UsageError
from codequarry.models import validate_project_id
from codequarry.registration import repository_path
from codequarry.runtime import Runtime, status_report
from codequarry.search import MODES, Mode, SearchRequest

MAX_CHANGES = 200
VERIFY_SETTLE_SECONDS = 60.0


class DaemonControl(Protocol):
    """What the API needs of the daemon (service.Daemon; the supervisor behind it)."""

    @property
    def settings(self) -> Settings: ...

    def info(self) -> dict[str, Any]: ...

    def project_states(self) -> dict[str, dict[str, Any]]: ...

    async def register(self, path: str | Path, project_id: str | None = None) -> ProjectConfig: ...

    async def purge(self, project_id: str, unregister_first: bool = False) -> bool: ...


class DaemonApi:
    def __init__(self, runtime: Runtime, daemon: DaemonControl) -> None:
        self.runtime = runtime
        self.daemon = daemon

    def health(self) -> dict[str, Any]:
        return {"pid": os.getpid(), "version": __version__, "data_dir": str(self.runtime.settings.data_dir)}

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
                                     self.daemon.info(), self.daemon.project_states())
        if project is not None:
            project_id = self.resolve_project(project)
            report["projects"] = [p for p in report["projects"] if p["project"] == project_id]
        return report

    async def index(self, path: str, project: str | None = None) -> dict[str, Any]:
        """Register a repository (persisted in the config) and start indexing it."""
        config = await self.daemon.register(repository_path(path), project)
        return await self.status(config.id)

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
