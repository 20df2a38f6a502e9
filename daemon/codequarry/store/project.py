"""One project's schema: files, chunks (words + spans), definitions, vectors, change
events, counters.

Every write that changes what search sees happens in one transaction per batch of
files, so a crash leaves each file either wholly old or wholly new. Vectors live in a
narrow table of the active model (`vectors_<n>`, chunk id -> embedding): saving one never
rewrites a chunk row or its full-text index entries. Its HNSW index is built once the
project's backlog is embedded (`ensure_hnsw`), not maintained row by row during a cold
index; until then vector search scans the table exactly.
"""

from __future__ import annotations

import difflib
import math
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from codequarry.chunking import search_text
from codequarry.models import (
    ChangeEvent,
    ChangeKind,
    Chunk,
    FileUpdate,
    Freshness,
    IndexedFile,
    SymbolDefinition,
)
from codequarry.store.chunk_match import StoredChunk, kept_rows, moves
from codequarry.store.migrations import quote_ident

Vector = np.ndarray[Any, np.dtype[np.float32]]

# tsvector of a chunk: symbol words weigh most (A), then path words (B), then the body (D)
TSV_SQL = ("setweight(to_tsvector('english', :symbol_words), 'A') || "
           "setweight(to_tsvector('english', :path_words), 'B') || "
           "to_tsvector('english', :body_words)")
LEXICAL_CANDIDATES = 2000  # rows ranked per lexical query, at most
# lexical ranking (ProjectStore.lexical), tuned on the tuning sets with bench/tune_lexical.py
# and, for the fusion it feeds, the hybrid proxy of that session: ts_rank weights of a
# lexeme in {body (D), unused (C), path (B), symbol (A)}, BM25 k1 and b. ts_rank already
# saturates a lexeme's count (its best weight plus a 1/j^2 tail), so k1 = 3 keeps BM25's
# second saturation light; chunks are bounded in size, so length normalisation stays light.
# Weighted occurrence counts with the textbook k1 1.2 / b 0.75 (BM25F) ranked better alone
# on the asked questions but cost hybrid up to 0.08 MRR@10 on the other sets.
FIELD_WEIGHTS = (0.4, 0.2, 0.4, 1.0)
BM25_K1 = 3.0
BM25_B = 0.15
# every connection's hnsw.ef_search: 2 x the 100 candidates a search ranks (search.py
# CANDIDATE_POOL), so a search needs no transaction of its own to raise it
SESSION_EF_SEARCH = 200
MODEL_CACHE_SECONDS = 5.0
STATS_CACHE_SECONDS = 60.0  # ANALYZE's common lexemes and the mean chunk length
# an idle backlog scan trusts the vector counters (exact) and checks the table itself this
# often, so a vector lost behind their back is embedded again within this long
FULL_SCAN_SECONDS = 300.0
# ANALYZE's most common lexemes of a chunks table; callers add "AND schemaname = ..."
COMMON_LEXEMES_SQL = ("SELECT schemaname, most_common_elems::text::text[] AS elems, "
                      "most_common_elem_freqs AS freqs FROM pg_stats "
                      "WHERE tablename = 'chunks' AND attname = 'tsv'")
# where a ranked chunk `c` lies, as HitSpan's fields: its unit's span (its own without one)
# and the symbol and kind of its unit's head `h` (ProjectStore._unit_head)
_SPAN_COLUMNS = ("c.path, coalesce(c.unit_start, c.start_line) AS us, "
                 "coalesce(c.unit_end, c.end_line) AS ue, c.start_line, c.end_line, c.language, "
                 "coalesce(h.symbol, c.symbol) AS symbol, coalesce(h.kind, c.kind) AS kind")
# A filtered vector search ranks the matching chunks exactly up to this many (else it walks
# the HNSW index): at 104k chunks and load ~4, 7,074 matching chunks ranked exactly in 43 ms
# p50 against 92 ms for pgvector's iterative scan; 12,775 in 76 against 50 (bench/README.md)
EXACT_FILTERED_CHUNKS = 10_000
HNSW_BUILD_MEMORY = "256MB"  # maintenance_work_mem for an HNSW build: 100k 384-d halfvecs fit


@dataclass(frozen=True, slots=True)
class VectorTable:
    """One model's vectors: a table `vectors_<n>` in the project's schema."""

    model_id: str
    dims: int
    table: str  # unquoted name in the project's schema
    type: str  # "vector" | "halfvec"


@dataclass(frozen=True, slots=True)
class VectorSpace:
    """The project's active embedding model (which search uses) and, while the model
    changes, the next one (which the embed worker fills until it covers every chunk)."""

    model_id: str | None
    dims: int | None
    table: str | None  # unquoted name in the project's schema, None before any model
    type: str  # "vector" | "halfvec"
    hnsw_ready: bool
    next: VectorTable | None = None

    @property
    def active(self) -> VectorTable | None:
        if self.table is None or self.model_id is None or self.dims is None:
            return None
        return VectorTable(self.model_id, self.dims, self.table, self.type)

    @property
    def target(self) -> VectorTable | None:
        """Where new vectors go: the next model's table while there is one."""
        return self.next or self.active


_SPACE_SQL = ("SELECT model_id, dims, vector_table, vector_type, hnsw_ready, next_model_id, next_dims, "
              "next_vector_table, next_vector_type FROM codequarry.projects "
              "WHERE installation = :i AND id = :id")


# the vector spaces of several projects (:ids) of an installation, with their id
SPACES_SQL = ("SELECT id, model_id, dims, vector_table, vector_type, hnsw_ready, next_model_id, next_dims, "
              "next_vector_table, next_vector_type FROM codequarry.projects "
              "WHERE installation = :i AND id = ANY(:ids)")


def _space_of(row: Any) -> VectorSpace:
    following = None
    if row.next_vector_table:
        following = VectorTable(row.next_model_id, row.next_dims, row.next_vector_table, row.next_vector_type)
    return VectorSpace(row.model_id, row.dims, row.vector_table, row.vector_type or "vector",
                       bool(row.hnsw_ready), following)


@dataclass(frozen=True, slots=True)
class Filters:
    """Search restrictions; `path_regex` is a PostgreSQL regular expression on the path."""

    languages: tuple[str, ...] = ()
    path_regex: str | None = None

    def sql(self, params: dict[str, Any], alias: str = "") -> str:
        """` AND ...` clauses on the chunks table (`alias` like "c." when joined)."""
        clauses = []
        if self.languages:
            clauses.append(f"{alias}language = ANY(:languages)")
            params["languages"] = list(self.languages)
        if self.path_regex:
            clauses.append(f"{alias}path ~ :path_regex")
            params["path_regex"] = self.path_regex
        return "".join(f" AND {clause}" for clause in clauses)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A stored chunk with its location, for building search hits."""

    id: int
    path: str
    chunk: Chunk  # with unit_start / unit_end: the enclosing unit's span


@dataclass(frozen=True, slots=True)
class Counts:
    files: int
    skipped_files: int
    chunks: int
    embedded: int
    pending_files: int
    pending_events: int
    last_event_at: datetime | None
    last_indexed_at: datetime | None
    oldest_pending_at: datetime | None
    model_id: str | None
    recent_errors: list[str]
    next_model_id: str | None = None  # the model being switched to, while its vectors fill
    next_embedded: int = 0

    @property
    def vector_coverage(self) -> float:
        return self.embedded / self.chunks if self.chunks else 1.0


_T = TypeVar("_T")


class Remembered(Generic[_T]):
    """A value read from the database, trusted for `seconds` (monotonic clock) after it
    was put; get() is None once it is older, or after forget()."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._entry: tuple[float, _T] | None = None

    def get(self) -> _T | None:
        if self._entry is not None and time.monotonic() - self._entry[0] < self.seconds:
            return self._entry[1]
        return None

    def put(self, value: _T) -> _T:
        self._entry = (time.monotonic(), value)
        return value

    def forget(self) -> None:
        self._entry = None


