"""The daemon end to end: a real Daemon (in-process, real watcher, real socket, real
PostgreSQL) follows the working tree; and the `codequarry daemon` process stops cleanly
on SIGTERM and recovers from kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import tomlkit

from codequarry.client import DaemonClient
from codequarry.config import Settings, add_project, remove_project
from codequarry.daemon_lock import IndexLock
from codequarry.embedding.base import Vectors
from codequarry.errors import DaemonRunning
from codequarry.ignore import IgnoreRules
from codequarry.scan import scan_tree
from codequarry.search import SearchRequest
from codequarry.service import Daemon, prepare_socket_path, run_daemon

from .conftest import write_files
from .fakes import HashEmbedder
from .ollama_standin import OllamaStandIn

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))

REPO = {
    "pkg/geometry.py": "import math\n\n\ndef torus_volume(major, minor):\n"
                       "    return 2 * math.pi ** 2 * major * minor ** 2\n",
    "pkg/util.py": "def parse_config(path):\n    \"\"\"Read a config file.\"\"\"\n"
                   "    return open(path).read()\n",
    "README.md": "# Demo\n\nA small demo repository about shapes.\n",
}


# ---- helpers --------------------------------------------------------------------------


@pytest.fixture
def runtime_dir(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A short private XDG_RUNTIME_DIR, so the socket path stays well under sun_path."""
    path = Path(tempfile.mkdtemp(prefix="cq", dir="/tmp"))
    path.chmod(0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(path))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_files(tmp_path / "repo", REPO)


@asynccontextmanager
async def running(settings: Settings, embedder: Any = None) -> AsyncIterator[Daemon]:
    """A real daemon serving in this event loop until the block ends."""
    daemon = Daemon(settings, embedder)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.serve)
        with anyio.fail_after(60):
            await daemon.ready.wait()
        try:
            yield daemon
        finally:
            daemon.request_stop()


