"""The version-2 store layout against a real PostgreSQL + pgvector: an upgrade from
version 1 keeps every vector and search, installations never share an index, a newer
schema is refused, concurrent starts are safe, and the definitions and unit spans the
chunker finds are stored and found again."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy import text

from codequarry.chunking import CHUNKER_VERSION, Budget, Chunker, embedding_text, search_text
from codequarry.config import Settings
from codequarry.errors import StoreUnavailable
from codequarry.models import FileUpdate
from codequarry.runtime import open_runtime
from codequarry.scan import content_hash
from codequarry.store.db import Store, create_engine
from codequarry.store.migrations import PROJECT_MIGRATIONS, SHARED_MIGRATIONS, quote_ident
from codequarry.store.project import Filters

from .conftest import write_files
from .fakes import HashEmbedder

CHUNKER = Chunker()
SOURCE = (
    "class Client:\n"
    "    def send(self, request):\n        return self.transport.send(request)\n\n"
    "    def close(self):\n        self.transport.close()\n\n\n"
    "def parse_config(path):\n    return open(path).read()\n"
)


def update(path: str, source: str, chunker: Chunker = CHUNKER) -> FileUpdate:
    analysed = chunker.analyse(path, source)
    return FileUpdate(path, len(source), 1, content_hash(source.encode()), analysed.language,
                      chunks=tuple(analysed.chunks),
                      search_texts=tuple(search_text(path, c) for c in analysed.chunks),
                      definitions=tuple(analysed.definitions))


@pytest.fixture
async def store(make_settings: Callable[..., Settings]) -> AsyncIterator[Store]:
    store = await Store.open(make_settings())
    try:
        yield store
    finally:
        await store.close()


async def test_definitions_are_stored_per_file_and_found_exactly_qualified_by_prefix_and_fuzzily(
        store: Store) -> None:
    project = await store.ensure_project("demo", "/repo")
    await project.apply([update("client.py", SOURCE)])

    def found(hits: list[tuple[str, str, object]]) -> list[str]:
        return [definition.qualified_name for _, _, definition in hits]  # type: ignore[attr-defined]

    exact = await project.find_definitions("send")
    assert found(exact) == ["Client.send"]
    path, language, definition = exact[0]
    assert (path, language, definition.kind, definition.start_line, definition.end_line) == (
        "client.py", "python", "method", 2, 3)
    assert found(await project.find_definitions("Client.close")) == ["Client.close"]
    assert found(await project.find_definitions("parse")) == ["parse_config"]  # prefix
    assert found(await project.find_definitions("parse_confg")) == ["parse_config"]  # a typo
    assert found(await project.find_definitions("client", kind="class")) == ["Client"]
    assert await project.find_definitions("nothing_like_it") == []

    await project.apply([update("client.py", "def only():\n    return 1\n")])
    assert found(await project.find_definitions("send")) == []  # replaced with the file
    await project.apply([], deleted=["client.py"])
    assert await project.find_definitions("only") == []


async def test_windows_of_a_long_function_share_the_functions_span_as_their_unit(store: Store) -> None:
    body = "".join(f"    total += compute_step_{i}(value, factor={i})\n" for i in range(60))
    source = f"def long_function(value):\n    total = 0\n{body}    return total\n"
    chunker = Chunker(Budget(max_tokens=128, min_tokens=25))
    project = await store.ensure_project("demo", "/repo")
    await project.apply([update("long.py", source, chunker)])
    async with store.engine.connect() as conn:
        rows = (await conn.execute(text(
            f"SELECT start_line, end_line, unit_start, unit_end FROM {project.s}.chunks "
            "ORDER BY ordinal"))).all()
    assert len(rows) > 2
    assert {(row.unit_start, row.unit_end) for row in rows} == {(1, 63)}
    assert rows[0].start_line == 1
    assert rows[-1].end_line == 63
    ids = await project.lexical([("comput", 1.0)], ["comput"], Filters(), 5)
    chunk_rows = await project.chunk_rows([chunk_id for chunk_id, _ in ids])
    assert chunk_rows
    assert {row.chunk.unit_span for row in chunk_rows.values()} == {(1, 63)}


async def test_two_installations_on_one_database_never_share_an_index(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    first_settings = make_settings()
    second_settings = Settings(first_settings.config, first_settings.config_path, tmp_path / "teammate")
    first, second = await Store.open(first_settings), await Store.open(second_settings)
    try:
        assert first.installation != second.installation
        mine = await first.ensure_project("ext", "/home/a/ext")
        theirs = await second.ensure_project("ext", "/home/b/ext")
        assert mine.schema != theirs.schema
        await mine.apply([update("mine.py", SOURCE)])
        await theirs.apply([update("theirs.py", "def other():\n    return 2\n")])
        assert set(await mine.indexed_files()) == {"mine.py"}
        assert set(await theirs.indexed_files()) == {"theirs.py"}
        assert await first.indexed_projects() == {"ext": "/home/a/ext"}
        assert await second.indexed_projects() == {"ext": "/home/b/ext"}
    finally:
        await first.close()
        await second.close()


async def test_a_copied_data_dir_on_a_shared_server_is_refused_with_the_fix(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    original = make_settings()
    first = await Store.open(original)
    await first.close()
    copy_dir = tmp_path / "copied-data"
    shutil.copytree(original.data_dir, copy_dir)
    with pytest.raises(StoreUnavailable, match=r"looks like a copy of it: delete .*installation-id"):
        await Store.open(Settings(original.config, original.config_path, copy_dir))
    (copy_dir / "installation-id").unlink()  # the fix the message names
    await (await Store.open(Settings(original.config, original.config_path, copy_dir))).close()


async def test_a_database_written_by_a_newer_codequarry_is_refused_and_left_untouched(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    store = await Store.open(settings)
    async with store.transaction() as conn:
        await conn.execute(text("UPDATE codequarry.schema_version SET version = 99 WHERE scope = 'shared'"))
    await store.close()
    with pytest.raises(StoreUnavailable, match=r"newer codequarry .*version 99"):
        await Store.open(settings)
    engine = create_engine(settings.config.database.url.replace("postgresql://", "postgresql+asyncpg://"))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT version FROM codequarry.schema_version"))).scalar() == 99
    await engine.dispose()


async def test_two_processes_starting_the_same_new_project_at_once_both_succeed(
        make_settings: Callable[..., Settings], hash_embedder: HashEmbedder) -> None:
    settings = make_settings()
    stores = [await Store.open(settings) for _ in range(3)]
    try:
        async def start(store: Store) -> None:
            project = await store.ensure_project("race", "/repo")
            await project.set_model(hash_embedder.model_id, hash_embedder.dims)

        async with anyio.create_task_group() as tasks:
            for store in stores:
                tasks.start_soon(start, store)
        async with stores[0].engine.connect() as conn:
            rows = (await conn.execute(text(
                "SELECT count(*) FROM codequarry.projects WHERE id = 'race'"))).scalar()
        assert rows == 1
        assert (await (await stores[1].project("race")).space()).table == "vectors_1"
    finally:
        for store in stores:
            await store.close()


async def _write_version_1(settings: Settings, root: Path, embedder: HashEmbedder) -> None:
    """A database exactly as codequarry 0.1 left it: vectors inside the chunk rows."""
    url = settings.config.database.url.replace("postgresql://", "postgresql+asyncpg://")
    schema = quote_ident("cq_legacy")
    engine = create_engine(url)
    async with engine.begin() as conn:
        for statement in SHARED_MIGRATIONS[0]:
            await conn.execute(text(statement))
        await conn.execute(text("INSERT INTO codequarry.schema_version VALUES ('shared', 1)"))
        for step in PROJECT_MIGRATIONS[0]:
            assert isinstance(step, str)
            await conn.execute(text(step.format(s=schema)))
        await conn.execute(text(
            f"ALTER TABLE {schema}.chunks ALTER COLUMN embedding TYPE vector({embedder.dims})"))
    await engine.dispose()
    engine = create_engine(url)  # new connections know the vector type now
    async with engine.begin() as conn:
        await conn.execute(text(
            "INSERT INTO codequarry.projects (id, schema_name, root, model_id, dims, schema_version) "
            "VALUES ('legacy', 'cq_legacy', :root, :m, :d, 1)"),
            {"root": str(root), "m": embedder.model_id, "d": embedder.dims})
        for path in ("client.py",):
            source = (root / path).read_text()
            written = update(path, source)
            await conn.execute(text(
                f"INSERT INTO {schema}.files (path, size, mtime_ns, content_hash, language, chunk_count) "
                "VALUES (:p, :size, :mtime, :h, 'python', :n)"),
                {"p": path, "size": (root / path).stat().st_size, "mtime": (root / path).stat().st_mtime_ns,
                 "h": content_hash((root / path).read_bytes()), "n": len(written.chunks)})
            vectors = embedder.vectors([embedding_text(c) for c in written.chunks])
            for ordinal, (chunk, words) in enumerate(zip(written.chunks, written.search_texts, strict=True)):
                await conn.execute(text(
                    f"INSERT INTO {schema}.chunks (path, ordinal, start_line, end_line, language, symbol, "
                    "kind, content, content_hash, tsv, embedding) VALUES (:p, :o, :s, :e, 'python', :sym, "
                    ":k, :c, :h, to_tsvector('english', :w), :v)"),
                    {"p": path, "o": ordinal, "s": chunk.start_line, "e": chunk.end_line, "sym": chunk.symbol,
                     "k": chunk.kind, "c": chunk.content, "h": chunk.content_hash, "w": words.body,
                     "v": vectors[ordinal]})
                await conn.execute(text(
                    "INSERT INTO codequarry.embedding_cache (model_id, content_hash, embedding) "
                    "VALUES (:m, :h, :v) ON CONFLICT DO NOTHING"),
                    {"m": embedder.model_id, "h": chunk.content_hash, "v": vectors[ordinal]})
        count = len(update("client.py", (root / "client.py").read_text()).chunks)
        await conn.execute(text(f"UPDATE {schema}.stats SET chunks = :n, embedded = :n"), {"n": count})
    await engine.dispose()


async def test_an_index_from_version_1_is_adopted_keeps_its_vectors_and_is_rechunked_without_embedding(
        make_settings: Callable[..., Settings], tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    root = write_files(tmp_path / "legacy", {"client.py": SOURCE})
    settings = make_settings([{"id": "legacy", "path": str(root)}])
    await _write_version_1(settings, root, hash_embedder)

    store = await Store.open(settings)
    try:
        project = await store.ensure_project("legacy", str(root))
        assert project.schema == "cq_legacy"  # adopted by this installation, not rebuilt
        chunks, embedded = await project.vector_counts()
        assert chunks == embedded > 0
        assert await project.consistency_problems() == []
        hits = await project.semantic(hash_embedder.vectors(["transport send request"])[0], Filters(), 3,
                                      store.iterative_scans)
        assert hits  # search works straight after the upgrade, before any re-index
    finally:
        await store.close()

    async with open_runtime(settings, hash_embedder) as runtime:  # the daemon's start: reconcile
        indexed = await runtime.indexer.add_project(settings.config.project("legacy"))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.indexer.run)
            await runtime.indexer.reconcile("legacy")
            with anyio.fail_after(30):
                while not (runtime.indexer.idle() and runtime.indexer.embedding_settled()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()
        files = await indexed.store.indexed_files()
        assert files["client.py"].chunker_version == CHUNKER_VERSION  # re-chunked in the background
        definitions = await indexed.store.find_definitions("send")
        assert [d.qualified_name for _, _, d in definitions] == ["Client.send"]
        assert hash_embedder.embedded_texts == []  # every vector came from the embedding cache
        assert await indexed.store.consistency_problems() == []


async def test_an_embedding_text_upgrade_reembeds_in_the_background_and_vector_coverage_never_drops(
        make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """After an upgrade that changes what is embedded, every file is re-chunked with new
    content hashes; each file keeps its old chunks and vectors until the cache holds all
    its new vectors, so semantic search covers every chunk at every moment."""
    import codequarry.chunking
    import codequarry.indexer

    from .conftest import SlowEmbedder

    files = {f"pkg/mod{i}.py": f"def handler_{i}(request):\n    return respond(request, {i})\n"
             for i in range(12)}
    root = write_files(tmp_path / "repo", files)
    settings = make_settings([{"id": "up", "path": str(root)}])
    embedder = SlowEmbedder(0.05)

    async def run_until_settled(runtime: object) -> list[tuple[int, int]]:
        indexer = runtime.indexer  # type: ignore[attr-defined]
        project = indexer.projects["up"]
        seen = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(indexer.run)
            await indexer.reconcile("up")
            with anyio.fail_after(60):
                while not (indexer.idle() and indexer.embedding_settled()):
                    seen.append(await project.store.vector_counts())
                    await anyio.sleep(0.02)
            tasks.cancel_scope.cancel()
        return seen

    async with open_runtime(settings, embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("up"))
        await run_until_settled(runtime)
        store = runtime.indexer.projects["up"].store
        before = {h for path in files for h, *_ in await store.file_chunks(path)}

    monkeypatch.setattr(codequarry.chunking, "EMBEDDING_TEXT_VERSION", 99)
    monkeypatch.setattr(codequarry.indexer, "CHUNKER_VERSION", codequarry.indexer.CHUNKER_VERSION + 1)
    embedder.embedded_texts.clear()
    async with open_runtime(settings, embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("up"))
        seen = await run_until_settled(runtime)
        after = {h for path in files for h, *_ in await project.store.file_chunks(path)}
        assert await project.store.consistency_problems() == []
    assert seen  # it was watched while it worked
    assert all(chunks == embedded for chunks, embedded in seen)  # coverage never dropped
    assert after.isdisjoint(before)  # every chunk is new ...
    assert len(embedder.embedded_texts) == len(after)  # ... and embedded exactly once


async def test_a_model_change_keeps_the_previous_models_vectors_serving_until_the_new_ones_cover_all(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """Blue/green: the project is indexed with the local model; the daemon restarts with
    another model. While the new vectors fill in, semantic search still answers, through
    the previous model (rebuilt from its recorded config); once the new model covers every
    chunk it is promoted, with its HNSW index, and the old vectors are dropped."""
    from codequarry.search import SearchRequest

    from .conftest import SlowEmbedder

    files = {f"net/client{i}.py": f"def send_request_{i}(url):\n    return http_get(url, retries={i})\n"
             for i in range(40)}
    files["geo/shapes.py"] = "def sphere_volume(radius):\n    return 4 / 3 * 3.14159 * radius ** 3\n"
    root = write_files(tmp_path / "repo", files)
    settings = make_settings([{"id": "bg", "path": str(root)}])
    request = SearchRequest("volume of a ball", ("bg",), "semantic", limit=3)

    async with open_runtime(settings) as runtime:  # the configured local model
        project = await runtime.indexer.add_project(settings.config.project("bg"))
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.indexer.run)
            await runtime.indexer.reconcile("bg")
            with anyio.fail_after(120):
                while not (runtime.indexer.idle() and runtime.indexer.embedding_settled()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()
        local_model = runtime.indexer.model_id
        assert local_model is not None
        assert (await project.store.space()).hnsw_ready

    new_model = SlowEmbedder(1.0)  # three batches: seconds of a half-switched project
    async with open_runtime(settings, new_model) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("bg"))
        answers = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.indexer.run)
            with anyio.fail_after(120):
                while (await project.store.space(fresh=True)).next is None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                counts = await project.store.counts()
                assert counts.model_id == local_model  # still serving
                assert counts.next_model_id == new_model.model_id
                answers.append(await runtime.searcher.search(request, new_model.model_id))
                while (await project.store.space(fresh=True)).next is not None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()
        space = await project.store.space(fresh=True)
        after = await runtime.searcher.search(request, new_model.model_id)
        problems = await project.store.consistency_problems()
    during = answers[0]
    assert during.results
    assert during.results[0].path == "geo/shapes.py"  # the local model's answer
    assert any("previous model" in note for note in during.notes)
    assert (space.model_id, space.hnsw_ready, space.next) == (new_model.model_id, True, None)
    assert after.results  # now answered with the new model's vectors
    assert not any("previous model" in note for note in after.notes)
    assert problems == []


async def test_models_above_the_hnsw_limit_are_stored_as_halfvec_or_refused_in_one_line(
        make_settings: Callable[..., Settings], hash_embedder: HashEmbedder) -> None:
    """pgvector indexes up to 2,000 dims of vector and 4,000 of halfvec: nomic-embed-code's
    3,584 dims go to halfvec even where 32-bit floats were asked for; 4,096 are refused,
    and the daemon says so as an embedder error instead of failing over and over."""
    settings = make_settings(index={"vector_type": "vector"})
    store = await Store.open(settings)
    try:
        assert store.vector_type(768) == "vector"
        assert store.vector_type(3584) == "halfvec"
        with pytest.raises(StoreUnavailable, match="above pgvector's HNSW limit"):
            store.vector_type(4096)
    finally:
        await store.close()

    too_wide = HashEmbedder(dims=4096, model_id="hash:wide:4096")
    async with open_runtime(settings, too_wide) as runtime:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(runtime.indexer.run)
            with anyio.fail_after(30):
                while runtime.indexer.embedder_error is None:  # noqa: ASYNC110
                    await anyio.sleep(0.05)
            tasks.cancel_scope.cancel()
        assert "4096-dimensional model is above pgvector's HNSW limit" in runtime.indexer.embedder_error
        assert runtime.indexer.embedder_fatal
        assert runtime.indexer.model_id is None


def test_a_method_split_around_its_nested_function_is_one_unit() -> None:
    """A method too big for one chunk, with a function inside it, comes back as pieces
    around the nested function: all of them carry the method's span as their unit (a
    search merges them into one result), while the class's other method stays its own."""
    body = "".join(f"        total += weigh(row, {i})\n" for i in range(25))
    source = ("class Table:\n"
              "    def render(self, rows):\n"
              "        total = 0\n"
              "        def weigh(row, factor):\n"
              f"            return len(row) * factor + {'1 + ' * 30}1\n"
              f"{body}"
              "        return total\n\n"
              "    def add_row(self, row):\n"
              "        self.rows.append(row)\n")
    chunks = Chunker(Budget(max_tokens=96, min_tokens=8)).analyse("table.py", source).chunks
    render_end = 2 + 3 + 25 + 1
    inside = [c for c in chunks if c.start_line >= 2 and c.end_line <= render_end]
    assert len(inside) > 2
    assert {c.unit_span for c in inside} == {(2, render_end)}
    add_row = next(c for c in chunks if c.symbol == "Table.add_row")
    assert add_row.unit_span == (add_row.start_line, add_row.end_line)


