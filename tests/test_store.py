"""The store against a real PostgreSQL + pgvector: migrations, one schema per project,
transactional writes with exact counters, the shared embedding cache, model switches,
change events and the consistency check."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import numpy as np
import pytest
from sqlalchemy import text
from structlog.testing import capture_logs

from codequarry.chunking import Chunker, embedding_text, search_text
from codequarry.config import Settings
from codequarry.errors import UnknownProject
from codequarry.models import ChangeKind, EmbeddingBatch, FileUpdate
from codequarry.scan import content_hash
from codequarry.store.db import Store
from codequarry.store.embedded import EmbeddedPostgres
from codequarry.store.project import Filters, ProjectStore

from .conftest import lock_waiters, until
from .fakes import HashEmbedder

CHUNKER = Chunker()

GEOMETRY = (
    "import math\n\n\n"
    "def torus_volume(major, minor):\n    return 2 * math.pi ** 2 * major * minor ** 2\n\n\n"
    "def sphere_area(radius):\n    return 4 * math.pi * radius ** 2\n"
)
UTIL = "def parse_config(path):\n    \"\"\"Read a config file.\"\"\"\n    return open(path).read()\n"
README = "# Demo\n\nA small demo repository about shapes.\n"
STEPS = "".join(  # three chunks, one per function
    f"def step_{n}(value):\n" + "".join(f"    value = value * {n} + {k}  # stage {k} of step {n}\n"
                                        for k in range(12)) + "    return value\n\n\n"
    for n in range(3))


def update(path: str, source: str, mtime_ns: int = 1) -> FileUpdate:
    """A FileUpdate as the indexer builds it: real tree-sitter chunks and search words."""
    language, chunks = CHUNKER.chunk_file(path, source)
    return FileUpdate(path, len(source.encode()), mtime_ns, content_hash(source.encode()), language,
                      chunks=tuple(chunks), search_texts=tuple(search_text(path, c) for c in chunks))


def skipped(path: str, reason: str) -> FileUpdate:
    return FileUpdate(path, 10, 1, "", skip_reason=reason)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
async def store(settings: Settings) -> AsyncIterator[Store]:
    store = await Store.open(settings)
    try:
        yield store
    finally:
        await store.close()


async def scalar(store: Store, sql: str, **params: object) -> object:
    async with store.engine.connect() as conn:
        return (await conn.execute(text(sql), params)).scalar()


async def table_counts(project: ProjectStore) -> tuple[int, int]:
    """(chunks, chunks with a vector) counted in the tables themselves, not from the counters."""
    space = await project.space(fresh=True)
    vectors = f"(SELECT count(*) FROM {project.s}.{space.table})" if space.table else "0"
    async with project.engine.connect() as conn:
        row = (await conn.execute(text(
            f"SELECT count(*), {vectors} FROM {project.s}.chunks"))).one()
    return int(row[0]), int(row[1])


async def embed_all(store: Store, project: ProjectStore, embedder: HashEmbedder) -> None:
    """Give every chunk of the project a vector through the shared cache, as the embed worker does."""
    chunks = await project.unembedded(10_000)
    vectors = await embedder.embed_documents([embedding_text(c) for c in chunks])
    await store.save_vectors(embedder.model_id, {c.content_hash: vectors[i] for i, c in enumerate(chunks)},
                             [project])


async def test_open_migrates_a_fresh_database_and_a_second_open_is_idempotent(settings: Settings) -> None:
    first = await Store.open(settings)
    try:
        async with first.engine.connect() as conn:
            tables = set((await conn.execute(text(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'codequarry'"
            ))).scalars())
            version = (await conn.execute(text(
                "SELECT version FROM codequarry.schema_version WHERE scope = 'shared'"))).scalar()
        assert tables == {"schema_version", "projects", "embedding_cache", "embedding_metadata",
                          "installations", "models"}
        assert version == 2
        await first.ensure_project("demo", "/repo")
    finally:
        await first.close()
    second = await Store.open(settings)  # must not fail on existing tables, nor lose data
    try:
        assert second.pgvector_version >= (0, 6)
        assert await second.indexed_projects() == {"demo": "/repo"}
        assert await scalar(second, "SELECT count(*) FROM codequarry.schema_version") == 1
    finally:
        await second.close()


async def test_ensure_project_creates_a_schema_named_from_installation_and_id_and_is_idempotent(
        store: Store) -> None:
    expected = f"cq_{store.installation[:8]}_my_app_2"
    project = await store.ensure_project("my-app-2", "/src/my-app")
    assert project.schema == expected
    schemas = await scalar(store, "SELECT array_agg(schema_name::text) FROM information_schema.schemata "
                                  "WHERE schema_name LIKE 'cq\\_%'")
    assert schemas == [expected]
    await project.apply([update("a.py", UTIL)])
    again = await store.ensure_project("my-app-2", "/src/moved")  # same schema, data kept, root updated
    assert again.schema == expected
    assert set(await again.indexed_files()) == {"a.py"}
    assert await store.indexed_projects() == {"my-app-2": "/src/moved"}
    assert (await store.project("my-app-2")).schema == expected


async def test_a_projects_rows_never_appear_in_another_projects_schema(store: Store) -> None:
    alpha = await store.ensure_project("alpha", "/a")
    beta = await store.ensure_project("beta", "/b")
    await alpha.apply([update("only_alpha.py", UTIL)])
    await beta.apply([update("only_beta.py", GEOMETRY), update("shared.md", README)])
    assert set(await alpha.indexed_files()) == {"only_alpha.py"}
    assert set(await beta.indexed_files()) == {"only_beta.py", "shared.md"}
    assert await scalar(store, f"SELECT array_agg(DISTINCT path) FROM {alpha.s}.chunks") == ["only_alpha.py"]
    beta_paths = await scalar(store, f"SELECT array_agg(DISTINCT path) FROM {beta.s}.chunks")
    assert beta_paths == ["only_beta.py", "shared.md"]
    await alpha.apply([], deleted=["only_alpha.py"])
    assert await table_counts(alpha) == (0, 0)
    assert (await table_counts(beta))[0] > 0


async def test_apply_writes_files_and_chunks_and_the_counters_equal_count_star(store: Store) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.apply([update("geo.py", GEOMETRY), update("util.py", UTIL), update("README.md", README),
                         skipped("logo.png", "binary file type")])
    chunks, embedded = await project.vector_counts()
    assert (chunks, embedded) == await table_counts(project)
    assert chunks == sum(len(update(p, s).chunks) for p, s in
                         (("geo.py", GEOMETRY), ("util.py", UTIL), ("README.md", README)))
    counts = await project.counts()
    assert (counts.files, counts.skipped_files) == (3, 1)
    assert await scalar(store, f"SELECT chunk_count FROM {project.s}.files WHERE path = 'geo.py'") == len(
        update("geo.py", GEOMETRY).chunks)

    # replace one file, delete another: the counters follow exactly
    await project.apply([update("geo.py", "def only_one():\n    return 1\n", mtime_ns=2)],
                        deleted=["util.py"])
    assert await project.vector_counts() == await table_counts(project)
    assert set(await project.indexed_files()) == {"geo.py", "README.md", "logo.png"}
    assert [row[1:3] for row in await project.file_chunks("geo.py")] == [(1, 2)]
    unembedded = (await table_counts(project))[0]
    assert await project.consistency_problems() == [f"{unembedded} chunks have no vector yet"]


async def test_an_idle_backlog_scan_trusts_the_counters_and_a_periodic_full_scan_finds_a_lost_vector(
        store: Store, hash_embedder: HashEmbedder) -> None:
    project = await store.ensure_project("idle", "/idle")
    await project.set_model(hash_embedder.model_id, hash_embedder.dims)
    await project.apply([update("geo.py", GEOMETRY)])
    await embed_all(store, project, hash_embedder)
    assert await project.unembedded(100) == []  # a full scan: nothing left
    space = await project.space(fresh=True)
    async with project.engine.begin() as conn:  # a vector lost behind the counters' back
        await conn.execute(text(f"DELETE FROM {project.s}.{space.table} WHERE chunk_id = "
                                f"(SELECT min(chunk_id) FROM {project.s}.{space.table})"))
    assert await project.unembedded(100) == []  # complete counters spare the scan
    project._full_scan_due = 0.0  # the clock reaches the next full scan
    lost = await project.unembedded(100)
    assert len(lost) == 1
    await project.apply([update("new.py", "def fresh():\n    return 1\n")])
    assert {c.symbol for c in await project.unembedded(100)} >= {"fresh"}  # counters short: scanned


async def test_apply_copies_vectors_from_the_embedding_cache_and_reports_only_missing_hashes(
        store: Store, hash_embedder: HashEmbedder) -> None:
    first = await store.ensure_project("first", "/one")
    await first.set_model(hash_embedder.model_id, hash_embedder.dims)
    missing = await first.apply([update("geo.py", GEOMETRY)], model_id=hash_embedder.model_id)
    assert len(missing) == len(update("geo.py", GEOMETRY).chunks)  # an empty cache has nothing
    await embed_all(store, first, hash_embedder)
    assert await table_counts(first) == (len(missing), len(missing))

    second = await store.ensure_project("second", "/two")
    await second.set_model(hash_embedder.model_id, hash_embedder.dims)
    missing = await second.apply([update("copy/geo.py", GEOMETRY), update("util.py", UTIL)],
                                 model_id=hash_embedder.model_id)
    assert sorted(missing) == sorted(c.content_hash for c in update("util.py", UTIL).chunks)
    chunks, embedded = await table_counts(second)
    assert embedded == len(update("geo.py", GEOMETRY).chunks)
    assert await second.vector_counts() == (chunks, embedded)
    assert all(has_vector for *_, has_vector in await second.file_chunks("copy/geo.py"))
    # the copied vectors are exactly the cached ones (as stored: 16-bit halfvec by default)
    space = await second.space()
    assert space.type == "halfvec"
    same = await scalar(store, f"SELECT count(*) FROM {second.s}.chunks c JOIN {second.s}.{space.table} v "
                               "ON v.chunk_id = c.id JOIN codequarry.embedding_cache e "
                               "ON e.content_hash = c.content_hash WHERE v.embedding = e.embedding::halfvec")
    assert same == embedded


async def test_a_new_model_fills_its_own_table_beside_the_active_one_and_is_promoted_when_complete(
        store: Store, hash_embedder: HashEmbedder) -> None:
    project = await store.ensure_project("demo", "/repo")
    assert await project.set_model(hash_embedder.model_id, hash_embedder.dims) == ""  # the first model
    assert await project.set_model(hash_embedder.model_id, hash_embedder.dims) is None  # no change
    await project.apply([update("steps.py", STEPS), update("util.py", UTIL)],
                        model_id=hash_embedder.model_id)
    await embed_all(store, project, hash_embedder)
    chunks, embedded = await project.vector_counts()
    assert embedded == chunks > 0
    first_table = (await project.space()).table

    smaller = HashEmbedder(dims=32, model_id="hash:test:32")
    assert await project.set_model(smaller.model_id, smaller.dims) == hash_embedder.model_id
    space = await project.space(fresh=True)
    assert (space.model_id, space.table) == (hash_embedder.model_id, first_table)  # still serving
    assert space.next is not None
    assert (space.next.model_id, space.next.dims) == ("hash:test:32", 32)
    assert await project.vector_counts() == (chunks, chunks)
    assert await project.finish_vectors() is None  # the new model covers nothing yet
    next_table = f"{project.s}.{space.next.table}"
    column = await scalar(store, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE "
                                 f"attrelid = '{next_table}'::regclass AND attname = 'embedding'")
    assert column == "halfvec(32)"

    await embed_all(store, project, smaller)  # the embed worker fills the next table
    assert await project.vector_counts() == (chunks, chunks)
    # an edit meanwhile: its unchanged chunks keep their vectors in both tables
    edited = update("steps.py", STEPS.replace("stage 3 of step 1", "stage three"), mtime_ns=2)
    assert await project.apply([edited], model_id=smaller.model_id) == [edited.chunks[1].content_hash]
    assert await project.vector_counts() == (chunks, chunks - 1)
    assert [c.symbol for c in await project.unembedded(100)] == ["step_1"]
    assert await project.finish_vectors() is None
    await embed_all(store, project, smaller)
    assert await project.finish_vectors() == "promoted"
    assert await project.model() == ("hash:test:32", 32)
    space = await project.space(fresh=True)
    assert (space.next, space.hnsw_ready) == (None, True)
    tables = await scalar(store, "SELECT array_agg(tablename::text) FROM pg_tables "
                                 f"WHERE schemaname = '{project.schema}' AND tablename LIKE 'vectors%'")
    assert tables == [space.table]  # the old model's table is gone
    indexes = await scalar(store, "SELECT array_agg(indexdef) FROM pg_indexes "
                                  f"WHERE schemaname = '{project.schema}' AND indexdef LIKE '%USING hnsw%'")
    assert isinstance(indexes, list)
    assert len(indexes) == 1
    assert "halfvec_cosine_ops" in indexes[0]
    assert await project.consistency_problems() == []

    query = smaller.vectors(["parse config file"])[0]
    hits = await project.semantic(query, Filters(), 3, store.iterative_scans)
    rows = await project.chunk_rows([chunk_id for chunk_id, _ in hits])
    assert rows[hits[0][0]].path == "util.py"


async def test_drop_project_removes_its_schema_and_registration(store: Store) -> None:
    project = await store.ensure_project("gone-soon", "/repo")
    await project.apply([update("a.py", UTIL)])
    keep = await store.ensure_project("kept", "/other")
    assert await store.drop_project("gone-soon") is True
    assert await scalar(store, "SELECT count(*) FROM information_schema.schemata "
                               f"WHERE schema_name = '{project.schema}'") == 0
    assert await store.indexed_projects() == {"kept": "/other"}
    assert await store.drop_project("gone-soon") is False
    with pytest.raises(UnknownProject):
        await store.project("gone-soon")
    assert (await keep.counts()).files == 0  # the other project is untouched


async def test_change_events_are_pending_until_finished_and_listed_newest_first(store: Store) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.record_events([("a.py", ChangeKind.CREATED, None),
                                 ("b.py", ChangeKind.MODIFIED, None),
                                 ("a.py", ChangeKind.MODIFIED, None)])
    await project.record_events([("c.py", ChangeKind.RENAMED, "old/c.py")])
    assert sorted(await project.pending_event_paths()) == ["a.py", "b.py", "c.py"]
    counts = await project.counts()
    assert (counts.pending_files, counts.pending_events) == (3, 4)
    assert (await project.freshness()).pending_files == 3

    await project.finish_events(["a.py"])
    await project.finish_events(["b.py"], error="ValueError: bad file")
    assert await project.pending_event_paths() == ["c.py"]
    recent = await project.recent_changes(10)
    assert [(e.path, e.kind) for e in recent] == [
        ("c.py", ChangeKind.RENAMED), ("a.py", ChangeKind.MODIFIED), ("b.py", ChangeKind.MODIFIED),
        ("a.py", ChangeKind.CREATED)]
    assert recent[0].previous_path == "old/c.py"
    assert recent[0].processed_at is None
    assert all(e.project == "demo" and e.processed_at is not None for e in recent[1:])
    assert [e.error for e in recent if e.path == "b.py"] == ["ValueError: bad file"]
    assert (await project.counts()).recent_errors == ["b.py: ValueError: bad file"]
    assert len(await project.recent_changes(2)) == 2

    # apply() finishes the events of the paths it writes, in the same transaction
    await project.apply([update("c.py", UTIL)])
    assert await project.pending_event_paths() == []


async def test_consistency_problems_is_empty_after_a_clean_index_and_reports_a_drifted_counter(
        store: Store, hash_embedder: HashEmbedder) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.set_model(hash_embedder.model_id, hash_embedder.dims)
    await project.apply([update("geo.py", GEOMETRY), update("util.py", UTIL)],
                        model_id=hash_embedder.model_id)
    await embed_all(store, project, hash_embedder)
    assert await project.consistency_problems() == []

    chunks, embedded = await project.vector_counts()
    async with store.transaction() as conn:
        await conn.execute(text(f"UPDATE {project.s}.stats SET chunks = chunks + 5"))
    problems = await project.consistency_problems()
    assert problems == [f"counters say ({chunks + 5}, {embedded}) (chunks, with vectors), "
                        f"the table holds ({chunks}, {embedded}); set right when the project "
                        "next starts (index, or the daemon)"]


async def test_consistency_problems_reports_a_vector_that_differs_from_the_cache(
        store: Store, hash_embedder: HashEmbedder) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.set_model(hash_embedder.model_id, hash_embedder.dims)
    await project.apply([update("util.py", UTIL)], model_id=hash_embedder.model_id)
    await embed_all(store, project, hash_embedder)
    other = np.eye(hash_embedder.dims, dtype=np.float32)[-1]
    table = f"{project.s}.{(await project.space()).table}"
    async with store.transaction() as conn:
        await conn.execute(text(f"UPDATE {table} SET embedding = CAST(:v AS vector)::halfvec "
                                f"WHERE chunk_id = (SELECT min(chunk_id) FROM {table})"), {"v": other})
    assert await project.consistency_problems() == ["1 chunk vectors differ from the embedding cache"]


async def test_a_failing_statement_inside_apply_leaves_the_previous_state_intact(store: Store) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.apply([update("geo.py", GEOMETRY), update("util.py", UTIL)])
    before_chunks = await project.file_chunks("geo.py")
    before_files = await project.indexed_files()
    before_counts = await project.vector_counts()

    new = update("geo.py", "def replaced():\n    return 2\n", mtime_ns=99)
    broken = dataclasses.replace(new, search_texts=())  # chunks and search_texts differ in length
    with pytest.raises(ValueError, match="zip"):
        await project.apply([broken], deleted=["util.py"])

    assert await project.file_chunks("geo.py") == before_chunks
    assert await project.indexed_files() == before_files
    assert await project.vector_counts() == before_counts == await table_counts(project)


def test_a_new_embedded_server_gets_its_shared_buffers_at_once_an_existing_one_at_its_next_start(
        tmp_path: Path) -> None:
    server = EmbeddedPostgres(tmp_path / "pg")

    def shared_buffers() -> str:
        return server.psql("SHOW shared_buffers;").split()[2]

    with capture_logs() as logs:
        server.start(shared_buffers_mb=64)
    try:
        assert shared_buffers() == "64MB"
        # the log says why a server that is starting stops
        assert [e["why"] for e in logs if e["event"] == "embedded_postgres_stopping"] == [
            "restart: shared_buffers applies at start"]
    finally:
        server.stop()
    server.start(shared_buffers_mb=48)  # written to the config, but the server is already up
    try:
        assert shared_buffers() == "64MB"
    finally:
        server.stop()
    server.start(shared_buffers_mb=48)
    try:
        assert shared_buffers() == "48MB"
    finally:
        server.stop()


def test_the_embedded_server_starts_though_pgservers_shared_lock_file_cannot_be_opened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pgserver's start-up lock is one file for every user (/tmp/.lockfile without
    XDG_RUNTIME_DIR); made by another user, it cannot be opened and no server started (a
    directory in its place is what root cannot open either)."""
    import fasteners

    from codequarry.store.embedded import _pgserver

    shared = tmp_path / "tmp" / ".lockfile"
    shared.mkdir(parents=True)
    monkeypatch.setattr(_pgserver().postgres_server.PostgresServer, "_lock",
                        fasteners.InterProcessLock(str(shared)))
    server = EmbeddedPostgres(tmp_path / "pg" / "pgdata")
    server.start()
    try:
        assert server.psql("SELECT 41 + 1;").split()[2] == "42"
    finally:
        server.stop()