class ProjectStore:
    def __init__(self, engine: AsyncEngine, installation: str, project_id: str, schema: str,
                 vector_type: Callable[[int], str] = lambda dims: "vector") -> None:
        self.engine = engine
        # single-statement reads need no transaction: autocommit spares a BEGIN and a
        # ROLLBACK round trip each, which is most of a search's database time
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.installation = installation
        self.project_id = project_id
        self.schema = schema
        self.s = quote_ident(schema)
        self._vector_type = vector_type
        self._common = Remembered[dict[str, float]](STATS_CACHE_SECONDS)  # lexeme -> share of chunks
        self._space = Remembered[VectorSpace](MODEL_CACHE_SECONDS)
        self._unembedded_after = 0  # id cursor of the backlog scan (see unembedded)
        self._full_scan_due = 0.0  # monotonic time of the next backlog scan the counters cannot skip
        self._key = {"i": installation, "id": project_id}
        # the advisory lock of the project's schema changes (Store.ensure_project uses it too)
        self._lock_key = project_lock_key(installation, project_id)
        self._lengths = Remembered[float](STATS_CACHE_SECONDS)

    # ---- reading what is indexed ------------------------------------------------------

    async def indexed_files(self, paths: Sequence[str] | None = None,
                            prefix: str | None = None) -> dict[str, IndexedFile]:
        """What the store knows of `paths`, or of paths starting with `prefix`, or of all."""
        # one row of arrays: a reconcile reads every file, and thousands of rows through the
        # result machinery cost three times the query (71 vs 22 ms for 3,000 files, loaded)
        query = ("SELECT array_agg(path), array_agg(size), array_agg(mtime_ns), array_agg(content_hash), "
                 f"array_agg(skip_reason), array_agg(chunker_version) FROM {self.s}.files")
        if paths is not None:
            query += " WHERE path = ANY(:paths)"
        elif prefix is not None:
            query += " WHERE starts_with(path, :prefix)"
        async with self.reader.connect() as conn:
            columns = (await conn.execute(text(query), {"paths": list(paths or ()), "prefix": prefix})).one()
        if columns[0] is None:  # no file matched
            return {}
        return {row[0]: IndexedFile(*row) for row in zip(*columns, strict=True)}

    async def chunk_hashes(self, paths: Sequence[str]) -> dict[str, set[str]]:
        """The content hashes of the stored chunks of each of `paths` that has chunks."""
        if not paths:
            return {}
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT path, array_agg(content_hash) FROM {self.s}.chunks WHERE path = ANY(:paths) "
                "GROUP BY path"), {"paths": list(paths)})
            return {row[0]: set(row[1]) for row in rows}

    async def file_chunks(self, path: str) -> list[tuple[str, int, int, bool]]:
        """(content_hash, start_line, end_line, has_vector) of a file's chunks, in order."""
        space = await self.space()
        has_vector = (f"EXISTS (SELECT 1 FROM {self._table(space)} v WHERE v.chunk_id = c.id)"
                      if space.table else "false")
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT content_hash, start_line, end_line, {has_vector} FROM {self.s}.chunks c "
                "WHERE path = :p ORDER BY ordinal"), {"p": path})
            return [(row[0], row[1], row[2], row[3]) for row in rows]

    # ---- change events ---------------------------------------------------------------

    async def record_events(self, events: Sequence[tuple[str, ChangeKind, str | None]]) -> None:
        """Persist detected changes (path, kind, previous path) as unprocessed events."""
        if not events:
            return
        now = datetime.now(UTC)
        async with self.engine.begin() as conn:
            await conn.execute(text(
                f"INSERT INTO {self.s}.change_events (path, kind, previous_path, detected_at) "
                "VALUES (:path, :kind, :previous, :now)"),
                [{"path": p, "kind": str(k), "previous": prev, "now": now} for p, k, prev in events])

    async def pending_event_paths(self) -> list[str]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT DISTINCT path FROM {self.s}.change_events WHERE processed_at IS NULL"))
            return [row.path for row in rows]

    async def finish_events(self, paths: Sequence[str], error: str | None = None) -> None:
        if not paths:
            return
        async with self.engine.begin() as conn:
            await _finish_events(conn, self.s, paths, error)

    async def recent_changes(self, limit: int) -> list[ChangeEvent]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT path, kind, detected_at, processed_at, error, previous_path "
                f"FROM {self.s}.change_events ORDER BY detected_at DESC, id DESC LIMIT :n"),
                {"n": limit})
            return [ChangeEvent(self.project_id, r.path, ChangeKind(r.kind), r.detected_at,
                                r.processed_at, r.error, r.previous_path) for r in rows]

    async def prune_events(self, keep_days: int = 7) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(text(
                f"DELETE FROM {self.s}.change_events WHERE processed_at < now() - make_interval(days => :d)"),
                {"d": keep_days})

    # ---- writing files and chunks ------------------------------------------------------

    async def apply(self, updates: Sequence[FileUpdate], deleted: Sequence[str] = (),
                    model_id: str | None = None, renames: dict[str, str] | None = None,
                    chunker_version: int = 0) -> list[str]:
        """Replace the chunks and definitions of `updates`, drop `deleted`, in one transaction.

        A stored chunk whose content reappears in its file's new chunks keeps its row (id,
        words, vectors), moved to its new place (see chunk_match.py); the rest are deleted
        and the new ones inserted. Their vectors are copied from the embedding cache where
        it has them (for `model_id`, the active model); returns the content hashes still to
        embed. `renames` (new path -> old path) turns the pending created-events of those
        paths into renamed-events.
        """
        paths = [u.path for u in updates] + list(deleted)
        if not paths:
            return []
        async with self.engine.begin() as conn:
            space = await self._locked_space(conn)
            kept = await self._kept_rows(conn, paths, updates)
            removed, removed_vectors = await self._delete_chunks(conn, space, paths, kept)
            await self._move_chunks(conn, updates, kept)
            await conn.execute(text(f"DELETE FROM {self.s}.definitions WHERE path = ANY(:paths)"),
                               {"paths": paths})
            if deleted:
                await conn.execute(text(f"DELETE FROM {self.s}.files WHERE path = ANY(:p)"),
                                   {"p": list(deleted)})
            now = datetime.now(UTC)
            if updates:
                await conn.execute(text(
                    f"INSERT INTO {self.s}.files (path, size, mtime_ns, content_hash, language, "
                    "skip_reason, chunk_count, indexed_at, chunker_version) VALUES (:path, :size, "
                    ":mtime_ns, :hash, :language, :skip, :count, :now, :cv) ON CONFLICT (path) DO UPDATE "
                    "SET size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, "
                    "content_hash = EXCLUDED.content_hash, "
                    "language = EXCLUDED.language, skip_reason = EXCLUDED.skip_reason, "
                    "chunk_count = EXCLUDED.chunk_count, indexed_at = EXCLUDED.indexed_at, "
                    "chunker_version = EXCLUDED.chunker_version"),
                    [{"path": u.path, "size": u.size, "mtime_ns": u.mtime_ns, "hash": u.content_hash,
                      "language": u.language, "skip": u.skip_reason, "count": len(u.chunks),
                      "now": now, "cv": chunker_version} for u in updates])
            inserted = await self._insert_chunks(conn, updates, kept)
            await self._insert_definitions(conn, updates)
            missing: list[str] = []
            cached = 0
            written = [u.path for u in updates if u.chunks]
            active = space.active
            for table in (active, space.next) if written else ():
                if table is not None:  # each table takes its own model's cached vectors
                    copied = await self._copy_cached_vectors(conn, self._table(table), table.type,
                                                             table.model_id, "c.path = ANY(:paths)",
                                                             {"paths": written})
                    cached += copied if table is active else 0
            target = space.target
            if written and target is not None and target.model_id == model_id:
                missing = [row[0] for row in await conn.execute(text(
                    f"SELECT DISTINCT c.content_hash FROM {self.s}.chunks c WHERE c.path = ANY(:paths) "
                    f"AND NOT EXISTS (SELECT 1 FROM {self._table(target)} v WHERE v.chunk_id = c.id)"),
                    {"paths": written})]
            elif written:
                missing = sorted({c.content_hash for u in updates for c in u.chunks})
            await conn.execute(text(
                f"UPDATE {self.s}.stats SET chunks = chunks + :dc, embedded = embedded + :de, "
                "last_indexed_at = :now"),
                {"dc": inserted - removed, "de": cached - removed_vectors, "now": now})
            if renames:
                await conn.execute(text(
                    f"UPDATE {self.s}.change_events SET kind = 'renamed', previous_path = :old "
                    "WHERE path = :new AND processed_at IS NULL"),
                    [{"new": new, "old": old} for new, old in renames.items()])
            await _finish_events(conn, self.s, paths, None)
        return missing

    async def _kept_rows(self, conn: AsyncConnection, paths: Sequence[str],
                         updates: Sequence[FileUpdate]) -> dict[str, dict[int, StoredChunk]]:
        """Lock the stored chunk rows of `paths`, and return path -> (new ordinal -> the
        stored row it keeps) of the updates with chunks."""
        # locked in id order, as savers lock: a vector saved for one of them meanwhile is
        # committed before this returns, so the count in _delete_chunks holds it (else the
        # counters kept a vector the delete removed), and none can be added until commit
        rows = await conn.execute(text(
            "SELECT path, id, content_hash, ordinal, start_line, end_line, unit_start, unit_end "
            f"FROM {self.s}.chunks WHERE path = ANY(:paths) ORDER BY id FOR UPDATE"), {"paths": list(paths)})
        stored: dict[str, list[StoredChunk]] = {}
        for row in rows:
            stored.setdefault(row[0], []).append(StoredChunk(*row[1:]))
        return {u.path: kept_rows(sorted(stored[u.path], key=lambda r: r.ordinal), u.chunks)
                for u in updates if u.chunks and u.path in stored}

    async def _delete_chunks(self, conn: AsyncConnection, space: VectorSpace, paths: Sequence[str],
                             kept: dict[str, dict[int, StoredChunk]]) -> tuple[int, int]:
        """Delete the chunk rows of `paths` that are not kept; returns (rows deleted, of
        them with a vector in the active table)."""
        params = {"paths": list(paths), "kept": [row.id for rows in kept.values() for row in rows.values()]}
        going = "c.path = ANY(:paths) AND NOT c.id = ANY(:kept)"
        removed_vectors = 0
        if space.table:
            removed_vectors = int((await conn.execute(text(
                f"SELECT count(*) FROM {self._table(space)} v JOIN {self.s}.chunks c "
                f"ON c.id = v.chunk_id WHERE {going}"), params)).scalar() or 0)
        removed = (await conn.execute(text(f"DELETE FROM {self.s}.chunks c WHERE {going}"), params)).rowcount
        return removed or 0, removed_vectors

    async def _move_chunks(self, conn: AsyncConnection, updates: Sequence[FileUpdate],
                           kept: dict[str, dict[int, StoredChunk]]) -> None:
        """Give kept rows whose place changed their new ordinal, lines and unit span; their
        words and vectors stay as they are."""
        rows = [move._asdict() for u in updates if u.path in kept for move in moves(kept[u.path], u.chunks)]
        if rows:
            await conn.execute(text(
                f"UPDATE {self.s}.chunks SET ordinal = :ordinal, start_line = :start_line, "
                "end_line = :end_line, unit_start = :unit_start, unit_end = :unit_end WHERE id = :id"), rows)

    async def _insert_chunks(self, conn: AsyncConnection, updates: Sequence[FileUpdate],
                             kept: dict[str, dict[int, StoredChunk]]) -> int:
        """Insert the chunks of `updates` that no kept row stands for; returns how many."""
        rows = []
        for update in updates:
            keeps = kept.get(update.path, {})
            for ordinal, (chunk, words) in enumerate(zip(update.chunks, update.search_texts, strict=True)):
                if ordinal in keeps:
                    continue
                if words is None:  # a stored twin the indexer expected to be kept was not
                    words = search_text(update.path, chunk)
                rows.append({
                    "path": update.path, "ordinal": ordinal, "start": chunk.start_line,
                    "end": chunk.end_line, "language": chunk.language, "symbol": chunk.symbol,
                    "kind": chunk.kind, "content": chunk.content, "hash": chunk.content_hash,
                    "unit_start": chunk.unit_start, "unit_end": chunk.unit_end,
                    "symbol_words": words.symbol, "path_words": words.path, "body_words": words.body})
        if rows:
            await conn.execute(text(
                f"INSERT INTO {self.s}.chunks (path, ordinal, start_line, end_line, language, symbol, "
                "kind, content, content_hash, unit_start, unit_end, tsv) VALUES (:path, :ordinal, "
                ":start, :end, :language, :symbol, :kind, :content, :hash, :unit_start, :unit_end, "
                f"{TSV_SQL})"), rows)
        return len(rows)

    async def _insert_definitions(self, conn: AsyncConnection, updates: Sequence[FileUpdate]) -> None:
        rows = [{"path": u.path, "name": d.name, "qualified": d.qualified_name, "kind": d.kind,
                 "language": u.language or "", "start": d.start_line, "end": d.end_line}
                for u in updates for d in u.definitions]
        if rows:
            await conn.execute(text(
                f"INSERT INTO {self.s}.definitions (path, name, qualified_name, kind, language, "
                "start_line, end_line) VALUES (:path, :name, :qualified, :kind, :language, :start, :end)"),
                rows)

    async def touch(self, stats: Sequence[tuple[str, int, int]]) -> None:
        """Record a new (size, mtime_ns) for files whose content hash did not change."""
        if not stats:
            return
        async with self.engine.begin() as conn:
            await conn.execute(text(
                f"UPDATE {self.s}.files SET size = :size, mtime_ns = :mtime WHERE path = :path"),
                [{"path": p, "size": size, "mtime": mtime} for p, size, mtime in stats])
            await _finish_events(conn, self.s, [p for p, _, _ in stats], None)

    # ---- vectors -------------------------------------------------------------------------

    async def space(self, fresh: bool = False) -> VectorSpace:
        """The active model and its vector table; cached briefly, it is read per search."""
        cached = None if fresh else self._space.get()
        if cached is not None:
            return cached
        async with self.reader.connect() as conn:
            return self._space.put(_space_of((await conn.execute(text(_SPACE_SQL), self._key)).one()))

    def cached_space(self) -> VectorSpace | None:
        """The vector space space() would answer without a read, if any."""
        return self._space.get()

    def remember_space(self, row: Any) -> VectorSpace:
        """Cache (as space() does) the vector space of this project's SPACES_SQL row."""
        return self._space.put(_space_of(row))

    async def _locked_space(self, conn: AsyncConnection) -> VectorSpace:
        """Take the project's advisory lock in shared mode for `conn`'s transaction (writers
        of chunks and vectors run side by side; set_model, which swaps the vector table,
        waits for them and they for it), then read the vector space as it is now."""
        await conn.execute(text("SELECT pg_advisory_xact_lock_shared(hashtextextended(:k, 0))"),
                           {"k": self._lock_key})
        return _space_of((await conn.execute(text(_SPACE_SQL), self._key)).one())

    async def model(self) -> tuple[str | None, int | None]:
        """(model id, dims) of the project's vectors."""
        space = await self.space()
        return space.model_id, space.dims

    def _table(self, space: VectorSpace | VectorTable) -> str:
        assert space.table is not None
        return f"{self.s}.{quote_ident(space.table)}"

    async def set_model(self, model_id: str, dims: int) -> str | None:
        """Make `model_id` the project's model. Returns None when nothing changed, else the
        previous model id ("" for a project that had none).

        A first model, or the same model stored as another vector type, takes effect at
        once: its table is filled from the embedding cache. A different model is switched
        blue/green: its table fills beside the active one (from the cache now, the rest in
        the background) while search keeps using the previous model's vectors, and
        `finish_vectors` promotes it once it covers every chunk. Safe when processes race:
        it runs under the project's advisory lock and re-reads the row under it.
        """
        vector_type = self._vector_type(dims)
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                               {"k": self._lock_key})
            space = _space_of((await conn.execute(text(_SPACE_SQL), self._key)).one())
            wanted = (model_id, dims, vector_type)
            active, following = space.active, space.next
            if active is not None and (active.model_id, active.dims, active.type) == wanted:
                if following is not None:  # back to the model still serving: stop the switch
                    await self._set_next(conn, None)
                    await conn.execute(text(f"DROP TABLE IF EXISTS {self._table(following)}"))
                self._space.forget()
                return None
            if following is not None and (following.model_id, following.dims, following.type) == wanted:
                self._space.forget()
                return space.model_id or ""  # already switching to it
            numbers = [int(t.table.rsplit("_", 1)[1]) for t in (active, following) if t is not None]
            table = VectorTable(model_id, dims, f"vectors_{max(numbers, default=0) + 1}", vector_type)
            await conn.execute(text(
                f"CREATE TABLE IF NOT EXISTS {self._table(table)} (chunk_id bigint PRIMARY KEY REFERENCES "
                f"{self.s}.chunks(id) ON DELETE CASCADE, embedding {vector_type}({int(dims)}) NOT NULL)"))
            embedded = await self._copy_cached_vectors(conn, self._table(table), vector_type, model_id,
                                                       "true", {})
            if following is not None:
                await conn.execute(text(f"DROP TABLE IF EXISTS {self._table(following)}"))
            if active is not None and active.model_id != model_id:
                await self._set_next(conn, table)  # blue/green: the active table keeps serving
            else:
                await self._activate(conn, table, embedded, active)
        self._space.forget()
        self._unembedded_after, self._full_scan_due = 0, 0.0
        return space.model_id or ""

    async def _set_next(self, conn: AsyncConnection, table: VectorTable | None) -> None:
        await conn.execute(text(
            "UPDATE codequarry.projects SET next_model_id = :m, next_dims = :d, next_vector_table = :t, "
            "next_vector_type = :vt WHERE installation = :i AND id = :id"),
            {"m": table and table.model_id, "d": table and table.dims, "t": table and table.table,
             "vt": table and table.type, **self._key})

    async def _activate(self, conn: AsyncConnection, table: VectorTable, embedded: int,
                        previous: VectorTable | None, hnsw_ready: bool = False) -> None:
        """Make `table` (holding `embedded` vectors) the one search uses; drop `previous`."""
        if previous is not None:
            await conn.execute(text(f"DROP TABLE IF EXISTS {self._table(previous)}"))
        await conn.execute(text(f"UPDATE {self.s}.stats SET embedded = :n"), {"n": embedded})
        await conn.execute(text(
            "UPDATE codequarry.projects SET model_id = :m, dims = :d, vector_table = :t, vector_type = :vt, "
            "hnsw_ready = :ready, next_model_id = NULL, next_dims = NULL, next_vector_table = NULL, "
            "next_vector_type = NULL WHERE installation = :i AND id = :id"),
            {"m": table.model_id, "d": table.dims, "t": table.table, "vt": table.type, "ready": hnsw_ready,
             **self._key})

    async def _copy_cached_vectors(self, conn: AsyncConnection, table: str, vector_type: str, model_id: str,
                                   condition: str, params: dict[str, Any], lock: bool = False) -> int:
        """Give chunks matching `condition` (on alias c) their cached vector, in SQL (no
        vector crosses the wire); returns how many chunks got one. `lock`: the chunks may
        be deleted by a concurrent apply; each is locked first (in id order, as apply
        locks them), so one deleted meanwhile is skipped instead of failing the whole
        statement on the foreign key."""
        locking = " ORDER BY c.id FOR KEY SHARE OF c" if lock else ""
        result = await conn.execute(text(
            f"INSERT INTO {table} (chunk_id, embedding) SELECT c.id, e.embedding::{vector_type} "
            f"FROM {self.s}.chunks c JOIN codequarry.embedding_cache e "
            f"ON e.model_id = :m AND e.content_hash = c.content_hash WHERE {condition}{locking} "
            "ON CONFLICT (chunk_id) DO NOTHING"), {"m": model_id, **params})
        return int(result.rowcount or 0)

    async def finish_vectors(self) -> str | None:
        """Once nothing is left to embed: give the vectors their HNSW index, and promote a
        next model that covers every chunk (its index is built first, so search never meets
        an unindexed table). Returns "promoted", "indexed" or None (nothing to do).

        Indexes are built CONCURRENTLY, so saving vectors and indexing files go on
        meanwhile; one build costs far less than maintaining the graph row by row during a
        cold index.
        """
        space = await self.space(fresh=True)
        if space.next is not None:
            if await self._lacking(space.next):
                return None
            await self._build_hnsw(space.next)
            async with self.engine.begin() as conn:
                await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                                   {"k": self._lock_key})
                now = _space_of((await conn.execute(text(_SPACE_SQL), self._key)).one())
                if now.next != space.next or await self._lacking(space.next, conn):
                    return None  # changed meanwhile: the next idle moment tries again
                embedded = int((await conn.execute(text(
                    f"SELECT count(*) FROM {self._table(space.next)}"))).scalar() or 0)
                await self._activate(conn, space.next, embedded, now.active, hnsw_ready=True)
            self._space.forget()
            self._unembedded_after, self._full_scan_due = 0, 0.0
            return "promoted"
        if space.active is None or space.hnsw_ready:
            return None
        await self._build_hnsw(space.active)
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "UPDATE codequarry.projects SET hnsw_ready = true WHERE installation = :i AND id = :id "
                "AND vector_table = :t"), {"t": space.active.table, **self._key})
        self._space.forget()
        return "indexed"

    async def ensure_hnsw(self) -> bool:
        """Build the active vector table's HNSW index if it has none; True if built."""
        return await self.finish_vectors() == "indexed"

    async def _lacking(self, table: VectorTable, conn: AsyncConnection | None = None) -> bool:
        """Does some chunk lack a vector in `table`?"""
        query = text(f"SELECT EXISTS (SELECT 1 FROM {self.s}.chunks c WHERE NOT EXISTS "
                     f"(SELECT 1 FROM {self._table(table)} v WHERE v.chunk_id = c.id))")
        if conn is not None:
            return bool((await conn.execute(query)).scalar())
        async with self.reader.connect() as reader:
            return bool((await reader.execute(query)).scalar())

    async def lacking_vectors(self, hashes: Collection[str]) -> bool:
        """Does a chunk with one of these content hashes lack its vector (in the table new
        vectors go to)?"""
        if not hashes:
            return False
        target = (await self.space(fresh=True)).target
        if target is None:
            return True
        query = text(f"SELECT EXISTS (SELECT 1 FROM {self.s}.chunks c WHERE c.content_hash = ANY(:h) "
                     f"AND NOT EXISTS (SELECT 1 FROM {self._table(target)} v WHERE v.chunk_id = c.id))")
        async with self.reader.connect() as conn:
            return bool((await conn.execute(query, {"h": list(hashes)})).scalar())

    async def _build_hnsw(self, table: VectorTable) -> None:
        index = quote_ident(f"{table.table}_hnsw")
        ops = "halfvec_cosine_ops" if table.type == "halfvec" else "vector_cosine_ops"
        async with self.engine.connect() as conn:
            conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
            valid = (await conn.execute(text(
                "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
                "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relname = :x"),
                {"s": self.schema, "x": f"{table.table}_hnsw"})).scalar()
            if valid is False:  # an interrupted earlier build
                await conn.execute(text(f"DROP INDEX CONCURRENTLY IF EXISTS {self.s}.{index}"))
            if not valid:
                await conn.execute(text(f"SET maintenance_work_mem = '{HNSW_BUILD_MEMORY}'"))
                await conn.execute(text(
                    f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {index} ON {self._table(table)} "
                    f"USING hnsw (embedding {ops})"))

    async def unembedded(self, limit: int, skip: Sequence[str] = ()) -> list[Chunk]:
        """Distinct chunks that still lack a vector, oldest first.

        The scan resumes after the last chunk it returned (chunk ids only grow), so a cold
        backlog costs one pass over the table, not one per batch; it wraps around once it
        reaches the end, which finds chunks whose embedding failed or was lost.

        An idle daemon asks every few seconds; when the counters say every chunk has its
        vector, the answer is [] without the scan (at 50k chunks an anti-join of ~100 ms of
        PostgreSQL CPU each time), except once every FULL_SCAN_SECONDS, which finds a
        vector lost behind the counters' back.
        """
        space = await self.space()
        target = space.target
        if target is None:
            return []
        if space.next is None and not self._unembedded_after and time.monotonic() < self._full_scan_due:
            chunks, embedded = await self.vector_counts()
            if embedded >= chunks:
                return []
        for after in (self._unembedded_after, 0) if self._unembedded_after else (0,):
            async with self.reader.connect() as conn:
                rows = (await conn.execute(text(
                    f"SELECT c.id, c.content_hash, c.language, c.symbol, c.kind, c.content, c.start_line, "
                    f"c.end_line FROM {self.s}.chunks c WHERE c.id > :after AND NOT EXISTS "
                    f"(SELECT 1 FROM {self._table(target)} v WHERE v.chunk_id = c.id) "
                    "AND NOT c.content_hash = ANY(:skip) ORDER BY c.id LIMIT :n"),
                    {"n": limit * 2, "skip": list(skip), "after": after})).all()
            if rows:
                self._unembedded_after = rows[-1].id
                seen: dict[str, Chunk] = {}
                for r in rows:
                    if r.content_hash not in seen:
                        seen[r.content_hash] = Chunk(r.start_line, r.end_line, r.content, r.language,
                                                     r.symbol, r.kind, r.content_hash)
                return list(seen.values())[:limit]
        self._unembedded_after = 0
        self._full_scan_due = time.monotonic() + FULL_SCAN_SECONDS
        return []

    async def apply_vectors(self, conn: AsyncConnection, model_id: str, hashes: Sequence[str]) -> int:
        """Give every chunk with one of these hashes its vector from the embedding cache
        (the caller put them there in `conn`'s transaction); returns chunks updated."""
        space = await self._locked_space(conn)
        target = space.target
        if not hashes or target is None or target.model_id != model_id:
            return 0
        updated = await self._copy_cached_vectors(conn, self._table(target), target.type, model_id,
                                                  "c.content_hash = ANY(:hashes)", {"hashes": list(hashes)},
                                                  lock=True)
        if space.next is None:  # the counters follow the table search uses
            await conn.execute(text(f"UPDATE {self.s}.stats SET embedded = embedded + :n"), {"n": updated})
        return updated

    # ---- status --------------------------------------------------------------------------

    async def counts(self) -> Counts:
        async with self.reader.connect() as conn:
            files = (await conn.execute(text(
                f"SELECT count(*) FILTER (WHERE skip_reason IS NULL) AS files, "
                f"count(*) FILTER (WHERE skip_reason IS NOT NULL) AS skipped FROM {self.s}.files"))).one()
            stats = (await conn.execute(text(
                f"SELECT chunks, embedded, last_indexed_at FROM {self.s}.stats"))).one()
            events = (await conn.execute(text(
                f"SELECT count(DISTINCT path) AS files, count(*) AS events, min(detected_at) AS oldest "
                f"FROM {self.s}.change_events WHERE processed_at IS NULL"))).one()
            last = (await conn.execute(text(
                f"SELECT max(detected_at) FROM {self.s}.change_events"))).scalar()
            errors = [f"{r.path}: {r.error}" for r in await conn.execute(text(
                f"SELECT path, error FROM {self.s}.change_events WHERE error IS NOT NULL "
                "ORDER BY detected_at DESC LIMIT 5"))]
            model = (await conn.execute(text(
                "SELECT model_id FROM codequarry.projects WHERE installation = :i AND id = :id"),
                self._key)).scalar()
            space = await self.space(fresh=True)
            following = 0
            if space.next is not None:
                following = int((await conn.execute(text(
                    f"SELECT count(*) FROM {self._table(space.next)}"))).scalar() or 0)
        return Counts(files.files, files.skipped, stats.chunks, stats.embedded, events.files,
                      events.events, last, stats.last_indexed_at, events.oldest, model, errors,
                      space.next.model_id if space.next else None, following)

    async def recount(self) -> tuple[tuple[int, int], tuple[int, int]] | None:
        """Set the counters (chunks, chunks with a vector in the table search uses) to what
        the tables hold, if they drifted (a crash or a bug of an older version: `verify`
        said "counters say ..."); returns (before, after), None when they were right. Holds
        the project's advisory lock exclusively meanwhile (writers of chunks and vectors
        wait); two count(*) over the chunks' and the vectors' primary keys."""
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                               {"k": self._lock_key})
            space = _space_of((await conn.execute(text(_SPACE_SQL), self._key)).one())
            held, before = await self._counted(conn, space)
            if before == held:
                return None
            await conn.execute(text(f"UPDATE {self.s}.stats SET chunks = :c, embedded = :e"),
                               {"c": held[0], "e": held[1]})
        return before, held

    async def _counted(self, conn: AsyncConnection,
                       space: VectorSpace) -> tuple[tuple[int, int], tuple[int, int]]:
        """(chunks, chunks with a vector in `space`'s table) as the tables hold them, and as
        the counters say."""
        chunks = int((await conn.execute(text(f"SELECT count(*) FROM {self.s}.chunks"))).scalar() or 0)
        embedded = int((await conn.execute(text(
            f"SELECT count(*) FROM {self._table(space)}"))).scalar() or 0) if space.table else 0
        row = (await conn.execute(text(f"SELECT chunks, embedded FROM {self.s}.stats"))).one()
        return (chunks, embedded), (int(row.chunks), int(row.embedded))

    async def vector_counts(self) -> tuple[int, int]:
        """(chunks, chunks with a vector), from the counters."""
        async with self.reader.connect() as conn:
            row = (await conn.execute(text(f"SELECT chunks, embedded FROM {self.s}.stats"))).one()
            return int(row.chunks), int(row.embedded)

    async def freshness(self) -> Freshness:
        """Cheap enough to answer with every search: counters, and the pending events index."""
        async with self.reader.connect() as conn:
            row = (await conn.execute(text(
                f"SELECT s.chunks, s.embedded, s.last_indexed_at, (SELECT count(DISTINCT path) "
                f"FROM {self.s}.change_events WHERE processed_at IS NULL) AS pending "
                f"FROM {self.s}.stats s"))).one()
        coverage = row.embedded / row.chunks if row.chunks else 1.0
        return Freshness(int(row.pending), min(coverage, 1.0), row.last_indexed_at)

    async def consistency_problems(self) -> list[str]:
        """Vectors that differ from the cache, counters that drifted, missing vectors."""
        problems = []
        space = await self.space(fresh=True)
        async with self.engine.connect() as conn:
            if space.table:
                wrong = (await conn.execute(text(
                    f"SELECT count(*) FROM {self._table(space)} v JOIN {self.s}.chunks c "
                    "ON c.id = v.chunk_id JOIN codequarry.embedding_cache e ON e.model_id = :m "
                    "AND e.content_hash = c.content_hash "
                    f"WHERE v.embedding <> e.embedding::{space.type}"), {"m": space.model_id})).scalar()
                if wrong:
                    problems.append(f"{wrong} chunk vectors differ from the embedding cache")
            (chunks, embedded), counters = await self._counted(conn, space)
        if (chunks, embedded) != counters:
            problems.append(f"counters say {counters} (chunks, with vectors), "
                            f"the table holds {(chunks, embedded)}; set right when the project next "
                            "starts (index, or the daemon)")
        if embedded < chunks:
            problems.append(f"{chunks - embedded} chunks have no vector yet")
        return problems

    # ---- search --------------------------------------------------------------------------

    async def query_terms(self, words: str) -> tuple[list[str], int, dict[str, float]]:
        """The query's lexemes in order, the chunk count, and the fraction of chunks that
        hold each lexeme, in one round trip (see search_context, which reads them).

        Common lexemes come from ANALYZE's most-common-elements statistics; the rest are
        counted exactly through the GIN index, which is cheap precisely because they are rare.
        """
        context = await self.search_context(words, ())
        return context.lexemes, context.total, context.freqs

    async def _common_lexemes(self, conn: AsyncConnection) -> dict[str, float]:
        cached = self.cached_common_lexemes()
        if cached is not None:
            return cached
        row = (await conn.execute(text(COMMON_LEXEMES_SQL + " AND schemaname = :s"),
                                  {"s": self.schema})).first()
        return self.remember_common_lexemes(row)

    def cached_common_lexemes(self) -> dict[str, float] | None:
        """ANALYZE's most common lexemes -> their fraction of chunks, if read < 60 s ago."""
        return self._common.get()

    def remember_common_lexemes(self, row: Any) -> dict[str, float]:
        """Cache (for 60 s) and return the common lexemes of a COMMON_LEXEMES_SQL row (None: none)."""
        common: dict[str, float] = {}
        if row and row.elems:
            common = dict(zip(row.elems, row.freqs, strict=False))
        return self._common.put(common)

    async def analyze(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text(f"ANALYZE {self.s}.chunks"))
            await conn.commit()
        self._common.forget()

    async def lexical(self, terms: Sequence[tuple[str, float]], match: Sequence[str | tuple[str, ...]],
                      filters: Filters, limit: int, *, cap: int = LEXICAL_CANDIDATES,
                      field_weights: Sequence[float] = FIELD_WEIGHTS, k1: float = BM25_K1,
                      b: float = BM25_B) -> list[tuple[int, float]]:
        """(chunk id, score), best first, at most `limit`: the chunks matching any `match`
        clause (a lexeme, or a tuple of lexemes that must all occur; at most `cap` chunks),
        scored BM25-style over `terms` (lexeme, idf): per lexeme
        idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen)), where tf is ts_rank of
        that lexeme alone with `field_weights` ({body, -, path, symbol}: a saturating count
        in which a symbol or path occurrence weighs more than one in the body) and len is
        the chunk's number of distinct lexemes (`length(tsv)`)."""
        if not match:
            return []
        sql, params = self.lexical_statement(terms, match, filters, limit, await self._average_length(),
                                             cap=cap, field_weights=field_weights, k1=k1, b=b)
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(sql), params)
            return [(row.id, float(row.score)) for row in rows]

    def lexical_statement(self, terms: Sequence[tuple[str, float]], match: Sequence[str | tuple[str, ...]],
                          filters: Filters, limit: int, avglen: float, *, cap: int = LEXICAL_CANDIDATES,
                          field_weights: Sequence[float] = FIELD_WEIGHTS, k1: float = BM25_K1,
                          b: float = BM25_B) -> tuple[str, dict[str, Any]]:
        """(SQL, parameters) of lexical(): rows (id, score), best first; `avglen` is
        average_length() (`match` must not be empty)."""
        params: dict[str, Any] = {
            "match": match_tsquery(match),
            "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms],
            "cap": cap, "k": limit, "fw": [float(w) for w in field_weights], "k1": k1, "b": b,
            "avglen": avglen}
        where = filters.sql(params)
        # issue 13: each term's tsquery is parsed once (not per candidate row) and each
        # (chunk, term) ts_rank computed once (the planner inlined it twice into the sum):
        # half the statement's time at 50k chunks, the same scores. Ties at the limit go
        # to the lower id (they went to whichever row the top-N sort kept).
        return ((
                f"WITH cand AS (SELECT id, tsv FROM {self.s}.chunks "
                f"WHERE tsv @@ CAST(:match AS tsquery){where} LIMIT :cap), "
                "t AS MATERIALIZED (SELECT quote_literal(u.lexeme)::tsquery AS q, u.w "
                "FROM unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) AS u(lexeme, w)), "
                "r AS MATERIALIZED (SELECT c.id, t.w, ts_rank(CAST(:fw AS float4[]), c.tsv, t.q, 0) AS tf, "
                "length(c.tsv) AS len FROM cand c CROSS JOIN t WHERE c.tsv @@ t.q) "
                "SELECT id, sum(w * tf * (CAST(:k1 AS float8) + 1) / (tf + CAST(:k1 AS float8) "
                "* (1 - CAST(:b AS float8) + CAST(:b AS float8) * len / CAST(:avglen AS float8)))) AS score "
                "FROM r GROUP BY id ORDER BY score DESC, id LIMIT :k"), params)

    async def _average_length(self) -> float:
        """Mean distinct lexemes per chunk, estimated on up to 2,000 chunks, cached 60 s."""
        cached = self.cached_average_length()
        if cached is not None:
            return cached
        async with self.reader.connect() as conn:
            value = (await conn.execute(text(self.average_length_statement()))).scalar()
        return self.remember_average_length(value)

    def average_length_statement(self) -> str:
        """SQL of one row, one column (`avglen`: the mean, NULL for no chunks)."""
        return f"SELECT avg(length(tsv)) AS avglen FROM (SELECT tsv FROM {self.s}.chunks LIMIT 2000) s"

    def cached_average_length(self) -> float | None:
        return self._lengths.get()

    def remember_average_length(self, value: Any) -> float:
        return self._lengths.put(float(value) if value else 1.0)

    async def semantic(self, query: Vector, filters: Filters, limit: int, iterative: bool,
                       space: VectorSpace | None = None) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity), nearest first: from the HNSW index once built,
        else an exact scan; filters never starve it. `space` is the one the caller embedded
        the query for (default: the current one)."""
        space = space or await self.space()
        if space.table is None:
            return []
        sql, params, ef_search = self.semantic_statement(query, filters, limit, iterative, space)
        statement = text(sql)
        if ef_search is None:  # the session's settings suffice
            async with self.reader.connect() as conn:
                rows = (await conn.execute(statement, params)).all()
        else:
            async with self.engine.connect() as conn:
                await conn.execute(text(ef_search_sql(iterative)), {"ef": str(ef_search)})
                rows = (await conn.execute(statement, params)).all()
                await conn.rollback()  # a read: committing would count as a change of the index
        return semantic_hits(rows, limit)

    def semantic_statement(self, query: Vector, filters: Filters, limit: int, iterative: bool,
                           space: VectorSpace) -> tuple[str, dict[str, Any], int | None]:
        """(SQL of rows (id, distance), parameters, the hnsw.ef_search it needs or None
        when the session's suffices) of semantic() in `space` (which has a table)."""
        params: dict[str, Any] = {"q": query, "k": limit}
        where = filters.sql(params, "c.")
        fetch = limit if iterative or not where else limit * 10  # older pgvector: over-fetch
        params["fetch"] = fetch
        distance = f"v.embedding <=> CAST(:q AS {space.type})"
        table = self._table(space)
        sql = (f"SELECT v.chunk_id AS id, {distance} AS distance FROM {table} v "
               f"ORDER BY {distance} LIMIT :fetch")
        if where:
            # a filter matching few chunks ranks them exactly, file by file (chunks_path):
            # walking the HNSW graph for them visits chunks outside the filter until enough
            # pass or pgvector gives up (hnsw.max_scan_tuples, 20,000 tuples: ~90 ms, short
            # of `limit`, when they lie far from the query). The files' chunk counts decide,
            # in the statement; only one branch runs.
            files = f"{self.s}.files f WHERE f.skip_reason IS NULL{filters.sql(params, 'f.')}"
            languages = Filters(filters.languages).sql(params, "c.")  # a file's path is its chunks'
            params["exact"] = EXACT_FILTERED_CHUNKS
            # `broad`: the files' chunks pass :exact, read with a running sum that stops there
            # (a broad filter at 1M chunks matches ~26,000 files; ~400 are read)
            sql = (f"WITH n AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM (SELECT sum(f.chunk_count) "
                   f"OVER (ROWS UNBOUNDED PRECEDING) AS running FROM {files}) r WHERE r.running > :exact) "
                   "AS broad) "
                   f"(SELECT v.chunk_id AS id, {distance} AS distance FROM (SELECT f.path FROM {files} "
                   f"OFFSET 0) f CROSS JOIN LATERAL (SELECT c.id FROM {self.s}.chunks c "
                   f"WHERE c.path = f.path{languages} OFFSET 0) c JOIN {table} v ON v.chunk_id = c.id "
                   f"WHERE NOT (SELECT broad FROM n) ORDER BY {distance} LIMIT :k) UNION ALL "
                   f"(SELECT v.chunk_id AS id, {distance} AS distance FROM {table} v JOIN {self.s}.chunks c "
                   f"ON c.id = v.chunk_id WHERE (SELECT broad FROM n){where} "
                   f"ORDER BY {distance} LIMIT :fetch)")
        ef_search = max(40, min(1000, fetch * 2))
        if where:  # always in a transaction: ef_search_sql's custom plans keep the branch choice
            return sql, params, max(ef_search, SESSION_EF_SEARCH)
        return sql, params, None if ef_search <= SESSION_EF_SEARCH or not space.hnsw_ready else ef_search

    async def chunk_rows(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT id, path, start_line, end_line, language, symbol, kind, content, content_hash, "
                f"unit_start, unit_end FROM {self.s}.chunks WHERE id = ANY(:ids)"), {"ids": list(ids)})
            return {r.id: ChunkRow(r.id, r.path, Chunk(r.start_line, r.end_line, r.content, r.language,
                                                        r.symbol, r.kind, r.content_hash, r.unit_start,
                                                        r.unit_end)) for r in rows}

    async def symbols_matching(self, names: Sequence[str]) -> set[str]:
        """Which of `names` (lowercased) name a definition or a chunk: exact identifier hits."""
        if not names:
            return set()
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT lower(name) AS s FROM {self.s}.definitions WHERE lower(name) = ANY(:names) "
                f"UNION SELECT lower(symbol) FROM {self.s}.chunks WHERE lower(symbol) = ANY(:names)"),
                {"names": list(names)})
            return {row.s for row in rows}

    # ---- units, definitions and references (answers for agents) -----------------------

    async def unit_chunks(self, ids: Sequence[int]) -> dict[int, UnitText]:
        """Chunk id -> UnitText (unit start, unit end, the unit's chunks in order, the
        definitions inside it when there are several) for each of `ids`.

        A chunk's unit is the definition or top-level block it belongs to (chunks.unit_start
        / unit_end, from the chunker); its chunks are those of the file within that span.
        Lines are 1-based and inclusive.
        """
        if not ids:
            return {}
        sql, params = self.unit_chunks_statement(ids)
        async with self.reader.connect() as conn:
            rows = (await conn.execute(text(sql), params)).all()
        return unit_chunks_of(rows)

    async def hit_spans(self, ids: Sequence[int]) -> dict[int, HitSpan]:
        """Chunk id -> where it is and the span of its unit, for each of `ids` still stored."""
        if not ids:
            return {}
        sql, params = self.hit_spans_statement(ids)
        async with self.reader.connect() as conn:
            return hit_spans_of((await conn.execute(text(sql), params)).all())

    def hit_spans_statement(self, ids: Sequence[int]) -> tuple[str, dict[str, Any]]:
        """(SQL, parameters) of hit_spans(); its rows go to hit_spans_of()."""
        return (f"SELECT c.id, {_SPAN_COLUMNS} FROM {self.s}.chunks c {self._unit_head()} "
                "WHERE c.id = ANY(:ids)"), {"ids": list(ids)}

    def with_spans(self, sql: str) -> str:
        """A ranking statement `sql` (rows with an `id` column) whose rows also say where
        each chunk lies (hit_spans_of() reads them; NULL for a chunk gone), in `sql`'s
        order: a search reads its candidates' places with the ranking, not in a statement
        of its own after it (one round trip fewer in every mode)."""
        # row_number() over a subquery's own output numbers its rows in its ORDER BY
        return (f"SELECT q.*, {_SPAN_COLUMNS} FROM (SELECT row_number() OVER () AS hit_seq, r.* "
                f"FROM ({sql}) r) q LEFT JOIN {self.s}.chunks c ON c.id = q.id {self._unit_head()} "
                "ORDER BY q.hit_seq")

    def _unit_head(self) -> str:
        """The join of `h`, the first named chunk of chunk `c`'s unit: a hit inside a
        nested function names the method that encloses it, whichever of the unit's chunks
        ranked first. Found through the chunks_unit index (schema version 3)."""
        return (f"LEFT JOIN LATERAL (SELECT u.symbol, u.kind FROM {self.s}.chunks u "
                "WHERE u.path = c.path AND u.unit_start = c.unit_start AND u.unit_end = c.unit_end "
                "AND u.symbol IS NOT NULL ORDER BY u.ordinal LIMIT 1) h ON true")

    def unit_chunks_statement(self, ids: Sequence[int]) -> tuple[str, dict[str, Any]]:
        """(SQL, parameters) of unit_chunks(); its rows go to unit_chunks_of(). Each unit's
        chunks come once, however many of `ids` fall in it (issue 13: per hit, a class hit
        by 50 chunks sent and parsed its chunks 50 times)."""
        return ((
                "WITH hit AS (SELECT id, path, coalesce(unit_start, start_line) AS us, "
                f"coalesce(unit_end, end_line) AS ue FROM {self.s}.chunks WHERE id = ANY(:ids)), "
                "span AS (SELECT path, us, ue, array_agg(id) AS hits FROM hit GROUP BY path, us, ue), "
                # a unit holding several definitions side by side (small neighbours merged
                # into one chunk) is named after the one the query matches: answers.py
                "unit AS (SELECT s.*, d.* FROM span s LEFT JOIN LATERAL (SELECT "
                f"{_DEFINITION_ARRAYS} FROM {self.s}.definitions WHERE path = s.path "
                "AND start_line >= s.us AND end_line <= s.ue HAVING count(*) > 1) d ON true) "
                "SELECT u.hits, u.us, u.ue, (c.start_line >= u.us AND c.end_line <= u.ue) AS inside, "
                "u.starts, u.ends, u.kinds, u.names, u.qualified, "
                f"c.id, c.path, c.start_line, c.content FROM unit u JOIN {self.s}.chunks c "
                "ON c.path = u.path "
                "AND ((c.start_line >= u.us AND c.end_line <= u.ue) OR c.id = ANY(u.hits)) "
                "ORDER BY u.path, u.us, u.ue, c.ordinal"), {"ids": list(ids)})

    async def find_definitions(self, name: str, kind: str | None = None,
                               limit: int = 20) -> list[tuple[str, str, SymbolDefinition]]:
        """(path, language, definition) by name or qualified name: exact matches first
        (case-sensitive before case-insensitive), then prefix matches, then close spellings
        (difflib ratio >= 0.75 over the project's names). `kind` restricts to one kind."""
        wanted = name.strip()
        lowered = wanted.lower()
        params: dict[str, Any] = {"exact": lowered, "prefix": _like_prefix(lowered) + "%",
                                  "kind": kind, "n": limit * 4}
        kind_sql = " AND kind = :kind" if kind else ""
        async with self.reader.connect() as conn:
            rows = (await conn.execute(text(
                f"SELECT path, language, name, qualified_name, kind, start_line, end_line "
                f"FROM {self.s}.definitions WHERE (lower(name) LIKE :prefix OR lower(qualified_name) "
                f"LIKE :prefix){kind_sql} ORDER BY length(qualified_name), path, start_line LIMIT :n"),
                params)).all()
            if not rows:
                names = [r[0] for r in await conn.execute(text(
                    f"SELECT DISTINCT name FROM {self.s}.definitions WHERE true{kind_sql} LIMIT 50000"),
                    params)]
                close = difflib.get_close_matches(wanted, names, n=limit, cutoff=0.75) or \
                    difflib.get_close_matches(lowered, [n.lower() for n in names], n=limit, cutoff=0.75)
                if close:
                    rows = (await conn.execute(text(
                        f"SELECT path, language, name, qualified_name, kind, start_line, end_line "
                        f"FROM {self.s}.definitions WHERE lower(name) = ANY(:names){kind_sql} "
                        "ORDER BY path, start_line LIMIT :n"),
                        {**params, "names": [c.lower() for c in close]})).all()

        def rank(row: Any) -> tuple[int, int]:
            for order, hit in enumerate((row.name == wanted or row.qualified_name == wanted,
                                         lowered in (row.name.lower(), row.qualified_name.lower()),
                                         row.qualified_name.lower().endswith("." + lowered))):
                if hit:
                    return order, len(row.qualified_name)
            return 3, len(row.qualified_name)

        ordered = sorted(rows, key=rank)[:limit]
        return [(r.path, r.language, SymbolDefinition(r.name, r.qualified_name, r.kind, r.start_line,
                                                      r.end_line)) for r in ordered]

    async def count_files(self, filters: Filters) -> int:
        """Indexed (not skipped) files that pass `filters`."""
        params: dict[str, Any] = {}
        where = filters.sql(params)
        async with self.reader.connect() as conn:
            return int((await conn.execute(text(
                f"SELECT count(*) FROM {self.s}.files WHERE skip_reason IS NULL{where}"), params)).scalar()
                or 0)

    async def chunks_with_words(self, words: str, filters: Filters, limit: int) -> list[ChunkRow]:
        """Chunks whose full-text words include all of `words` (code_words output), in
        path and line order: the candidates of a reference search."""
        params: dict[str, Any] = {"words": words, "k": limit}
        where = filters.sql(params)
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                "SELECT id, path, start_line, end_line, language, symbol, kind, content, content_hash "
                f"FROM {self.s}.chunks WHERE tsv @@ plainto_tsquery('english', :words){where} "
                "ORDER BY path, start_line LIMIT :k"), params)
            return [ChunkRow(r.id, r.path, Chunk(r.start_line, r.end_line, r.content, r.language,
                                                 r.symbol, r.kind, r.content_hash)) for r in rows]



    # ---- issue 13: one round trip for what a search reads besides its ranking --------------

    async def search_context(self, words: str, names: Sequence[str]) -> SearchContext:
        """query_terms(words), freshness() and symbols_matching(names) in one statement:
        the same values, one round trip and one pooled connection instead of three."""
        async with self.reader.connect() as conn:
            common = await self._common_lexemes(conn)
            sql, params = self.search_context_statement(words, names, common)
            row = (await conn.execute(text(sql), params)).one()
        return self.search_context_of(row, common)

    def search_context_statement(self, words: str, names: Sequence[str],
                                 common: dict[str, float]) -> tuple[str, dict[str, Any]]:
        """(SQL, parameters) of search_context's one-row read; `common` is common_lexemes()."""
        return ((
                "SELECT s.chunks, s.embedded, s.last_indexed_at, "
                f"(SELECT count(DISTINCT path) FROM {self.s}.change_events "
                "WHERE processed_at IS NULL) AS pending, "
                "(SELECT coalesce(array_agg(t.lexeme ORDER BY t.positions[1]), '{}') "
                "FROM unnest(to_tsvector('english', :q)) AS t) AS lexemes, "
                "(SELECT coalesce(array_agg(CASE WHEN t.lexeme = ANY(string_to_array(:common, ' ')) "
                "THEN NULL ELSE "
                f"(SELECT count(*) FROM (SELECT 1 FROM {self.s}.chunks "
                "WHERE tsv @@ quote_literal(t.lexeme)::tsquery LIMIT 5000) hits) END "
                "ORDER BY t.positions[1]), '{}') FROM unnest(to_tsvector('english', :q)) AS t) AS counts, "
                "(SELECT coalesce(array_agg(DISTINCT found), '{}') FROM ("
                f"SELECT lower(name) AS found FROM {self.s}.definitions WHERE lower(name) = ANY(:names) "
                f"UNION SELECT lower(symbol) FROM {self.s}.chunks WHERE lower(symbol) = ANY(:names)) hits "
                "WHERE cardinality(CAST(:names AS text[])) > 0) AS symbols "
                f"FROM {self.s}.stats s"),
                # the common lexemes (up to ~1,000) as one text: the driver checks each element
                # of an array parameter in Python (~0.5 ms a search); a lexeme has no space
                {"q": words, "common": " ".join(common), "names": list(names)})

    @staticmethod
    def search_context_of(row: Any, common: dict[str, float]) -> SearchContext:
        """The SearchContext of a row of search_context_statement."""
        lexemes = list(row.lexemes)
        total = int(row.chunks) if lexemes else 0  # as query_terms
        freqs = {lex: common[lex] if n is None else n / total
                 for lex, n in zip(lexemes, row.counts, strict=True) if n is None or total}
        coverage = row.embedded / row.chunks if row.chunks else 1.0
        return SearchContext(lexemes, total, freqs,
                             Freshness(int(row.pending), min(coverage, 1.0), row.last_indexed_at),
                             set(row.symbols))

    async def skipped_files(self, limit: int = 200) -> tuple[list[tuple[str, str]], int]:
        """((path, skip reason) of the first `limit` skipped files by path, how many there are)."""
        async with self.reader.connect() as conn:
            rows = (await conn.execute(text(
                f"SELECT path, skip_reason, count(*) OVER () AS total FROM {self.s}.files "
                "WHERE skip_reason IS NOT NULL ORDER BY path LIMIT :n"), {"n": limit})).all()
        return [(row.path, row.skip_reason) for row in rows], int(rows[0].total) if rows else 0

