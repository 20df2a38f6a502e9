"""Commands that do their work in the CLI process when no daemon is running (the CLI
holds the data dir's lock meanwhile, see cli.store_access)."""

from __future__ import annotations

import sys
import time
from typing import Any

import anyio

from codequarry.config import ProjectConfig, Settings
from codequarry.console import IndexProgress
from codequarry.embedding import Embedder
from codequarry.errors import CodequarryError, EmbedderUnavailable
from codequarry.runtime import open_runtime, status_report
from codequarry.store.db import Store

EMBEDDER_GIVE_UP_SECONDS = 60.0


def index_here(settings: Settings, config: ProjectConfig) -> int:
    """Index one project and wait until every chunk has a vector. Fails (exit code 1) when
    the embedder fails, a changed file could not be read or written, or any chunk is left
    without a vector, saying why: success means the index is complete. Runs holding the
    data dir's lock (taken here unless the caller holds it already)."""
    from codequarry.daemon_lock import IndexLock, holds

    if holds(settings.lock_path):
        return anyio.run(_index, settings, config)
    with IndexLock(settings.lock_path, "index"):
        return anyio.run(_index, settings, config)


async def _index(settings: Settings, config: ProjectConfig, embedder: Embedder | None = None) -> int:
    async with open_runtime(settings, embedder) as runtime:
        indexer = runtime.indexer
        indexer.lazy_embedder = True
        project = await indexer.add_project(config)
        started = time.monotonic()
        failure: str | None = None
        with IndexProgress(project.id, enabled=sys.stderr.isatty()) as progress:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(indexer.run)
                queued = await indexer.reconcile(project.id)
                error_since: float | None = None
                while True:
                    await anyio.sleep(0.2)
                    chunks, embedded = await project.store.vector_counts()
                    progress.update(indexer.progress.files_done, indexer.progress.files_total,
                                    embedded, chunks)
                    if indexer.idle() and indexer.embedding_settled():
                        break
                    if indexer.embedder_error:
                        error_since = error_since or time.monotonic()
                        waited = time.monotonic() - error_since
                        if indexer.idle() and (indexer.embedder_fatal or waited > EMBEDDER_GIVE_UP_SECONDS):
                            failure = indexer.embedder_error
                            break
                    else:
                        error_since = None
                tasks.cancel_scope.cancel()
        await project.store.analyze()
        chunks, embedded = await project.store.vector_counts()
        counts = await project.store.counts()
        # left pending once settled: files whose read failed (the daemon retries them)
        unread = sorted(await project.store.pending_event_paths()) if counts.pending_files else []
        errors = indexer.unreadable(config.id)  # path -> e.g. "Permission denied"
        failed = dict(indexer.failed_files.get(config.id, {}))  # writing them failed (a bug path)
    seconds = time.monotonic() - started
    print(f"{config.id}: {counts.files} files ({counts.skipped_files} skipped), {chunks} chunks, "
          f"{embedded} with vectors; {queued} changed files; {indexer.progress.embedded} embeddings "
          f"computed, {indexer.progress.reused} reused; {seconds:.1f}s", file=sys.stderr)
    if failure:
        raise EmbedderUnavailable(f"{failure}; the lexical index is complete, vectors are "
                                  "missing (run index again when the embedder is back)")
    reasons = []
    if unread:
        named = _first_three({path: errors.get(path, "see the log") for path in unread})
        reasons.append(f"{len(unread)} changed files could not be read ({named})")
    if failed:
        reasons.append(f"{len(failed)} files could not be indexed ({_first_three(failed)}; a bug, "
                       "please report it)")
    if reasons:
        raise CodequarryError("; ".join(reasons) + "; run index again")
    if embedded < chunks:  # settled, yet not complete: never report that as done
        reason = indexer.embedding_failures.get(config.id, "no embedding failed: a bug, please report it")
        raise CodequarryError(f"{chunks - embedded} of {chunks} chunks have no vector ({reason}); the "
                              "lexical index is complete (run index again to retry them)")
    return 0


def status_here(settings: Settings) -> dict[str, Any]:
    async def run() -> dict[str, Any]:
        store = await Store.open(settings)
        try:
            return await status_report(settings, store)
        finally:
            await store.close()

    return anyio.run(run)


def _first_three(files: dict[str, str]) -> str:
    """'a.py: why; b.py: why; c.py: why; ...': the first three files by path."""
    named = [f"{path}: {why}" for path, why in sorted(files.items())[:3]]
    return "; ".join(named) + ("; ..." if len(files) > 3 else "")
