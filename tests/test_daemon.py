"""The daemon end to end: a real Daemon (in-process, real watcher, real socket, real
PostgreSQL) follows the working tree; and the `codequarry daemon` process stops cleanly
on SIGTERM and recovers from kill -9."""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import anyio
import psutil
import pytest
import tomlkit

from codequarry.api import DaemonApi
from codequarry.client import DaemonClient
from codequarry.config import Settings, add_project, remove_project
from codequarry.daemon_lock import IndexLock
from codequarry.errors import CodequarryError, DaemonRunning
from codequarry.ignore import IgnoreRules
from codequarry.scan import scan_tree
from codequarry.search import SearchRequest
from codequarry.service import Daemon, prepare_socket_path, run_daemon

from .conftest import SlowEmbedder, until, write_files
from .conftest import running_daemon as running
from .fakes import HashEmbedder
from .ollama_standin import OllamaStandIn
from .test_mcp import sdk_notification_stream, uds_session

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
def repo(tmp_path: Path) -> Path:
    return write_files(tmp_path / "repo", REPO)


async def indexed(daemon: Daemon, project: str) -> dict[str, Any]:
    assert daemon.runtime is not None
    store = await daemon.runtime.store.project(project)
    return await store.indexed_files()


async def settled(daemon: Daemon, project: str, files: set[str], seconds: float = 30.0) -> None:
    """Wait until the store holds exactly `files` and no work is pending or unembedded."""
    assert daemon.runtime is not None
    indexer = daemon.runtime.indexer

    async def done() -> bool:
        if project not in indexer.projects or set(await indexed(daemon, project)) != files:
            return False
        chunks, embedded = await indexer.projects[project].store.vector_counts()
        return indexer.idle() and indexer.embedding_settled() and chunks == embedded

    await until(done, seconds, f"{project} to hold exactly {len(files)} files, fully embedded")


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


