"""Project registration: which directory is which project, kept in the config file.

Used by the CLI (`add`, `index`, `remove`), the daemon's API (MCP `index_repository`)
and the supervisor. Writes go through config.add_project/remove_project, which hold the
config file's edit lock, so processes registering at once never lose each other's entry.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from codequarry.config import ProjectConfig, add_project, remove_project
from codequarry.errors import UsageError
from codequarry.models import validate_project_id


def derive_project_id(path: Path) -> str:
    """A project id from a directory name: lowercase letters, digits and single hyphens,
    at most 50 characters; "project" when nothing usable is left."""
    name = re.sub(r"[^a-z0-9]+", "-", path.resolve().name.lower()).strip("-")
    return name[:50].strip("-") or "project"


def repository_path(path: str | Path) -> Path:
    """An absolute repository path (~ expanded); UsageError if it is not a directory."""
    repo = Path(os.path.abspath(os.path.expanduser(str(path))))
    if not repo.is_dir():
        raise UsageError(f"not a directory: {repo}")
    return repo


def register(config_path: Path, path: str | Path, project_id: str | None = None,
             include: list[str] | None = None, exclude: list[str] | None = None) -> ProjectConfig:
    """Register `path` as a project (id derived from the directory name unless given).
    Idempotent for the same id and path; UsageError for an id taken by another path."""
    repo = repository_path(path)
    chosen = validate_project_id(project_id) if project_id else derive_project_id(repo)
    return add_project(config_path, chosen, repo, include, exclude)


def unregister(config_path: Path, project_id: str) -> ProjectConfig:
    """Remove a project from the config file; UnknownProject if it is not registered.
    Its indexed data stays (an orphaned index until `remove --purge`)."""
    return remove_project(config_path, project_id)