# ---- a file dropped while a batch of vectors with its chunks is being saved -----------------


async def test_a_file_dropped_while_vectors_of_its_chunks_are_saved_costs_no_other_vector_nor_the_counters(
        store: Store, hash_embedder: HashEmbedder) -> None:
    """The embed worker saves a batch by content hash while the chunk worker drops a file
    with a chunk in that batch, in both orders, each held at a real lock (no timing). The
    kill -9 flake: the save failed on a foreign key (the chunk was gone), the indexer gave
    up the whole batch, and `codequarry index` reported success with 15 chunks lacking a
    vector; in the other order the counters kept the dropped file's vectors."""
    project = await store.ensure_project("demo", "/repo")
    await project.set_model(hash_embedder.model_id, hash_embedder.dims)
    files = {"geo.py": GEOMETRY, "readme.md": README, "util.py": UTIL, "b.py": UTIL.replace("path", "name")}
    await project.apply([update(path, source) for path, source in files.items()],
                        model_id=hash_embedder.model_id)
    saved: list[int] = []

    async def save(paths: tuple[str, ...]) -> None:
        chunks = [c for path in paths for c in update(path, files[path]).chunks]
        vectors = await hash_embedder.embed_documents([embedding_text(c) for c in chunks])
        batch = EmbeddingBatch(hash_embedder.model_id, "hash-test", "1", hash_embedder.dims, len(chunks), 0.1)
        saved.append(await store.save_vectors(
            hash_embedder.model_id, {c.content_hash: vectors[i] for i, c in enumerate(chunks)}, [project],
            batch=batch, project_id="demo"))

    async def waiting(count: int) -> bool:
        return await lock_waiters(store.engine) == count

    async with anyio.create_task_group() as tasks, store.engine.connect() as blocker:
        # the save first: its vectors are written, it waits (uncommitted) to record its batch
        await blocker.execute(text("LOCK TABLE codequarry.embedding_metadata IN SHARE MODE"))
        tasks.start_soon(save, ("geo.py", "readme.md"))
        await until(lambda: waiting(1), what="the save to wait, its vectors uncommitted")
        tasks.start_soon(lambda: project.apply([], deleted=["readme.md"]))
        await until(lambda: waiting(2), what="the drop of readme.md to wait for the save")
        await blocker.rollback()
    assert await project.vector_counts() == await table_counts(project)  # the dropped vectors left both
    async with anyio.create_task_group() as tasks, store.engine.connect() as blocker:
        # the drop first: its chunk deletions are uncommitted when the save reaches them
        await blocker.execute(text(f"LOCK TABLE {project.s}.definitions IN SHARE MODE"))
        tasks.start_soon(lambda: project.apply([], deleted=["util.py"]))
        await until(lambda: waiting(1), what="the drop of util.py to wait, its chunks deleted")
        tasks.start_soon(save, ("util.py", "b.py"))
        await until(lambda: waiting(2), what="the save to wait for util.py's deleted chunk")
        await blocker.rollback()
    geo, readme, b = (len(update(path, files[path]).chunks) for path in ("geo.py", "readme.md", "b.py"))
    assert saved == [geo + readme, b]  # util.py's chunk was gone: skipped, not a failed batch
    assert await project.consistency_problems() == []
    assert await project.vector_counts() == await table_counts(project) == (geo + b, geo + b)
