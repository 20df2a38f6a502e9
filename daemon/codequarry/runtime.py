"""The parts every long operation needs, opened and closed together: store, embedder,
chunker, indexer and searcher. Used by the daemon and by one-shot CLI commands."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio

from codequarry.chunking import Budget, Chunker
from codequarry.config import Settings
from codequarry.embedding import Embedder, create_embedder
from codequarry.index_state import EMBEDDER, FAILED, MISSING, UNREADABLE
from codequarry.indexer import Indexer
from codequarry.models import ProjectStatus, floor4
from codequarry.search import Searcher
from codequarry.search_cache import CachedSearcher
from codequarry.store.db import Store

SKIPPED_LISTED = 200  # skipped files named per project in status; "skipped_files" counts all


@dataclass
class Runtime:
    settings: Settings
    store: Store
    embedder: Embedder
    indexer: Indexer
    searcher: Searcher


def chunk_budget(settings: Settings, embedder: Embedder) -> Budget:
    # Measured on docstring queries over stdlib code (bench/): smaller chunks rank the
    # right function higher with MiniLM; 128 tokens is also its training length.
    max_tokens = settings.config.index.chunk_tokens or (128 if embedder.max_tokens <= 256 else 256)
    return Budget(max_tokens=max_tokens, min_tokens=max(16, max_tokens // 5))


@asynccontextmanager
async def open_runtime(settings: Settings, embedder: Embedder | None = None) -> AsyncIterator[Runtime]:
    """`embedder` replaces the configured one (tests use a deterministic fake)."""
    store = await Store.open(settings)
    configured = settings.config.embedder.model_dump(mode="json") if embedder is None else None
    embedder = embedder or create_embedder(settings.config.embedder)
    # answers are kept until the index changes; identical concurrent searches share a run
    searcher = CachedSearcher(store, embedder)
    try:
        indexer = Indexer(settings, store, embedder, Chunker(chunk_budget(settings, embedder)), configured)
        yield Runtime(settings, store, embedder, indexer, searcher)
    finally:
        with anyio.CancelScope(shield=True):  # stop the embedded PostgreSQL even when cancelled
            await searcher.aclose()
            await embedder.aclose()
            await store.close()


async def status_report(settings: Settings, store: Store, indexer: Indexer | None = None,
                        daemon: dict[str, Any] | None = None,
                        states: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """What `codequarry status --json` prints: {"projects": one entry per registered
    project, with "state" (starting|scanning|watching|retrying|stopped) and "error" (why it
    is retrying, else None), "unreadable" and "failed" (files whose read failed, retried in
    the background, and files whose writing failed: [{"path", "error"}], the first 200;
    "unreadable_files" counts the former, they are among "pending_files"); "orphaned":
    indexes of projects no longer registered (deleted by `codequarry remove --purge ID`),
    each {"project", "root", "files", "chunks"};
    "daemon", "data_dir", "config"}. `states` comes from the daemon's supervisor."""
    indexed = await store.indexed_projects()
    registered = {p.id: str(p.path) for p in settings.config.projects}
    projects = []
    for project_id in sorted(registered):
        root = registered[project_id]
        runner = (states or {}).get(project_id) or {"state": "stopped", "error": None, "retry_at": None}
        lifecycle = {"registered": True, "state": runner["state"], "error": runner["error"],
                     "retry_at": runner.get("retry_at")}
        if project_id not in indexed:
            errors = ["not indexed yet"] + ([runner["error"]] if runner["error"] else [])
            projects.append(ProjectStatus(project_id, root, 0, 0, 0, 0.0, 0, 0, None, None, 0.0,
                                          errors, None).to_json()
                            | lifecycle | {"scanning": runner["state"] in ("starting", "scanning")})
            continue
        counts = await (await store.project(project_id)).counts()
        queued = indexer.pending_files(project_id) if indexer else 0
        scanning = bool(indexer and daemon and indexer.scanning(project_id))
        lag = 0.0
        if counts.oldest_pending_at is not None:
            lag = (datetime.now(UTC) - counts.oldest_pending_at).total_seconds()
        errors = list(counts.recent_errors)
        if runner["error"]:
            errors.insert(0, f"{runner['state']}: {runner['error']}")
        if not Path(root).is_dir():
            errors.insert(0, f"{MISSING}{root}")
        failed = indexer.embedding_failures.get(project_id) if indexer else None
        if indexer and indexer.embedder_error:
            errors.insert(0, f"{EMBEDDER}{indexer.embedder_error}")
        elif failed and counts.embedded < counts.chunks:
            # given up until the next start: coverage stays below 100%, so say why
            errors.insert(0, f"{EMBEDDER}some chunks cannot be embedded: {failed}")
        unreadable = indexer.unreadable(project_id) if indexer else {}
        failed_files = dict(indexer.failed_files.get(project_id, {})) if indexer else {}
        if failed_files:
            errors.insert(0, f"{FAILED}{len(failed_files)} files could not be indexed (a bug, please "
                             f"report it): {_some(failed_files)}")
        if unreadable:
            errors.insert(0, f"{UNREADABLE}{len(unreadable)} files cannot be read (retried in the "
                             f"background): {_some(unreadable)}")
        pending = max(counts.pending_files, queued, int(scanning))
        if unreadable and indexer:  # exactly: the unreadable files plus the others pending
            others = set(await (await store.project(project_id)).pending_event_paths())
            others |= indexer.queue.paths(project_id)
            pending = max(len(unreadable) + len(others - set(unreadable)), int(scanning))
        status = ProjectStatus(
            project_id, root, counts.files, counts.skipped_files, counts.chunks,
            counts.vector_coverage, pending, counts.pending_events,
            counts.last_event_at, counts.last_indexed_at, lag, errors, counts.model_id,
            watching=bool(indexer and project_id in indexer.projects and daemon))
        extra: dict[str, Any] = {"scanning": scanning, "unreadable_files": len(unreadable),
                                 "unreadable": _listed(unreadable), "failed": _listed(failed_files)}
        if counts.next_model_id:  # blue/green: search uses model_id until this one covers all
            extra["reembedding"] = {"model_id": counts.next_model_id,
                                    "coverage": floor4(counts.next_embedded / max(counts.chunks, 1))}
        skipped, _ = await (await store.project(project_id)).skipped_files(SKIPPED_LISTED)
        extra["skipped"] = [{"path": p, "reason": r} for p, r in skipped]
        projects.append(status.to_json() | lifecycle | extra)
    orphaned = []
    for project_id in sorted(set(indexed) - set(registered)):
        counts = await (await store.project(project_id)).counts()
        orphaned.append({"project": project_id, "root": indexed[project_id], "files": counts.files,
                         "chunks": counts.chunks})
    return {"projects": projects, "orphaned": orphaned, "daemon": daemon or {"running": False},
            "data_dir": str(settings.data_dir), "config": str(settings.config_path)}


def _some(files: dict[str, str], shown: int = 3) -> str:
    """'a.py (Input/output error), b.py (...), ...': the first `shown` files by path."""
    named = [f"{path} ({why})" for path, why in sorted(files.items())[:shown]]
    return ", ".join(named) + (", ..." if len(files) > shown else "")


def _listed(files: dict[str, str]) -> list[dict[str, str]]:
    return [{"path": path, "error": why} for path, why in sorted(files.items())[:SKIPPED_LISTED]]