@dataclass(frozen=True, slots=True)
class SearchContext:
    """What ProjectStore.search_context reads: query_terms' triple, freshness, symbol hits."""

    lexemes: list[str]
    total: int
    freqs: dict[str, float]
    freshness: Freshness
    symbols: set[str]


def ef_search_sql(iterative: bool) -> str:
    """Set hnsw.ef_search (parameter :ef) and, with `iterative`, relaxed iterative scans,
    local to the transaction, in one round trip; and plan the statement for its own
    parameters every time. A prepared statement is planned once for all parameters after
    five runs (a generic plan), and for the filtered statement, whose branch depends on the
    files' chunk count, PostgreSQL's generic plan sorted all vectors: at 1M chunks 1.6 s
    per search instead of 25 ms (bench/million_bench.py --search-only)."""
    return ("SELECT set_config('hnsw.ef_search', :ef, true), "
            "set_config('plan_cache_mode', 'force_custom_plan', true)"
            + (", set_config('hnsw.iterative_scan', 'relaxed_order', true)" if iterative else ""))


def semantic_hits(rows: Sequence[Any], limit: int) -> list[tuple[int, float]]:
    """(chunk id, cosine similarity), nearest first, of semantic_statement's rows."""
    hits = sorted(((row.id, 1.0 - float(row.distance)) for row in rows), key=lambda h: -h[1])
    return [(i, s) for i, s in hits if not math.isnan(s)][:limit]