async def until(condition: Callable[[], Awaitable[bool]], timeout: float = 20.0, what: str = "") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds."""
    try:
        with anyio.fail_after(timeout):
            while not await condition():
                await anyio.sleep(0.05)
    except TimeoutError:
        pytest.fail(f"timed out after {timeout}s waiting for {what or condition.__name__}")


async def indexed(daemon: Daemon, project: str) -> dict[str, Any]:
    assert daemon.runtime is not None
    store = await daemon.runtime.store.project(project)
    return await store.indexed_files()


async def settled(daemon: Daemon, project: str, files: set[str], timeout: float = 30.0) -> None:
    """Wait until the store holds exactly `files` and no work is pending or unembedded."""
    assert daemon.runtime is not None
    indexer = daemon.runtime.indexer

    async def done() -> bool:
        if project not in indexer.projects or set(await indexed(daemon, project)) != files:
            return False
        chunks, embedded = await indexer.projects[project].store.vector_counts()
        return indexer.idle() and indexer.embedding_settled() and chunks == embedded

    await until(done, timeout, f"{project} to hold exactly {len(files)} files, fully embedded")


async def lexical_paths(daemon: Daemon, project: str, query: str) -> set[str]:
    assert daemon.runtime is not None
    response = await daemon.runtime.searcher.search(
        SearchRequest(query, (project,), "lexical", limit=50), daemon.runtime.indexer.model_id)
    return {hit.path for hit in response.results}


def tree_files(root: Path) -> set[str]:
    return {f.path for f in scan_tree(root, IgnoreRules(root, [], []), 1_000_000)}


# ---- following the working tree --------------------------------------------------------


async def test_created_modified_and_deleted_files_become_searchable_and_unsearchable(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    client = DaemonClient(settings.socket_path)

    def api_search(query: str) -> set[str]:
        answer = client.post("/api/search", {"query": query, "projects": ["demo"], "mode": "lexical"})
        return {hit["path"] for hit in answer["results"]}

    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        new = repo / "pkg" / "fresh.py"
        new.write_text("def zebraquartz_handler():\n    return 'zebraquartz'\n")

        async def searchable() -> bool:
            return "pkg/fresh.py" in await anyio.to_thread.run_sync(api_search, "zebraquartz_handler")

        await until(searchable, what="the created file to be searchable over the socket")

        new.write_text("def marmalade_kettle():\n    return 'marmalade'\n")

        async def modified() -> bool:
            return ("pkg/fresh.py" in await lexical_paths(daemon, "demo", "marmalade_kettle")
                    and not await lexical_paths(daemon, "demo", "zebraquartz_handler"))

        await until(modified, what="the edit to replace the old content")

        new.unlink()

        async def deleted() -> bool:
            return not await lexical_paths(daemon, "demo", "marmalade_kettle")

        await until(deleted, what="the deleted file to disappear from search")
        await settled(daemon, "demo", set(REPO))


async def test_a_rename_is_a_delete_plus_create_and_embeds_nothing_new(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        await settled(daemon, "demo", set(REPO))
        store = daemon.runtime.indexer.projects["demo"].store
        embeddings_before = await daemon.runtime.store.embeddings_computed()
        texts_before = len(hash_embedder.embedded_texts)
        chunks_before, _ = await store.vector_counts()

        (repo / "pkg" / "util.py").rename(repo / "pkg" / "helpers.py")
        await settled(daemon, "demo", set(REPO) - {"pkg/util.py"} | {"pkg/helpers.py"})

        assert await lexical_paths(daemon, "demo", "parse_config") == {"pkg/helpers.py"}
        assert await daemon.runtime.store.embeddings_computed() == embeddings_before
        assert len(hash_embedder.embedded_texts) == texts_before
        assert await store.vector_counts() == (chunks_before, chunks_before)
        kinds = {(e.path, str(e.kind)) for e in await store.recent_changes(20)}
        assert {("pkg/util.py", "deleted"), ("pkg/helpers.py", "created")} <= kinds


async def test_every_change_is_persisted_in_change_events_and_marked_processed(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        await settled(daemon, "demo", set(REPO))
        store = daemon.runtime.indexer.projects["demo"].store
        (repo / "added.py").write_text("def added():\n    return 1\n")
        await settled(daemon, "demo", set(REPO) | {"added.py"})
        (repo / "pkg" / "geometry.py").write_text("def sphere_volume(r):\n    return 4 / 3 * r ** 3\n")
        await until(lambda: _has_event(store, "pkg/geometry.py", "modified"), what="the modify event")
        (repo / "README.md").unlink()
        await settled(daemon, "demo", set(REPO) - {"README.md"} | {"added.py"})

        async def all_processed() -> bool:
            return all(e.processed_at is not None for e in await store.recent_changes(100))

        await until(all_processed, what="every change event to be processed")
        events = await store.recent_changes(100)
        seen = {(e.path, str(e.kind)) for e in events}
        assert {("added.py", "created"), ("pkg/geometry.py", "modified"), ("README.md", "deleted")} <= seen
        assert all(e.error is None and e.processed_at >= e.detected_at for e in events)


async def _has_event(store: Any, path: str, kind: str) -> bool:
    return any(e.path == path and str(e.kind) == kind for e in await store.recent_changes(100))


async def test_a_burst_of_2000_new_files_ends_with_exactly_2000_files_indexed_within_a_minute(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    root = write_files(tmp_path / "burst", {"seed.py": "SEED = 1\n"})
    settings = make_settings([{"id": "burst", "path": str(root)}])
    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        await settled(daemon, "burst", {"seed.py"})  # indexed: the watcher is live
        started = time.monotonic()
        names = set()
        for i in range(2000):
            name = f"d{i % 20:02d}/m{i:04d}.py"
            path = root / name
            path.parent.mkdir(exist_ok=True)
            path.write_text(f"def burst_function_{i}(value):\n    return value + {i}\n")
            names.add(name)
        (root / "seed.py").unlink()
        await settled(daemon, "burst", names, timeout=90)
        elapsed = time.monotonic() - started
        counts = await daemon.runtime.indexer.projects["burst"].store.counts()
        assert (counts.files, counts.pending_files, counts.pending_events) == (2000, 0, 0)
        assert elapsed < 60, f"indexing a burst of 2000 files took {elapsed:.1f}s"
        print(f"burst of 2000 files indexed and embedded in {elapsed:.1f}s")