async def test_a_rename_is_recorded_as_a_rename_and_embeds_nothing_new(
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
        events = {(e.path, str(e.kind), e.previous_path) for e in await store.recent_changes(20)}
        assert ("pkg/helpers.py", "renamed", "pkg/util.py") in events
        assert ("pkg/util.py", "deleted", None) in events


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


async def _watching(daemon: Daemon, project: str) -> bool:
    return project in daemon.info()["watching"]


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
        await settled(daemon, "burst", names, 90)
        elapsed = time.monotonic() - started
        counts = await daemon.runtime.indexer.projects["burst"].store.counts()
        assert (counts.files, counts.pending_files, counts.pending_events) == (2000, 0, 0)
        assert elapsed < 60, f"indexing a burst of 2000 files took {elapsed:.1f}s"


async def test_a_live_edit_is_searchable_and_embedded_before_the_backlog_finishes(
        make_settings: Callable[..., Settings], tmp_path: Path, runtime_dir: Path) -> None:
    total = 800
    root = write_files(tmp_path / "big", {
        f"src/m{i:04d}.py": f"def backlog_item_{i}(x):\n    return x * {i}\n" for i in range(total)})
    settings = make_settings([{"id": "big", "path": str(root)}])
    embedder = SlowEmbedder(delay=0.05)
    async with running(settings, embedder) as daemon:
        assert daemon.runtime is not None
        indexer = daemon.runtime.indexer

        async def backlog_queued() -> bool:
            return indexer.progress.files_total >= total

        await until(backlog_queued, what="the initial scan to queue the backlog")
        (root / "live.py").write_text("def pelican_orbit_live():\n    return 'pelican'\n")
        store = indexer.projects["big"].store

        backlog_files_when_live_searchable: list[int] = []

        async def live_searchable() -> bool:
            if await lexical_paths(daemon, "big", "pelican_orbit_live") != {"live.py"}:
                return False
            backlog_files_when_live_searchable.append(len(await store.indexed_files()) - 1)
            return True

        async def live_embedded() -> bool:
            chunks = await store.file_chunks("live.py")
            return bool(chunks) and all(has_vector for *_, has_vector in chunks)

        await until(live_searchable, 30, "the live edit to be searchable")
        await until(live_embedded, 30, "the live edit to be embedded")
        chunks, embedded = await store.vector_counts()
        assert backlog_files_when_live_searchable[0] < total, "the live edit waited for the chunk backlog"
        assert embedded < chunks, "the live edit waited for the embedding backlog"
        await settled(daemon, "big", {f"src/m{i:04d}.py" for i in range(total)} | {"live.py"}, 60)


async def test_restart_reconciles_changes_made_while_stopped_without_re_embedding_unchanged_files(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
    assert not settings.socket_path.exists()

    (repo / "pkg" / "geometry.py").write_text("def sphere_volume(radius):\n    return 4.19 * radius ** 3\n")
    (repo / "pkg" / "added.py").write_text("def added_while_stopped():\n    return 'offline'\n")
    (repo / "README.md").unlink()
    texts_before = len(hash_embedder.embedded_texts)
    restarted = datetime.now(UTC)

    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        expected = tree_files(repo)
        assert expected == {"pkg/geometry.py", "pkg/util.py", "pkg/added.py"}
        await settled(daemon, "demo", expected)
        store = daemon.runtime.indexer.projects["demo"].store
        on_disk = {f.path: (f.size, f.mtime_ns) for f in scan_tree(repo, IgnoreRules(repo, [], []), 10**6)}
        assert {p: (f.size, f.mtime_ns) for p, f in (await store.indexed_files()).items()} == on_disk
        assert await lexical_paths(daemon, "demo", "sphere_volume") == {"pkg/geometry.py"}
        assert not await lexical_paths(daemon, "demo", "torus")  # only in the old content
        new_texts = hash_embedder.embedded_texts[texts_before:]
        assert new_texts, "the modified and added files were not embedded"
        assert not any("parse_config" in text for text in new_texts), "an unchanged file was re-embedded"
        since_restart = {e.path for e in await store.recent_changes(100) if e.detected_at >= restarted}
        assert since_restart == {"pkg/geometry.py", "pkg/added.py", "README.md"}


async def test_a_restarted_daemon_with_nothing_to_embed_still_answers_by_meaning(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        # a search asked while the model may still be loading waits for it (bounded)
        # rather than answering by words only
        answer = await DaemonApi(daemon.runtime, daemon).search("parse config file", ["demo"], "semantic")
        assert answer["results"]
        assert not answer["notes"]
        assert daemon.runtime.indexer.model_id is not None


async def test_config_edits_start_and_stop_watching_projects_without_a_restart(
        make_settings: Callable[..., Settings], repo: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "alpha", "path": str(repo)}])
    other = write_files(tmp_path / "other", {"lib/tide.py": "def tide_tables():\n    return []\n"})
    async with running(settings, hash_embedder) as daemon:
        assert daemon.runtime is not None
        await settled(daemon, "alpha", set(REPO))

        add_project(settings.config_path, "beta", other)
        await until(lambda: _watching(daemon, "beta"), what="the daemon to pick up the new project")
        await settled(daemon, "beta", {"lib/tide.py"})
        (other / "lib" / "moon.py").write_text("def moon_phase():\n    return 'full'\n")
        await settled(daemon, "beta", {"lib/tide.py", "lib/moon.py"})

        remove_project(settings.config_path, "beta")

        async def unwatched() -> bool:
            return not await _watching(daemon, "beta")

        await until(unwatched, what="the daemon to stop watching the removed project")
        (other / "lib" / "late.py").write_text("def too_late():\n    return None\n")
        (repo / "later.py").write_text("def still_watched():\n    return True\n")
        await settled(daemon, "alpha", set(REPO) | {"later.py"})
        assert set(await indexed(daemon, "beta")) == {"lib/tide.py", "lib/moon.py"}  # data kept
        status = await anyio.to_thread.run_sync(DaemonClient(settings.socket_path).get, "/api/status")
        assert "beta" not in {p["project"] for p in status["projects"]}  # not shown as registered
        assert status["orphaned"] == [{"project": "beta", "root": str(other), "files": 2, "chunks": 2}]


async def test_embedder_outage_keeps_lexical_search_and_vectors_fill_in_after_recovery(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path) -> None:
    with OllamaStandIn() as ollama:
        ollama.mode = "error500"
        settings = make_settings([{"id": "demo", "path": str(repo)}], embedder={
            "kind": "ollama", "url": ollama.url, "max_retries": 0, "timeout_seconds": 10})
        client = DaemonClient(settings.socket_path)
        async with running(settings) as daemon:
            assert daemon.runtime is not None

            async def status() -> dict[str, Any]:
                answer: dict[str, Any] = await anyio.to_thread.run_sync(client.get, "/api/status")
                return answer

            async def outage_reported() -> bool:
                project = (await status())["projects"][0]
                return project["files"] == len(REPO) and any(
                    e.startswith("embedder:") and "500" in e for e in project["errors"])

            await until(outage_reported, what="the embedder error in the status")
            assert (await status())["daemon"]["embedder_error"]
            assert await lexical_paths(daemon, "demo", "torus_volume") == {"pkg/geometry.py"}
            hybrid = await anyio.to_thread.run_sync(client.post, "/api/search", {"query": "torus_volume"})
            assert [hit["path"] for hit in hybrid["results"]][:1] == ["pkg/geometry.py"]
            assert hybrid["notes"]

            ollama.mode = "ok"

            async def recovered() -> bool:
                project = (await status())["projects"][0]
                return project["vector_coverage"] == 1.0 and not project["errors"]

            await until(recovered, 40, "vector coverage 1.0 after the embedder came back")
            assert daemon.info()["embedder_error"] is None
            semantic = await anyio.to_thread.run_sync(
                client.post, "/api/search", {"query": "torus volume", "mode": "semantic"})
            assert semantic["results"]
            assert semantic["freshness"]["vector_coverage"] == 1.0


async def test_index_following_the_daemon_fails_naming_a_file_it_cannot_read_which_the_daemon_retries(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path, hash_embedder: HashEmbedder,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A file whose read fails keeps its change pending: `codequarry index` following the
    daemon (the full CLI and the fast front door) and index_repository's wait="complete"
    waited for it forever. Once the daemon has tried it they end, failing with the file
    named; status names it while the daemon retries it, and it is indexed once it can be
    read. (Root reads any real file: the EIO is injected at the read.)"""
    from codequarry import fastcli
    from codequarry import indexer as indexer_module
    from codequarry.console import follow_daemon_index

    real_read = indexer_module.read_text_file
    broken = {"util.py"}

    def read(path: Path, max_bytes: int) -> object:
        if path.name in broken:
            raise OSError(errno.EIO, "Input/output error")
        return real_read(path, max_bytes)

    monkeypatch.setattr(indexer_module, "read_text_file", read)
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    reason = ("unreadable: 1 files cannot be read (retried in the background): "
              "pkg/util.py (Input/output error)")
    async with running(settings, hash_embedder) as daemon:
        with anyio.fail_after(60):  # before the fix: forever
            with pytest.raises(CodequarryError) as failed:
                await anyio.to_thread.run_sync(follow_daemon_index, DaemonClient(settings.socket_path),
                                               "demo", str(repo), abandon_on_cancel=True)
            assert str(failed.value) == reason
            raw_config = {"projects": [{"id": "demo", "path": str(repo)}]}
            fast = functools.partial(fastcli._index, argparse.Namespace(path=str(repo), project="demo"),
                                     str(settings.socket_path), raw_config)
            with pytest.raises(SystemExit) as exited:
                await anyio.to_thread.run_sync(fast, abandon_on_cancel=True)
            assert exited.value.code == 1
            assert capsys.readouterr().err.splitlines()[-1] == f"codequarry: error: {reason}"
            answer = await DaemonApi(daemon.runtime, daemon).index(str(repo), "demo", wait="complete")
        assert (answer["state"], answer["status"]["unreadable"]) == (
            "error", [{"path": "pkg/util.py", "error": "Input/output error"}])
        assert answer["status"]["pending_files"] == 1
        assert "pkg/util.py" not in await indexed(daemon, "demo")
        broken.clear()  # readable again: the daemon's next retry indexes it, nothing changed
        await settled(daemon, "demo", set(REPO))
        status = await DaemonApi(daemon.runtime, daemon).status("demo")
        assert (status["projects"][0]["unreadable"], status["projects"][0]["errors"]) == ([], [])


async def test_a_live_socket_is_not_taken_over_and_a_held_lock_refuses_a_second_daemon(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder):
        with pytest.raises(DaemonRunning, match="another daemon is serving"):
            prepare_socket_path(settings.socket_path)
        assert await anyio.to_thread.run_sync(DaemonClient(settings.socket_path).running)
    refused = r"codequarry daemon \(pid \d+\) already uses .*only one daemon per data directory"
    with IndexLock(settings.lock_path, "daemon", wait=False), pytest.raises(DaemonRunning, match=refused):
        run_daemon(settings)


async def test_the_repository_vanishing_and_returning_does_not_kill_the_daemon_and_it_catches_up(
        make_settings: Callable[..., Settings], repo: Path, tmp_path: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    client = DaemonClient(settings.socket_path)
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        away = tmp_path / "away"
        repo.rename(away)

        async def missing_reported() -> bool:
            answer = await anyio.to_thread.run_sync(client.get, "/api/status")
            return any("repository directory is missing" in e for e in answer["projects"][0]["errors"])

        await until(missing_reported, what="the missing repository in the status")
        (away / "pkg" / "util.py").write_text("def load_settings(path):\n    return path\n")
        (away / "README.md").unlink()
        (away / "back.py").write_text("def returned_home():\n    return 'back'\n")
        (away / ".gitignore").write_text("pkg/geometry.py\n")  # ignore rules changed too
        away.rename(repo)

        await settled(daemon, "demo", {"pkg/util.py", "back.py", ".gitignore"}, 40)
        assert await lexical_paths(daemon, "demo", "load_settings") == {"pkg/util.py"}
        assert not await lexical_paths(daemon, "demo", "parse_config")
        assert not await lexical_paths(daemon, "demo", "torus_volume")
        (repo / "after.py").write_text("def watched_again():\n    return 1\n")
        await settled(daemon, "demo", {"pkg/util.py", "back.py", ".gitignore", "after.py"})
        assert await anyio.to_thread.run_sync(client.running)


async def test_an_idle_daemon_stops_within_two_seconds_of_a_stop_request(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        asked = time.monotonic()
    stopped = time.monotonic() - asked
    assert stopped < 2.0, f"stopping an idle daemon took {stopped:.1f}s"


async def test_a_clean_stop_leaves_no_task_behind(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        assert await anyio.to_thread.run_sync(DaemonClient(settings.socket_path).running)
    left = [task.get_coro() for task in asyncio.all_tasks() if task is not asyncio.current_task()]
    assert left == [], f"tasks still pending after the daemon stopped: {left}"


async def test_a_gitignore_edit_drops_the_files_it_now_ignores_and_restores_them_when_undone(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        (repo / ".gitignore").write_text("pkg/util.py\n")
        await settled(daemon, "demo", set(REPO) - {"pkg/util.py"} | {".gitignore"})
        (repo / ".gitignore").write_text("# nothing ignored\n")
        await settled(daemon, "demo", set(REPO) | {".gitignore"})


async def test_a_git_info_exclude_edit_drops_the_files_it_now_excludes(
        make_settings: Callable[..., Settings], repo: Path, runtime_dir: Path,
        hash_embedder: HashEmbedder) -> None:
    (repo / ".git" / "info").mkdir(parents=True)
    (repo / ".git" / "info" / "exclude").write_text("# git ls-files --others --exclude-from=...\n")
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running(settings, hash_embedder) as daemon:
        await settled(daemon, "demo", set(REPO))
        (repo / ".git" / "info" / "exclude").write_text("pkg/util.py\n")
        await settled(daemon, "demo", set(REPO) - {"pkg/util.py"}, 8)


# ---- the `codequarry daemon` process ---------------------------------------------------


def postgres_processes(pgdata: Path) -> list[psutil.Process]:
    """Live PostgreSQL server processes whose command line names `pgdata`."""
    found = []
    for process in psutil.process_iter(["name", "cmdline"]):
        try:
            cmdline = " ".join(process.info["cmdline"] or [])
            if "postgres" in (process.info["name"] or "") and str(pgdata) in cmdline:
                found.append(process)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return found


@pytest.fixture
def process_env(tmp_path: Path, runtime_dir: Path,
                monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """Environment of `codequarry` subprocesses (its own embedded PostgreSQL under
    tmp_path/data); this process sees the same config, data dir and socket."""
    data, config = tmp_path / "data", tmp_path / "config.toml"
    monkeypatch.setenv("CODEQUARRY_HOME", str(data))
    monkeypatch.setenv("CODEQUARRY_CONFIG", str(config))
    yield dict(os.environ)
    for process in postgres_processes(data / "pg"):  # never leave a server behind
        process.kill()


def write_process_config(path: Path, ollama_url: str, projects: dict[str, Path],
                         drain: float = 5) -> Settings:
    document = {"database": {"url": "embedded"},
                "embedder": {"kind": "ollama", "url": ollama_url, "max_retries": 0, "timeout_seconds": 20},
                "daemon": {"drain_timeout_seconds": drain},
                "projects": [{"id": pid, "path": str(root)} for pid, root in projects.items()]}
    if not projects:
        del document["projects"]  # tomlkit would write `projects = []`, which add_project cannot extend
    path.write_text(tomlkit.dumps(document))
    from codequarry.config import load_settings

    return load_settings(path)


def wait_for(condition: Callable[[], bool], seconds: float, what: str,
             process: subprocess.Popen[str] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if process is not None and process.poll() is not None:
            pytest.fail(f"the daemon exited with {process.returncode} while waiting for {what}: "
                        f"{process.stderr.read() if process.stderr else ''}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {seconds}s waiting for {what}")
        time.sleep(0.1)


def start_daemon(env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    log.parent.mkdir(exist_ok=True)  # not next to the config file: its watcher would see the writes
    return subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(log)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def sigterm_with_a_session_open(daemon: subprocess.Popen[str], socket_path: Path,
                                     wait_seconds: float) -> int:
    """SIGTERM while an official MCP SDK session is open on the socket, idle, with its
    notification stream established; the daemon's exit code."""
    with sdk_notification_stream() as established:
        async with uds_session(socket_path):
            async def stream_open() -> bool:
                return established.is_set()

            await until(stream_open, 30, "the session's GET stream")
            daemon.send_signal(signal.SIGTERM)
            return await anyio.to_thread.run_sync(daemon.wait, wait_seconds)


@pytest.mark.usefixtures("seeded_store")
def test_sigterm_with_an_mcp_session_open_stops_cleanly_removes_the_socket_and_stops_postgres(
        tmp_path: Path, repo: Path, process_env: dict[str, str]) -> None:
    with OllamaStandIn() as ollama:
        drain = 10.0  # the default
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {"demo": repo}, drain)
        client = DaemonClient(settings.socket_path)
        daemon = start_daemon(process_env, tmp_path / "logs" / "daemon.log")
        try:
            wait_for(client.running, 90, "the daemon socket", daemon)

            def indexed() -> bool:
                project = client.get("/api/status")["projects"][0]
                return bool(project["files"] == len(REPO) and project["vector_coverage"] == 1.0)

            wait_for(indexed, 60, "the project to be indexed", daemon)
            assert postgres_processes(settings.pgdata), "no embedded PostgreSQL runs for the data dir"

            second = subprocess.run([CODEQUARRY, "daemon"], env=process_env, capture_output=True,
                                    text=True, timeout=60, check=False)
            assert second.returncode == 1
            assert "only one daemon per data directory" in second.stderr
            assert client.running()

            # bounds a hang; the log says how it stopped
            code = anyio.run(sigterm_with_a_session_open, daemon, settings.socket_path, drain + 30)
        finally:
            if daemon.poll() is None:
                daemon.kill()
                daemon.wait()
        stderr = daemon.stderr.read() if daemon.stderr else ""
        assert code == 0, stderr
        assert daemon.stdout is not None
        assert daemon.stdout.read() == ""
        assert not settings.socket_path.exists()
        assert not postgres_processes(settings.pgdata), "the embedded PostgreSQL is still running"
        # the log file is JSON lines (ours and the libraries'), and says the stop completed
        records = [json.loads(line) for line in (tmp_path / "logs" / "daemon.log").read_text().splitlines()]
        events = [record["event"] for record in records]
        assert "daemon_stopping" in events
        assert events.index("daemon_stopped") > events.index("daemon_stopping")
        assert "drain_timed_out" not in events  # the work drained by itself (no timed assertion:
        # on a loaded machine the interpreter's exit alone may take seconds)
        # the session's open stream was ended first, so uvicorn had nothing to cancel (before,
        # it waited its 2 s bound, then logged "Cancel 1 running task(s)" and a traceback)
        errors = [record["event"] for record in records if record["level"] in ("error", "critical")]
        assert errors == []
        closed = next(r for r in records if r["event"] == "mcp_streams_closed")
        assert closed["sessions"] == 1
        assert events.index("daemon_stopping") < events.index("mcp_streams_closed") \
            < events.index("embedded_postgres_stopping") < events.index("daemon_stopped")
        assert events[-1] == "daemon_stopped"  # nothing after it: the process just exits


@pytest.mark.usefixtures("seeded_store")
def test_after_kill_9_during_indexing_an_index_run_brings_the_store_to_exactly_the_tree(
        tmp_path: Path, process_env: dict[str, str]) -> None:
    root = write_files(tmp_path / "many", {
        f"pkg/mod{i:03d}.py": f"def handler_{i}(request):\n    return request.value * {i}\n"
        for i in range(300)})
    with OllamaStandIn() as ollama:
        ollama.mode, ollama.delay = "slow", 0.3
        settings = write_process_config(tmp_path / "config.toml", ollama.url, {"many": root})
        client = DaemonClient(settings.socket_path)
        daemon = start_daemon(process_env, tmp_path / "logs" / "daemon.log")
        try:
            wait_for(client.running, 90, "the daemon socket", daemon)

            def mid_indexing() -> bool:
                project = client.get("/api/status")["projects"][0]
                return bool(project["chunks"] > 0 and project["vector_coverage"] < 1.0)

            wait_for(mid_indexing, 60, "indexing to be under way", daemon)
        finally:
            daemon.kill()
            daemon.wait()
        assert daemon.returncode == -signal.SIGKILL
        for rel in ("pkg/mod000.py", "pkg/mod001.py"):  # changes the next run must pick up
            (root / rel).write_text("def replaced():\n    return 0\n")
        (root / "pkg/mod002.py").unlink()
        (root / "pkg/new.py").write_text("def added_after_the_crash():\n    return 1\n")

        ollama.mode = "ok"
        index = subprocess.run([CODEQUARRY, "index", str(root), "--project", "many"], env=process_env,
                               capture_output=True, text=True, timeout=120, check=False)
        assert index.returncode == 0, index.stderr
        verify = subprocess.run([CODEQUARRY, "verify", "--project", "many"], env=process_env,
                                capture_output=True, text=True, timeout=120, check=False)
        assert verify.returncode == 0, verify.stdout + verify.stderr + "\nindex said: " + index.stderr
        assert "the index equals a fresh index of the tree" in verify.stderr
