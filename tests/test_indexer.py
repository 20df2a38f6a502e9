"""The incremental indexer against a real PostgreSQL: what changes is re-chunked, what
did not change embeds nothing, and vectors are reused by content."""

from __future__ import annotations

import errno
import inspect
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from codequarry.api import project_state
from codequarry.chunking import ChunkedFile, embedding_text
from codequarry.config import Settings
from codequarry.embedding.base import Vectors
from codequarry.errors import CodequarryError, EmbedderMismatch, EmbedderUnavailable
from codequarry.indexer import Project, ScanSummary
from codequarry.models import ChangeKind, SearchHit
from codequarry.oneshot import _index as oneshot_index
from codequarry.runtime import Runtime, open_runtime, status_report
from codequarry.search import SearchRequest

from .conftest import lock_waiters, write_files
from .fakes import HashEmbedder

PY = {
    "pkg/geometry.py": "import math\n\n\ndef torus_volume(major, minor):\n"
                       "    return 2 * math.pi ** 2 * major * minor ** 2\n\n\n"
                       "class Shape:\n    def area(self):\n        return 0\n",
    "pkg/util.py": "def parse_config(path):\n    \"\"\"Read a config file.\"\"\"\n"
                   "    return open(path).read()\n",
    "README.md": "# Demo\n\nA small demo repository.\n",
}


async def index(runtime: Runtime, project: str) -> None:
    """Run the workers until the project is fully chunked and embedded."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runtime.indexer.run)
        await runtime.indexer.reconcile(project)
        await until(lambda: runtime.indexer.idle() and runtime.indexer.embedding_settled(), within=60)
        tasks.cancel_scope.cancel()


async def until(condition: Callable[[], bool | Awaitable[bool]], within: float = 20,
                interval: float = 0.02) -> None:
    """Poll `condition` (sync or async) until it holds; TimeoutError after `within` seconds."""
    with anyio.fail_after(within):
        while True:
            result = condition()
            if await result if inspect.isawaitable(result) else result:
                return
            await anyio.sleep(interval)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    return write_files(tmp_path / "repo", PY)


@pytest.fixture
def settings(make_settings, repo: Path) -> Settings:
    return make_settings([{"id": "demo", "path": str(repo)}])


async def test_second_index_of_an_unchanged_tree_embeds_nothing(
        settings: Settings, hash_embedder: HashEmbedder) -> None:
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        first = len(hash_embedder.embedded_texts)
        chunks, embedded = await project.store.vector_counts()
        assert first > 0
        assert chunks == embedded
        await index(runtime, "demo")
        assert len(hash_embedder.embedded_texts) == first
        assert await runtime.indexer.reconcile("demo") == 0


async def test_a_fresh_scan_compares_the_tree_now_even_with_no_watcher_to_report_a_change(
        settings: Settings, hash_embedder: HashEmbedder, repo: Path) -> None:
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        async with workers(runtime):
            unchanged = await runtime.indexer.fresh_scan("demo")
            assert unchanged is not None
            assert (unchanged.files, unchanged.changes) == (3, 0)
            assert unchanged.bytes == sum(len(text.encode()) for text in PY.values())
            assert runtime.indexer.idle()  # nothing queued, and the reconcile is over
            (repo / "pkg" / "util.py").write_text("def parse_config(path):\n    return None\n")
            changed = await runtime.indexer.fresh_scan("demo")  # nothing watches this tree
            assert changed is not None
            assert changed.changes == 1
            await settle(runtime)
            assert await runtime.indexer.fresh_scan("demo") == ScanSummary(3, changed.bytes, 0)
        assert await runtime.indexer.fresh_scan("gone") is None


# ---- incremental behaviour ------------------------------------------------------------

SHAPES = '''import math


def torus_volume(major_radius, minor_radius):
    """Volume of a torus with the given major and minor radius."""
    area = math.pi * minor_radius ** 2
    circumference = 2 * math.pi * major_radius
    return area * circumference


def sphere_area(radius):
    """Surface area of a sphere of the given radius."""
    squared = radius * radius
    return 4 * math.pi * squared


def cube_volume(side):
    """Volume of a cube whose edges all have length side."""
    squared = side * side
    return squared * side
'''
SHAPES_EDITED = SHAPES.replace("4 * math.pi * squared", "4.0 * math.pi * squared  # exact")


@asynccontextmanager
async def workers(runtime: Runtime) -> AsyncIterator[None]:
    """The indexer's workers running in the background for the duration of the block."""
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(runtime.indexer.run)
        yield
        tasks.cancel_scope.cancel()