class HitSpan(NamedTuple):
    """A ranked chunk's place: its file, its unit's span and its own (1-based, inclusive).
    A named tuple: a search reads ~150 of them (a frozen dataclass is built in Python)."""

    path: str
    unit_start: int
    unit_end: int
    start_line: int
    end_line: int
    language: str
    symbol: str | None
    kind: str


def hit_spans_of(rows: Sequence[Any]) -> dict[int, HitSpan]:
    """Chunk id -> HitSpan from rows of hit_spans_statement or of a with_spans() statement
    (a row without a path: its chunk is gone, it has none)."""
    return {row.id: HitSpan(row.path, row.us, row.ue, row.start_line, row.end_line, row.language,
                            row.symbol, row.kind) for row in rows if row.path is not None}


class Hits(NamedTuple):
    """One project's candidates from a ranking statement read with_spans()."""

    ranked: list[tuple[int, float]]  # (chunk id, score), best first
    spans: dict[int, HitSpan]  # where each lies; a chunk gone meanwhile has none


_DEFINITION_ORDER = "ORDER BY start_line, end_line DESC"  # outer before nested
_DEFINITION_ARRAYS = ", ".join(f"array_agg({column} {_DEFINITION_ORDER}) AS {alias}" for column, alias in (
    ("start_line", "starts"), ("end_line", "ends"), ("kind", "kinds"), ("name", "names"),
    ("qualified_name", "qualified")))