async def test_each_piece_of_a_split_method_names_the_method_through_the_unit_index(store: Store) -> None:
    """hit_spans gives every piece of a method split around its nested function the
    method's symbol and kind (its unit's first named chunk), and its statement can find
    that head through the chunks_unit index (schema version 3) instead of reading every
    chunk of the file."""
    body = "".join(f"        total += weigh(row, {i})\n" for i in range(25))
    source = ("class Table:\n    def render(self, rows):\n        total = 0\n"
              "        def weigh(row, factor):\n"
              f"            return len(row) * factor + {'1 + ' * 30}1\n{body}        return total\n")
    project = await store.ensure_project("units", "/repo")
    await project.apply([update("table.py", source, Chunker(Budget(max_tokens=96, min_tokens=8)))])
    async with store.engine.connect() as conn:
        ids = [row.id for row in await conn.execute(text(
            f"SELECT id FROM {project.s}.chunks WHERE start_line >= 2 ORDER BY ordinal"))]
        sql, params = project.hit_spans_statement(ids)
        await conn.execute(text("SET LOCAL enable_seqscan = off"))
        await conn.execute(text("SET LOCAL enable_bitmapscan = off"))
        plan = "\n".join(row[0] for row in await conn.execute(text("EXPLAIN " + sql), params))
    spans = await project.hit_spans(ids)
    assert len(ids) > 2
    assert {(span.symbol, span.kind) for span in spans.values()} == {("Table.render", "method")}
    assert "chunks_unit" in plan