async def settle(runtime: Runtime) -> None:
    """Wait until the queue is empty and the embed worker has nothing left to do."""
    await until(lambda: runtime.indexer.idle() and runtime.indexer.embedding_settled(), within=30)


def chunk_spy(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every path the runtime's (real) chunker is asked to chunk."""
    chunked: list[str] = []
    original = runtime.indexer.chunker.analyse

    def analyse(path: str, text: str) -> ChunkedFile:
        chunked.append(path)
        return original(path, text)

    monkeypatch.setattr(runtime.indexer.chunker, "analyse", analyse)
    return chunked


async def chunk_paths(project: Project) -> set[str]:
    async with project.store.engine.connect() as conn:
        rows = await conn.execute(text(f"SELECT DISTINCT path FROM {project.store.s}.chunks"))
        return {row.path for row in rows}


async def test_editing_one_function_rechunks_only_that_file_and_embeds_only_the_changed_chunk(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(repo, {"pkg/shapes.py": SHAPES})
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        chunker = runtime.indexer.chunker
        old_hashes = {c.content_hash for c in chunker.chunk_file("pkg/shapes.py", SHAPES)[1]}
        new_chunks = chunker.chunk_file("pkg/shapes.py", SHAPES_EDITED)[1]
        changed = [embedding_text(c) for c in new_chunks if c.content_hash not in old_hashes]
        assert len(changed) == 1  # sphere_area only; torus_volume and cube_volume are unchanged
        chunked = chunk_spy(runtime, monkeypatch)
        before = len(hash_embedder.embedded_texts)
        rows_before = await chunk_rows(project, "pkg/shapes.py")

        (repo / "pkg/shapes.py").write_text(SHAPES_EDITED)
        await index(runtime, "demo")

        assert chunked == ["pkg/shapes.py"]
        assert hash_embedder.embedded_texts[before:] == changed
        stored = await project.store.file_chunks("pkg/shapes.py")
        assert [row[0] for row in stored] == [c.content_hash for c in new_chunks]
        assert all(has_vector for *_, has_vector in stored)
        # the unchanged chunks kept their rows and vectors; only the edited one is new
        rows_after = await chunk_rows(project, "pkg/shapes.py")
        assert {h: rows_after[h] for h in old_hashes & rows_after.keys()} == {
            h: rows_before[h] for h in old_hashes & rows_after.keys()}
        assert len(old_hashes & rows_after.keys()) == len(new_chunks) - 1
        assert {row[0] for row in rows_after.values()}.isdisjoint(
            row[0] for h, row in rows_before.items() if h not in rows_after)
        assert await project.store.consistency_problems() == []


async def test_an_edit_in_the_middle_of_a_file_moves_the_later_chunks_to_their_new_lines(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    write_files(repo, {"pkg/shapes.py": SHAPES})
    grown = SHAPES.replace("    squared = radius * radius\n",
                           "    # two lines more\n    squared = radius * radius\n    squared += 0\n")
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        rows_before = await chunk_rows(project, "pkg/shapes.py")
        (repo / "pkg/shapes.py").write_text(grown)
        await index(runtime, "demo")

        new_chunks = runtime.indexer.chunker.chunk_file("pkg/shapes.py", grown)[1]
        stored = await project.store.file_chunks("pkg/shapes.py")
        assert [row[:3] for row in stored] == [(c.content_hash, c.start_line, c.end_line) for c in new_chunks]
        cube = next(c for c in new_chunks if c.symbol == "cube_volume")
        # its row (id and vector) stayed, moved two lines down
        rows_after = await chunk_rows(project, "pkg/shapes.py")
        assert rows_after[cube.content_hash] == rows_before[cube.content_hash]
        hit = await first_hit(runtime, "cube_volume")
        assert (hit.symbol, hit.start_line, hit.end_line) == ("cube_volume", cube.start_line, cube.end_line)
        assert grown.split("\n")[hit.start_line - 1] == "def cube_volume(side):"
        assert await project.store.consistency_problems() == []

        # two functions swapped: one keeps its row, the other is written again, words and all
        head, torus, sphere, cube_text = grown.split("\n\n\n")
        swapped = "\n\n\n".join([head, torus, cube_text.rstrip("\n"), sphere]) + "\n"
        (repo / "pkg/shapes.py").write_text(swapped)
        await index(runtime, "demo")
        for chunk in runtime.indexer.chunker.chunk_file("pkg/shapes.py", swapped)[1]:
            hit = await first_hit(runtime, chunk.symbol or "")
            assert (hit.symbol, hit.start_line, hit.end_line) == (
                chunk.symbol, chunk.start_line, chunk.end_line)
        assert await project.store.consistency_problems() == []


async def first_hit(runtime: Runtime, words: str) -> SearchHit:
    request = SearchRequest(words, ("demo",), "lexical")
    return (await runtime.searcher.search(request, runtime.indexer.model_id)).results[0]


async def chunk_rows(project: Project, path: str) -> dict[str, tuple[int, str]]:
    """content hash -> (row id, its vector as text) of a file's chunks."""
    space = await project.store.space(fresh=True)
    async with project.store.engine.connect() as conn:
        rows = await conn.execute(text(
            f"SELECT c.content_hash, c.id, v.embedding::text FROM {project.store.s}.chunks c "
            f"JOIN {project.store.s}.{space.table} v ON v.chunk_id = c.id WHERE c.path = :p"), {"p": path})
        return {row[0]: (row[1], row[2]) for row in rows}


async def test_renaming_a_file_embeds_nothing_and_forgets_the_old_path(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        old_chunks = await project.store.file_chunks("pkg/util.py")
        before = len(hash_embedder.embedded_texts)

        (repo / "pkg/util.py").rename(repo / "pkg/config_reader.py")
        await index(runtime, "demo")

        assert len(hash_embedder.embedded_texts) == before
        assert "pkg/util.py" not in await project.store.indexed_files()
        assert "pkg/util.py" not in await chunk_paths(project)
        assert await project.store.file_chunks("pkg/config_reader.py") == old_chunks  # with vectors
        assert await project.store.consistency_problems() == []


async def test_deleting_a_file_removes_its_file_row_and_chunks(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        (repo / "README.md").unlink()
        await index(runtime, "demo")
        assert set(await project.store.indexed_files()) == {"pkg/geometry.py", "pkg/util.py"}
        assert await chunk_paths(project) == {"pkg/geometry.py", "pkg/util.py"}
        assert await project.store.consistency_problems() == []
        assert await project.store.pending_event_paths() == []


async def test_reverting_an_edit_embeds_nothing(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    write_files(repo, {"pkg/shapes.py": SHAPES})
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        original = await project.store.file_chunks("pkg/shapes.py")
        (repo / "pkg/shapes.py").write_text(SHAPES_EDITED)
        await index(runtime, "demo")
        after_edit = len(hash_embedder.embedded_texts)
        assert await project.store.file_chunks("pkg/shapes.py") != original

        (repo / "pkg/shapes.py").write_text(SHAPES)
        await index(runtime, "demo")

        assert len(hash_embedder.embedded_texts) == after_edit
        assert await project.store.file_chunks("pkg/shapes.py") == original


async def test_the_same_files_in_a_second_project_embed_nothing(
        make_settings, repo: Path, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    copy = shutil.copytree(repo, tmp_path / "copy")
    settings = make_settings([{"id": "demo", "path": str(repo)}, {"id": "demo-copy", "path": str(copy)}])
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        before = len(hash_embedder.embedded_texts)
        other = await runtime.indexer.add_project(settings.config.project("demo-copy"))
        await index(runtime, "demo-copy")
        assert len(hash_embedder.embedded_texts) == before
        chunks, embedded = await other.store.vector_counts()
        assert chunks == embedded > 0
        assert set(await other.store.indexed_files()) == set(PY)


async def test_a_deleted_directory_removes_every_file_under_it(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    write_files(repo, {"pkg/sub/deep.py": "def deep():\n    return 1\n", "pkgx/near.py": "X = 1\n"})
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        assert len(await project.store.indexed_files(prefix="pkg/")) == 3
        shutil.rmtree(repo / "pkg")
        async with workers(runtime):  # the watcher reports one event for the directory
            await runtime.indexer.notify("demo", [("pkg", ChangeKind.DELETED)])
            await settle(runtime)
        assert set(await project.store.indexed_files()) == {"README.md", "pkgx/near.py"}
        assert await chunk_paths(project) == {"README.md", "pkgx/near.py"}
        assert await project.store.consistency_problems() == []


async def test_binary_non_utf8_and_too_large_files_are_recorded_as_skipped_with_reasons(
        make_settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    settings = make_settings([{"id": "demo", "path": str(repo)}], index={"max_file_bytes": 300})
    (repo / "logo.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(40)))
    (repo / "blob.txt").write_bytes(b"header\x00\x01\x02 binary payload\n")
    (repo / "latin1.txt").write_bytes("café crème brûlée\n".encode("latin-1"))
    (repo / "big.py").write_text("VALUE = 1\n" * 40)  # 400 bytes
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        files = await project.store.indexed_files()
        counts = await project.store.counts()
        chunked = await chunk_paths(project)
    reasons = {path: f.skip_reason for path, f in files.items() if f.skip_reason}
    assert reasons["logo.png"] == "binary file type"
    assert reasons["blob.txt"] == "binary content (NUL byte at offset 6)"
    assert reasons["latin1.txt"].startswith("not UTF-8 text")
    assert reasons["big.py"].startswith("larger than max_file_bytes")
    assert set(reasons) == {"logo.png", "blob.txt", "latin1.txt", "big.py"}
    assert counts.skipped_files == 4
    assert counts.files == len(PY)
    assert chunked == set(PY)


async def test_gitignored_and_excluded_files_are_not_indexed(
        make_settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    write_files(repo, {
        ".gitignore": "build/\n*.log\n!keep.log\n",
        "pkg/.gitignore": "generated_*.py\n",
        ".git/info/exclude": "local_notes.md\n",
        ".git/config": "[core]\n",
        "build/out.py": "def built():\n    pass\n",
        "debug.log": "noise\n",
        "keep.log": "kept on purpose\n",
        "pkg/generated_api.py": "def generated():\n    pass\n",
        "local_notes.md": "private\n",
        "node_modules/dep/index.js": "module.exports = 1\n",
    })
    settings = make_settings([{"id": "demo", "path": str(repo), "exclude": ["README.md"]}])
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        indexed = set(await project.store.indexed_files())
    assert indexed == {".gitignore", "pkg/.gitignore", "keep.log", "pkg/geometry.py", "pkg/util.py"}


async def test_lexical_search_finds_a_file_before_its_vectors_exist_and_vectors_fill_in_later(
        settings: Settings, hash_embedder: HashEmbedder) -> None:
    hash_embedder.fail_with = EmbedderUnavailable("embedding server is down")
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        indexer = runtime.indexer
        async with workers(runtime):
            await indexer.reconcile("demo")
            await until(lambda: indexer.idle() and indexer.embedder_error is not None)
            assert indexer.embedder_error == "embedding server is down"
            assert indexer.model_id is None
            response = await runtime.searcher.search(
                SearchRequest("torus_volume", ("demo",), "lexical"), indexer.model_id)
            assert response.results[0].path == "pkg/geometry.py"
            assert response.freshness.vector_coverage < 1.0
            assert (await project.store.vector_counts())[1] == 0

            hash_embedder.fail_with = None  # the server is back: vectors fill in behind
            await until(lambda: indexer.embedding_settled() and indexer.embedder_error is None,
                        within=30)
            chunks, embedded = await project.store.vector_counts()
            assert chunks == embedded > 0
            response = await runtime.searcher.search(
                SearchRequest("torus volume major minor", ("demo",), "semantic"), indexer.model_id)
            assert response.freshness.vector_coverage == 1.0
            assert response.results[0].path == "pkg/geometry.py"


async def test_a_live_edit_is_chunked_before_most_of_the_backlog(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    backlog = {f"bulk/module_{i:03}.py": f"def function_{i}(value):\n    return value + {i}\n"
               for i in range(200)}
    write_files(repo, backlog)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        async with workers(runtime):
            assert await runtime.indexer.reconcile("demo") == len(backlog) + len(PY)
            async def backlog_started() -> bool:
                return bool(await project.store.indexed_files(prefix="bulk/"))

            async def live_indexed() -> bool:
                return bool(await project.store.indexed_files(["live.py"]))

            await until(backlog_started, interval=0.005)  # the cold index is under way
            write_files(repo, {"live.py": "def saved_just_now():\n    return 'fresh'\n"})
            await runtime.indexer.notify("demo", [("live.py", ChangeKind.CREATED)])
            await until(live_indexed, interval=0.005)
            backlog_done = len(await project.store.indexed_files(prefix="bulk/"))
    assert backlog_done < len(backlog) / 2


async def test_a_dropped_database_connection_during_a_batch_puts_its_paths_back(
        settings: Settings, repo: Path, hash_embedder: HashEmbedder) -> None:
    edited = PY["pkg/util.py"].replace("Read a config file.", "Read a TOML config file.")
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        async with workers(runtime):
            async with runtime.store.engine.connect() as blocker:
                # writes to chunks now wait for this lock; reads do not
                await blocker.execute(text(f"LOCK TABLE {project.store.s}.chunks IN SHARE MODE"))
                (repo / "pkg/util.py").write_text(edited)
                await runtime.indexer.notify("demo", [("pkg/util.py", ChangeKind.MODIFIED)])
                waiting: list[int] = []

                async def writer_waits_for_the_lock() -> bool:
                    # a fresh connection each time: pg_stat_activity is snapshotted per transaction
                    async with runtime.store.engine.connect() as conn:
                        waiting[:] = (await conn.execute(text(
                            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() "
                            "AND wait_event_type = 'Lock' AND query LIKE 'DELETE FROM%'"))).scalars()
                    return bool(waiting)

                await until(writer_waits_for_the_lock, within=10)
                terminated = (await blocker.execute(text("SELECT pg_terminate_backend(:pid)"),
                                                    {"pid": waiting[0]})).scalar()
                assert terminated is True
                await blocker.rollback()
            async def edit_indexed() -> bool:
                return (await project.store.indexed_files(["pkg/util.py"]))["pkg/util.py"].size == len(edited)

            await until(edit_indexed)  # retried after the worker's back-off, with no new event
            await settle(runtime)
        assert await project.store.consistency_problems() == []
        assert await project.store.pending_event_paths() == []
        assert (await project.store.counts()).recent_errors == []


async def test_a_file_deleted_while_a_batch_with_its_chunk_is_saved_leaves_no_chunk_of_that_batch_unembedded(
        make_settings, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    """The kill -9 flake (test_daemon): chunks left without vectors by a killed daemon are
    embedded while the next run deletes a file whose chunk is in the batch being saved.
    The save failed on the deleted chunk's foreign key, the indexer gave up the batch's 16
    hashes for good, settled, and `codequarry index` reported success with 15 chunks
    lacking a vector. Held at a real lock (the chunk worker's transaction waits after its
    deletes), no timing."""
    repo = write_files(tmp_path / "many", {f"pkg/mod{i:03d}.py": f"def handler_{i}(request):\n"
                                           f"    return request.value * {i}\n" for i in range(24)})
    settings = make_settings([{"id": "many", "path": str(repo)}])
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("many"))
        await index(runtime, "many")
        space = await project.store.space()
        async with runtime.store.transaction() as conn:  # what the killed daemon left: no vectors
            await conn.execute(text(f"DELETE FROM {project.store.s}.{space.table}"))
            await conn.execute(text(f"UPDATE {project.store.s}.stats SET embedded = 0"))
            await conn.execute(text("DELETE FROM codequarry.embedding_cache"))

        async def waiting(count: int) -> bool:
            return await lock_waiters(runtime.store.engine) == count

        (repo / "pkg/mod002.py").unlink()
        async with anyio.create_task_group() as tasks, runtime.store.engine.connect() as blocker:
            await blocker.execute(text(f"LOCK TABLE {project.store.s}.definitions IN SHARE MODE"))
            tasks.start_soon(runtime.indexer.chunk_worker)
            assert await runtime.indexer.reconcile("many") == 1  # as `codequarry index` starts
            await until(lambda: waiting(1))  # the delete, uncommitted
            tasks.start_soon(runtime.indexer.embed_worker)  # its backlog still holds mod002's chunk
            await until(lambda: waiting(2))  # the save reached that chunk
            await blocker.rollback()
            await settle(runtime)
            tasks.cancel_scope.cancel()
        assert await project.store.consistency_problems() == []
        assert "pkg/mod002.py" not in await project.store.indexed_files()


class RefusingEmbedder(HashEmbedder):
    """The deterministic embedder, except that a batch holding a text with `refused_word`
    comes back with the wrong shape, like a server whose model cannot take that text."""

    refused_word = "refused_by_the_model"

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if any(self.refused_word in text for text in texts):
            raise EmbedderMismatch(f"{self.model_id}: asked for {len(texts)} vectors, got shape (0, 64)")
        return await super().embed_documents(texts)


async def test_chunks_left_without_a_vector_fail_index_and_show_in_status_never_as_done(
        settings: Settings, repo: Path) -> None:
    """An embedding that fails for good leaves its chunk without a vector (only its own:
    the batch is retried one text at a time): `codequarry index` used to settle and exit 0
    (complete) anyway; it fails saying why, and the daemon's status names the error
    (instead of "embedding" forever) until what failed is gone."""
    write_files(repo, {"pkg/odd.py": f"def odd():\n    return '{RefusingEmbedder.refused_word}'\n"})
    with pytest.raises(CodequarryError, match=r"^1 of 4 chunks have no vector \(.*got shape"):
        await oneshot_index(settings, settings.config.project("demo"), RefusingEmbedder())
    async with open_runtime(settings, RefusingEmbedder()) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        entry = (await status_report(settings, runtime.store, runtime.indexer))["projects"][0]
        assert entry["vector_coverage"] < 1.0
        assert entry["errors"][0].startswith("embedder: some chunks cannot be embedded: hash:test:64: asked")
        assert project_state(entry) == "error"
        (repo / "pkg/odd.py").unlink()  # what failed is gone: so is the error
        await index(runtime, "demo")
        entry = (await status_report(settings, runtime.store, runtime.indexer))["projects"][0]
        assert (entry["vector_coverage"], entry["errors"], project_state(entry)) == (1.0, [], "complete")


async def test_counters_that_drifted_are_set_right_when_the_project_starts(
        settings: Settings, hash_embedder: HashEmbedder) -> None:
    """Counters an older version let drift (verify: "counters say ...") were never
    repaired: status, coverage and `index` read them. A project's start recounts them."""
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        exact = await project.store.vector_counts()
        async with project.store.engine.begin() as conn:
            await conn.execute(text(f"UPDATE {project.store.s}.stats SET chunks = chunks + 3, "
                                    "embedded = embedded - 1"))
        assert (await project.store.consistency_problems())[0].startswith("counters say")
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        assert await project.store.vector_counts() == exact
        assert await project.store.consistency_problems() == []


async def test_a_file_that_cannot_be_read_fails_index_instead_of_reporting_it_done(
        settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """A read error is retried after a backoff; `codequarry index` settled before the retry
    and exited 0 with the file's change pending. (EIO cannot be made for root on a real
    file system: the read itself is where the fault is injected.)"""
    from codequarry import indexer

    real_read = indexer.read_text_file

    def read(path: Path, max_bytes: int) -> object:
        if path.name == "util.py":
            raise OSError(errno.EIO, "Input/output error")
        return real_read(path, max_bytes)

    monkeypatch.setattr(indexer, "read_text_file", read)
    with pytest.raises(CodequarryError,
                       match=r"^1 changed files could not be read \(pkg/util.py: Input/output error\)"):
        await oneshot_index(settings, settings.config.project("demo"), HashEmbedder())


async def test_a_directory_that_cannot_be_listed_keeps_its_files_and_fails_index_naming_them(
        settings: Settings, repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`chmod 000 pkg` after an index: the walk cannot list pkg, and each file's stat fails
    with EACCES. Its files were taken for deleted: dropped from the index, `index` exited 0
    and verify agreed. Now they stay, `index` fails naming them, verify says why, and the
    next index after the directory is readable again is complete with nothing re-embedded.
    (Root reads every directory: the EACCES is injected where the walk and the stat meet
    the file system.)"""
    from codequarry import scan
    from codequarry.verify import check_project

    real_scandir, real_lstat = scan.os.scandir, scan.os.lstat
    denied = str(repo / "pkg")

    def refuse(path: object) -> None:
        if str(path) == denied or str(path).startswith(denied + "/"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))

    def scandir(path: object) -> object:
        refuse(path)
        return real_scandir(path)  # type: ignore[call-overload]

    def lstat(path: object) -> object:
        refuse(path)
        return real_lstat(path)  # type: ignore[arg-type]

    embedder = HashEmbedder()
    assert await oneshot_index(settings, settings.config.project("demo"), embedder) == 0
    embedded = len(embedder.embedded_texts)
    monkeypatch.setattr(scan.os, "scandir", scandir)
    monkeypatch.setattr(scan.os, "lstat", lstat)
    with pytest.raises(CodequarryError, match=r"^2 changed files could not be read \(pkg/geometry.py: "
                                              r"Permission denied; pkg/util.py: Permission denied\)"):
        await oneshot_index(settings, settings.config.project("demo"), embedder)
    async with open_runtime(settings, embedder) as runtime:
        project = await runtime.store.project("demo")
        assert set(await project.indexed_files()) == set(PY)  # nothing dropped
        problems = await check_project(settings, settings.config.project("demo"), runtime.store,
                                       runtime.indexer.chunker)
    assert problems[0] == "pkg: cannot be listed (Permission denied); the index is not compared there"
    monkeypatch.undo()
    assert await oneshot_index(settings, settings.config.project("demo"), embedder) == 0
    assert len(embedder.embedded_texts) == embedded


async def test_a_vector_the_database_refuses_costs_only_its_own_chunk_not_its_batch(
        settings: Settings, repo: Path) -> None:
    """pgvector refuses a NaN: the batch's save fails as a whole (not transient), then its
    vectors are saved one at a time and only that chunk is given up (it used to be all 16)."""

    class NaNEmbedder(HashEmbedder):
        async def embed_documents(self, texts: Sequence[str]) -> Vectors:
            vectors = await super().embed_documents(texts)
            vectors[[i for i, text in enumerate(texts) if "nan_from_the_model" in text]] = float("nan")
            return vectors

    write_files(repo, {"pkg/odd.py": "def odd():\n    return 'nan_from_the_model'\n"})
    async with open_runtime(settings, NaNEmbedder()) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        await index(runtime, "demo")
        assert await project.store.consistency_problems() == ["1 chunks have no vector yet"]
        entry = (await status_report(settings, runtime.store, runtime.indexer))["projects"][0]
    assert entry["errors"][0].startswith("embedder: some chunks cannot be embedded: saving a vector failed")


async def test_a_chunker_exception_costs_only_that_file(
        settings: Settings, hash_embedder: HashEmbedder, monkeypatch: pytest.MonkeyPatch) -> None:
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        original = runtime.indexer.chunker.analyse

        def analyse(path: str, text: str) -> ChunkedFile:
            if path == "pkg/util.py":
                raise RecursionError("maximum recursion depth exceeded")
            return original(path, text)

        monkeypatch.setattr(runtime.indexer.chunker, "analyse", analyse)
        await index(runtime, "demo")
        files = await project.store.indexed_files()
        counts = await project.store.counts()
        chunked = await chunk_paths(project)
    reason = files["pkg/util.py"].skip_reason
    assert reason is not None
    assert reason.startswith("chunker error")
    assert "RecursionError" in reason
    assert files["pkg/geometry.py"].skip_reason is None
    assert chunked == {"pkg/geometry.py", "README.md"}
    assert (counts.files, counts.skipped_files) == (2, 1)