class UnitPiece(NamedTuple):
    """A chunk of a unit, as much as an answer shows of it: its text from its first line
    (1-based). A named tuple: an answer reads up to thousands (a frozen dataclass is built
    in Python)."""

    id: int
    start_line: int
    content: str


class UnitText(NamedTuple):
    """What an answer shows of a unit: its span, its chunks (UnitPiece, in order) and,
    when it holds more than one, the definitions inside it (outer before nested)."""

    start_line: int
    end_line: int
    pieces: list[UnitPiece]
    definitions: tuple[SymbolDefinition, ...]


def unit_chunks_of(rows: Sequence[Any]) -> dict[int, UnitText]:
    """ProjectStore.unit_chunks' answer from the rows of its statement (in their order):
    per hit, its unit's chunks, and itself should it lie outside its unit's span. Hits of
    one unit share one list."""
    units: dict[int, UnitText] = {}
    start = 0
    while start < len(rows):
        first = rows[start]
        key = (first.path, first.us, first.ue)
        end = start
        while end < len(rows) and (rows[end].path, rows[end].us, rows[end].ue) == key:
            end += 1
        group = rows[start:end]
        members = [UnitPiece(row.id, row.start_line, row.content) for row in group]
        every = all(row.inside for row in group)
        definitions = tuple(SymbolDefinition(name, qualified, kind, start_line, end_line)
                            for start_line, end_line, kind, name, qualified in zip(
                                first.starts or (), first.ends or (), first.kinds or (),
                                first.names or (), first.qualified or (), strict=True))
        for hit in first.hits:
            own = members if every else [m for m, row in zip(members, group, strict=True)
                                         if row.inside or row.id == hit]
            units[hit] = UnitText(first.us, first.ue, own, definitions)
        start = end
    return units


async def _finish_events(conn: AsyncConnection, schema: str, paths: Sequence[str], error: str | None) -> None:
    await conn.execute(text(
        f"UPDATE {schema}.change_events SET processed_at = now(), error = :error "
        "WHERE path = ANY(:paths) AND processed_at IS NULL"), {"paths": list(paths), "error": error})


def project_lock_key(installation: str, project_id: str) -> str:
    """The text whose hashtextextended() is the project's advisory lock: exclusive for
    schema changes (creation, migration, a model switch), shared for writes of rows."""
    return f"codequarry:{installation}:{project_id}"


def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def match_tsquery(clauses: Sequence[str | tuple[str, ...]]) -> str:
    """The tsquery text matching any clause: a lexeme, or a tuple of lexemes all present.
    ["parse", ("read", "file")] -> "'parse' | ('read' & 'file')"."""
    parts = []
    for clause in clauses:
        words = (clause,) if isinstance(clause, str) else clause
        joined = " & ".join(_tsquery_literal(lex) for lex in words)
        parts.append(joined if len(words) == 1 else f"({joined})")
    return " | ".join(parts)


def _tsquery_literal(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
