"""One project's schema: files, chunks (tsvector + vector), change events, counters.

Every write that changes what search sees happens in one transaction per batch of
files, so a crash leaves each file either wholly old or wholly new.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
from pgvector import Vector as PgVector
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from codequarry.models import (
    ChangeEvent,
    ChangeKind,
    Chunk,
    FileUpdate,
    Freshness,
    IndexedFile,
)
from codequarry.store.migrations import quote_ident

Vector = np.ndarray[Any, np.dtype[np.float32]]

# tsvector of a chunk: symbol words weigh most (A), then path words (B), then the body (D)
TSV_SQL = ("setweight(to_tsvector('english', :symbol_words), 'A') || "
           "setweight(to_tsvector('english', :path_words), 'B') || "
           "to_tsvector('english', :body_words)")
LEXICAL_CANDIDATES = 2000  # rows ranked per lexical query, at most
SESSION_EF_SEARCH = 100  # every connection's hnsw.ef_search: enough up to 16 results
MODEL_CACHE_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class Filters:
    """Search restrictions; `path_regex` is a PostgreSQL regular expression on the path."""

    languages: tuple[str, ...] = ()
    path_regex: str | None = None

    def sql(self, params: dict[str, Any]) -> str:
        clauses = []
        if self.languages:
            clauses.append("language = ANY(:languages)")
            params["languages"] = list(self.languages)
        if self.path_regex:
            clauses.append("path ~ :path_regex")
            params["path_regex"] = self.path_regex
        return "".join(f" AND {clause}" for clause in clauses)


@dataclass(frozen=True, slots=True)
class ChunkRow:
    """A stored chunk with its location, for building search hits."""

    id: int
    path: str
    chunk: Chunk


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

    @property
    def vector_coverage(self) -> float:
        return self.embedded / self.chunks if self.chunks else 1.0


class ProjectStore:
    def __init__(self, engine: AsyncEngine, project_id: str, schema: str) -> None:
        self.engine = engine
        # single-statement reads need no transaction: autocommit spares a BEGIN and a
        # ROLLBACK round trip each, which is most of a search's database time
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.project_id = project_id
        self.schema = schema
        self.s = quote_ident(schema)
        self._term_stats: tuple[float, dict[str, float]] | None = None
        self._model: tuple[float, tuple[str | None, int | None]] | None = None

    # ---- reading what is indexed ------------------------------------------------------

    async def indexed_files(self, paths: Sequence[str] | None = None,
                            prefix: str | None = None) -> dict[str, IndexedFile]:
        """What the store knows of `paths`, or of paths starting with `prefix`, or of all."""
        query = f"SELECT path, size, mtime_ns, content_hash, skip_reason FROM {self.s}.files"
        if paths is not None:
            query += " WHERE path = ANY(:paths)"
        elif prefix is not None:
            query += " WHERE starts_with(path, :prefix)"
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(query), {"paths": list(paths or ()), "prefix": prefix})
            return {row.path: IndexedFile(*row) for row in rows}

    async def file_chunks(self, path: str) -> list[tuple[str, int, int, bool]]:
        """(content_hash, start_line, end_line, has_vector) of a file's chunks, in order."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT content_hash, start_line, end_line, embedding IS NOT NULL FROM {self.s}.chunks "
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
                    model_id: str | None = None, renames: dict[str, str] | None = None) -> list[str]:
        """Replace the chunks of `updates`, drop `deleted`, in one transaction.

        Vectors are copied from the embedding cache where it has them; returns the
        content hashes still to embed. `renames` (new path -> old path) turns the pending
        created-events of those paths into renamed-events.
        """
        paths = [u.path for u in updates] + list(deleted)
        if not paths:
            return []
        async with self.engine.begin() as conn:
            removed = (await conn.execute(text(
                f"DELETE FROM {self.s}.chunks WHERE path = ANY(:paths) "
                "RETURNING embedding IS NOT NULL AS had_vector"), {"paths": paths})).all()
            if deleted:
                await conn.execute(text(f"DELETE FROM {self.s}.files WHERE path = ANY(:p)"),
                                   {"p": list(deleted)})
            now = datetime.now(UTC)
            if updates:
                await conn.execute(text(
                    f"INSERT INTO {self.s}.files (path, size, mtime_ns, content_hash, language, "
                    "skip_reason, chunk_count, indexed_at) VALUES (:path, :size, :mtime_ns, :hash, "
                    ":language, :skip, :count, :now) ON CONFLICT (path) DO UPDATE SET "
                    "size = EXCLUDED.size, mtime_ns = EXCLUDED.mtime_ns, "
                    "content_hash = EXCLUDED.content_hash, "
                    "language = EXCLUDED.language, skip_reason = EXCLUDED.skip_reason, "
                    "chunk_count = EXCLUDED.chunk_count, indexed_at = EXCLUDED.indexed_at"),
                    [{"path": u.path, "size": u.size, "mtime_ns": u.mtime_ns, "hash": u.content_hash,
                      "language": u.language, "skip": u.skip_reason, "count": len(u.chunks),
                      "now": now} for u in updates])
            missing, inserted, cached = await self._insert_chunks(conn, updates, model_id)
            removed_vectors = sum(1 for row in removed if row.had_vector)
            await conn.execute(text(
                f"UPDATE {self.s}.stats SET chunks = chunks + :dc, embedded = embedded + :de, "
                "last_indexed_at = :now"),
                {"dc": inserted - len(removed), "de": cached - removed_vectors, "now": now})
            if renames:
                await conn.execute(text(
                    f"UPDATE {self.s}.change_events SET kind = 'renamed', previous_path = :old "
                    "WHERE path = :new AND processed_at IS NULL"),
                    [{"new": new, "old": old} for new, old in renames.items()])
            await _finish_events(conn, self.s, paths, None)
        return missing

    async def _insert_chunks(self, conn: AsyncConnection, updates: Sequence[FileUpdate],
                             model_id: str | None) -> tuple[list[str], int, int]:
        from codequarry.store.db import cached_vectors

        hashes = sorted({c.content_hash for u in updates for c in u.chunks})
        vectors = await cached_vectors(conn, model_id, hashes) if model_id and hashes else {}
        rows = []
        for update in updates:
            for ordinal, (chunk, words) in enumerate(zip(update.chunks, update.search_texts, strict=True)):
                rows.append({
                    "path": update.path, "ordinal": ordinal, "start": chunk.start_line,
                    "end": chunk.end_line, "language": chunk.language, "symbol": chunk.symbol,
                    "kind": chunk.kind, "content": chunk.content, "hash": chunk.content_hash,
                    "symbol_words": words.symbol, "path_words": words.path, "body_words": words.body,
                    "embedding": vectors.get(chunk.content_hash)})
        if rows:
            await conn.execute(text(
                f"INSERT INTO {self.s}.chunks (path, ordinal, start_line, end_line, language, symbol, "
                "kind, content, content_hash, tsv, embedding) VALUES (:path, :ordinal, :start, :end, "
                f":language, :symbol, :kind, :content, :hash, {TSV_SQL}, :embedding)"), rows)
        missing = [h for h in hashes if h not in vectors]
        return missing, len(rows), sum(1 for row in rows if row["embedding"] is not None)

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

    async def model(self) -> tuple[str | None, int | None]:
        """(model id, dims) of the project's vectors; cached briefly, it is read per search."""
        now = time.monotonic()
        if self._model is not None and now - self._model[0] < MODEL_CACHE_SECONDS:
            return self._model[1]
        async with self.reader.connect() as conn:
            row = (await conn.execute(text(
                "SELECT model_id, dims FROM codequarry.projects WHERE id = :id"),
                {"id": self.project_id})).one()
        self._model = (now, (row.model_id, row.dims))
        return row.model_id, row.dims

    async def set_model(self, model_id: str, dims: int) -> bool:
        """Switch the project to an embedding model; on a change, all vectors are dropped
        (to be re-embedded) and the HNSW index is rebuilt for the new dimension."""
        self._model = None
        current, current_dims = await self.model()
        if current == model_id and current_dims == dims:
            return False
        index = quote_ident(f"{self.schema}_embedding_hnsw")
        async with self.engine.begin() as conn:
            await conn.execute(text(f"DROP INDEX IF EXISTS {self.s}.{index}"))
            await conn.execute(text(
                f"ALTER TABLE {self.s}.chunks ALTER COLUMN embedding TYPE vector({int(dims)}) USING NULL"))
            await conn.execute(text(
                f"CREATE INDEX {index} ON {self.s}.chunks USING hnsw (embedding vector_cosine_ops)"))
            await conn.execute(text(f"UPDATE {self.s}.stats SET embedded = 0"))
            await conn.execute(text(
                "UPDATE codequarry.projects SET model_id = :m, dims = :d WHERE id = :id"),
                {"m": model_id, "d": dims, "id": self.project_id})
        self._model = None
        return True

    async def unembedded(self, limit: int, skip: Sequence[str] = ()) -> list[Chunk]:
        """Distinct chunks that still lack a vector, oldest first."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT content_hash, language, symbol, kind, content, start_line, end_line "
                f"FROM {self.s}.chunks WHERE embedding IS NULL AND NOT content_hash = ANY(:skip) "
                "ORDER BY id LIMIT :n"), {"n": limit * 2, "skip": list(skip)})
            seen: dict[str, Chunk] = {}
            for r in rows:
                if r.content_hash not in seen:
                    seen[r.content_hash] = Chunk(r.start_line, r.end_line, r.content, r.language,
                                                 r.symbol, r.kind, r.content_hash)
            return list(seen.values())[:limit]

    async def apply_vectors(self, conn: AsyncConnection, vectors: dict[str, Vector]) -> int:
        """Give every chunk with one of these hashes its vector; returns rows updated."""
        if not vectors:
            return 0
        result = await conn.execute(text(
            f"UPDATE {self.s}.chunks AS c SET embedding = v.embedding "
            "FROM unnest(CAST(:hashes AS text[]), CAST(:vectors AS vector[])) AS v(hash, embedding) "
            "WHERE c.content_hash = v.hash AND c.embedding IS NULL"),
            {"hashes": list(vectors), "vectors": [PgVector(v) for v in vectors.values()]})
        updated = int(result.rowcount or 0)
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
                "SELECT model_id FROM codequarry.projects WHERE id = :id"), {"id": self.project_id})).scalar()
        return Counts(files.files, files.skipped, stats.chunks, stats.embedded, events.files,
                      events.events, last, stats.last_indexed_at, events.oldest, model, errors)

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
        async with self.engine.connect() as conn:
            wrong = (await conn.execute(text(
                f"SELECT count(*) FROM {self.s}.chunks c JOIN codequarry.projects p ON p.id = :id "
                "JOIN codequarry.embedding_cache e ON e.model_id = p.model_id "
                "AND e.content_hash = c.content_hash "
                "WHERE c.embedding IS NOT NULL AND c.embedding <> e.embedding"),
                {"id": self.project_id})).scalar()
            if wrong:
                problems.append(f"{wrong} chunk vectors differ from the embedding cache")
            actual = (await conn.execute(text(
                f"SELECT count(*) AS chunks, count(embedding) AS embedded FROM {self.s}.chunks"))).one()
            counters = (await conn.execute(text(f"SELECT chunks, embedded FROM {self.s}.stats"))).one()
        if tuple(actual) != tuple(counters):
            problems.append(f"counters say {tuple(counters)} (chunks, with vectors), "
                            f"the table holds {tuple(actual)}")
        if actual.embedded < actual.chunks:
            problems.append(f"{actual.chunks - actual.embedded} chunks have no vector yet")
        return problems

    # ---- search --------------------------------------------------------------------------

    async def query_terms(self, words: str) -> tuple[list[str], int, dict[str, float]]:
        """The query's lexemes in order, the chunk count, and the fraction of chunks that
        hold each lexeme, in one round trip.

        Common lexemes come from ANALYZE's most-common-elements statistics; the rest are
        counted exactly through the GIN index, which is cheap precisely because they are rare.
        """
        async with self.reader.connect() as conn:
            common = await self._common_lexemes(conn)
            rows = (await conn.execute(text(
                "SELECT t.lexeme, s.chunks AS total, CASE WHEN t.lexeme = ANY(:common) THEN NULL "
                f"ELSE (SELECT count(*) FROM (SELECT 1 FROM {self.s}.chunks "
                "WHERE tsv @@ quote_literal(t.lexeme)::tsquery LIMIT 5000) hits) END AS n "
                f"FROM unnest(to_tsvector('english', :q)) AS t, {self.s}.stats s "
                "ORDER BY t.positions[1]"), {"q": words, "common": list(common)})).all()
        total = int(rows[0].total) if rows else 0
        freqs = {row.lexeme: common[row.lexeme] if row.n is None else row.n / total
                 for row in rows if row.n is None or total}
        return [row.lexeme for row in rows], total, freqs

    async def _common_lexemes(self, conn: AsyncConnection) -> dict[str, float]:
        now = datetime.now(UTC).timestamp()
        if self._term_stats and now - self._term_stats[0] < 60:
            return self._term_stats[1]
        row = (await conn.execute(text(
            "SELECT most_common_elems::text::text[] AS elems, most_common_elem_freqs AS freqs "
            "FROM pg_stats WHERE schemaname = :s AND tablename = 'chunks' AND attname = 'tsv'"),
            {"s": self.schema})).first()
        common: dict[str, float] = {}
        if row and row.elems:
            common = dict(zip(row.elems, row.freqs, strict=False))
        self._term_stats = (now, common)
        return common

    async def analyze(self) -> None:
        async with self.engine.connect() as conn:
            await conn.execute(text(f"ANALYZE {self.s}.chunks"))
            await conn.commit()
        self._term_stats = None

    async def lexical(self, terms: Sequence[tuple[str, float]], match: Sequence[str],
                      filters: Filters, limit: int) -> list[tuple[int, float]]:
        """(chunk id, score): chunks containing any `match` lexeme, scored by the weighted
        sum of ts_rank over `terms` (lexeme, idf). Ranking is bounded to a candidate set."""
        if not match:
            return []
        params: dict[str, Any] = {
            "match": " | ".join(_tsquery_literal(lex) for lex in match),
            "terms": [lex for lex, _ in terms], "weights": [w for _, w in terms],
            "cap": LEXICAL_CANDIDATES, "k": limit}
        where = filters.sql(params)
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"WITH cand AS (SELECT id, tsv FROM {self.s}.chunks "
                f"WHERE tsv @@ CAST(:match AS tsquery){where} LIMIT :cap) "
                "SELECT c.id, sum(ts_rank(c.tsv, quote_literal(t.lexeme)::tsquery, 1) * t.w) AS score "
                "FROM cand c CROSS JOIN unnest(CAST(:terms AS text[]), CAST(:weights AS float8[])) "
                "AS t(lexeme, w) WHERE c.tsv @@ quote_literal(t.lexeme)::tsquery "
                "GROUP BY c.id ORDER BY score DESC LIMIT :k"), params)
            return [(row.id, float(row.score)) for row in rows]

    async def semantic(self, query: Vector, filters: Filters, limit: int,
                       iterative: bool) -> list[tuple[int, float]]:
        """(chunk id, cosine similarity) from the HNSW index; filters never starve it."""
        params: dict[str, Any] = {"q": query, "k": limit}
        where = filters.sql(params)
        fetch = limit if iterative or not where else limit * 10  # older pgvector: over-fetch
        params["fetch"] = fetch
        statement = text(f"SELECT id, embedding <=> :q AS distance FROM {self.s}.chunks "
                         f"WHERE embedding IS NOT NULL{where} ORDER BY embedding <=> :q LIMIT :fetch")
        ef_search = max(40, min(1000, fetch * 2))
        if ef_search <= SESSION_EF_SEARCH:  # the session's settings suffice (create_engine)
            async with self.reader.connect() as conn:
                rows = (await conn.execute(statement, params)).all()
        else:
            async with self.engine.begin() as conn:
                await conn.execute(text(  # one round trip for both settings, local to this transaction
                    "SELECT set_config('hnsw.ef_search', :ef, true)"
                    + (", set_config('hnsw.iterative_scan', 'relaxed_order', true)" if iterative else "")),
                    {"ef": str(ef_search)})
                rows = (await conn.execute(statement, params)).all()
        hits = sorted(((row.id, 1.0 - float(row.distance)) for row in rows), key=lambda h: -h[1])
        return [(i, s) for i, s in hits if not math.isnan(s)][:limit]

    async def chunk_rows(self, ids: Sequence[int]) -> dict[int, ChunkRow]:
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT id, path, start_line, end_line, language, symbol, kind, content, content_hash "
                f"FROM {self.s}.chunks WHERE id = ANY(:ids)"), {"ids": list(ids)})
            return {r.id: ChunkRow(r.id, r.path, Chunk(r.start_line, r.end_line, r.content, r.language,
                                                        r.symbol, r.kind, r.content_hash)) for r in rows}

    async def symbols_matching(self, names: Sequence[str]) -> set[str]:
        """Which of `names` (lowercased) are the symbol of some chunk: exact identifier hits."""
        if not names:
            return set()
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                f"SELECT DISTINCT lower(symbol) AS s FROM {self.s}.chunks "
                "WHERE lower(symbol) = ANY(:names)"), {"names": list(names)})
            return {row.s for row in rows}

    async def skipped_files(self, limit: int = 200) -> tuple[list[tuple[str, str]], int]:
        """((path, skip reason) of the first `limit` skipped files by path, how many there are)."""
        async with self.reader.connect() as conn:
            rows = (await conn.execute(text(
                f"SELECT path, skip_reason, count(*) OVER () AS total FROM {self.s}.files "
                "WHERE skip_reason IS NOT NULL ORDER BY path LIMIT :n"), {"n": limit})).all()
        return [(row.path, row.skip_reason) for row in rows], int(rows[0].total) if rows else 0


async def _finish_events(conn: AsyncConnection, schema: str, paths: Sequence[str], error: str | None) -> None:
    await conn.execute(text(
        f"UPDATE {schema}.change_events SET processed_at = now(), error = :error "
        "WHERE path = ANY(:paths) AND processed_at IS NULL"), {"paths": list(paths), "error": error})


def _tsquery_literal(lexeme: str) -> str:
    return "'" + lexeme.replace("\\", "\\\\").replace("'", "''") + "'"
