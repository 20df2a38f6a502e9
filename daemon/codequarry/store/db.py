"""The store: one PostgreSQL database, a shared schema and one schema per project."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import numpy as np
from pgvector import Vector as PgVector
from pgvector.asyncpg import register_vector
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from codequarry import faults
from codequarry.config import EMBEDDED, Settings
from codequarry.errors import StoreUnavailable, UnknownProject
from codequarry.models import EmbeddingBatch, validate_project_id
from codequarry.store.embedded import EmbeddedPostgres
from codequarry.store.migrations import (
    PROJECT_VERSION,
    migrate_project,
    migrate_shared,
    quote_ident,
    schema_name,
)
from codequarry.store.project import SESSION_EF_SEARCH, ProjectStore

Vector = np.ndarray[Any, np.dtype[np.float32]]


def asyncpg_url(url: str) -> str:
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix):]
    return url


class Store:
    def __init__(self, engine: AsyncEngine, embedded: EmbeddedPostgres | None,
                 pgvector_version: tuple[int, ...]) -> None:
        self.engine = engine
        self.embedded = embedded
        self.pgvector_version = pgvector_version
        self._projects: dict[str, ProjectStore] = {}

    @classmethod
    async def open(cls, settings: Settings) -> Store:
        """Start (or attach to) the database, check pgvector and migrate the shared schema."""
        embedded = None
        url = settings.config.database.url
        if url == EMBEDDED:
            embedded = EmbeddedPostgres(settings.pgdata)
            import anyio

            url = await anyio.to_thread.run_sync(
                embedded.start, settings.config.database.embedded_shared_buffers_mb)
        engine = create_engine(asyncpg_url(url))
        try:
            async with engine.begin() as conn:
                await migrate_shared(conn)
                version = (await conn.execute(text(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"))).scalar()
            await engine.dispose()  # reconnect so every connection knows the vector type
        except (OSError, DBAPIError, OperationalError) as exc:
            await engine.dispose()
            if embedded:
                embedded.stop()
            raise StoreUnavailable(f"cannot use the database: {describe_db_error(exc)}") from None
        parsed = tuple(int(part) for part in str(version).split(".")[:3] if part.isdigit())
        if parsed < (0, 6):
            await engine.dispose()
            raise StoreUnavailable(f"pgvector {version} is too old; codequarry needs 0.6 or newer")
        return cls(engine, embedded, parsed)

    async def close(self) -> None:
        await self.engine.dispose()
        if self.embedded is not None:
            import anyio

            await anyio.to_thread.run_sync(self.embedded.stop)
            self.embedded = None

    @property
    def iterative_scans(self) -> bool:
        """pgvector 0.8 can keep scanning an HNSW index until filtered results are found."""
        return self.pgvector_version >= (0, 8)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    # ---- projects ------------------------------------------------------------------

    async def ensure_project(self, project_id: str, root: str) -> ProjectStore:
        """The project's store, creating or migrating its schema as needed."""
        validate_project_id(project_id)
        schema = schema_name(project_id)
        async with self.engine.begin() as conn:
            await conn.execute(text("SELECT pg_advisory_xact_lock(hashtext(:s))"), {"s": schema})
            row = (await conn.execute(text(
                "SELECT schema_version FROM codequarry.projects WHERE id = :id"),
                {"id": project_id})).first()
            current = row[0] if row else 0
            if current < PROJECT_VERSION:
                await migrate_project(conn, schema, current)
            await conn.execute(text(
                "INSERT INTO codequarry.projects (id, schema_name, root, schema_version) "
                "VALUES (:id, :s, :root, :v) ON CONFLICT (id) DO UPDATE "
                "SET root = :root, schema_version = :v"),
                {"id": project_id, "s": schema, "root": root, "v": PROJECT_VERSION})
        return self._project_store(project_id)

    async def project(self, project_id: str) -> ProjectStore:
        """The store of an already indexed project; UnknownProject if it has none."""
        validate_project_id(project_id)
        if project_id not in self._projects:
            async with self.engine.connect() as conn:
                found = (await conn.execute(text(
                    "SELECT 1 FROM codequarry.projects WHERE id = :id"), {"id": project_id})).first()
            if not found:
                raise UnknownProject(f"project {project_id!r} has not been indexed")
        return self._project_store(project_id)

    def _project_store(self, project_id: str) -> ProjectStore:
        if project_id not in self._projects:
            self._projects[project_id] = ProjectStore(self.engine, project_id, schema_name(project_id))
        return self._projects[project_id]

    async def indexed_projects(self) -> dict[str, str]:
        """Project id -> root, for every project with data in the store."""
        async with self.engine.connect() as conn:
            rows = await conn.execute(text("SELECT id, root FROM codequarry.projects ORDER BY id"))
            return {row.id: row.root for row in rows}

    async def drop_project(self, project_id: str) -> bool:
        validate_project_id(project_id)
        async with self.engine.begin() as conn:
            deleted = (await conn.execute(text(
                "DELETE FROM codequarry.projects WHERE id = :id RETURNING schema_name"),
                {"id": project_id})).first()
            if deleted:
                await conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_ident(deleted[0])} CASCADE"))
        self._projects.pop(project_id, None)
        return deleted is not None

    # ---- the shared embedding cache ------------------------------------------------------

    async def cached_vectors(self, model_id: str, hashes: Sequence[str]) -> dict[str, Vector]:
        if not hashes:
            return {}
        async with self.engine.connect() as conn:
            return await cached_vectors(conn, model_id, hashes)

    async def save_vectors(self, model_id: str, vectors: dict[str, Vector],
                           projects: Sequence[ProjectStore], batch: EmbeddingBatch | None = None,
                           project_id: str | None = None) -> int:
        """Add vectors to the shared cache and to the chunks of `projects` that lack them;
        `batch` (what computing them cost) is recorded in the same transaction."""
        if not vectors:
            return 0
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO codequarry.embedding_cache (model_id, content_hash, embedding) "
                "SELECT :m, h, e FROM unnest(CAST(:hashes AS text[]), CAST(:vectors AS vector[])) AS v(h, e) "
                "ON CONFLICT DO NOTHING"),
                {"m": model_id, "hashes": list(vectors), "vectors": as_pgvectors(vectors.values())})
            updated = 0
            for project in projects:
                updated += await project.apply_vectors(conn, vectors)
            if batch is not None:
                await _record_batch(conn, batch, project_id)
            return updated


    async def embeddings_computed(self, model_id: str | None = None) -> int:
        """How many texts were embedded (not taken from the cache), per embedding_metadata."""
        async with self.engine.connect() as conn:
            query = "SELECT coalesce(sum(count), 0) FROM codequarry.embedding_metadata"
            if model_id:
                query += " WHERE model_id = :m"
            return int((await conn.execute(text(query), {"m": model_id})).scalar() or 0)


async def cached_vectors(conn: AsyncConnection, model_id: str, hashes: Sequence[str]) -> dict[str, Vector]:
    rows = await conn.execute(text(
        "SELECT content_hash, embedding FROM codequarry.embedding_cache "
        "WHERE model_id = :m AND content_hash = ANY(:h)"), {"m": model_id, "h": list(hashes)})
    return {row.content_hash: row.embedding.to_numpy() for row in rows}


def as_pgvectors(vectors: Iterable[Vector]) -> list[PgVector]:
    """asyncpg encodes a vector[] parameter from pgvector objects, not from numpy rows."""
    return [PgVector(v) for v in vectors]


def create_engine(url: str) -> AsyncEngine:
    # no pool_pre_ping: a ping per checkout cost searches a round trip per query; a
    # connection that died with the server fails once, resets the pool, and callers retry
    engine = create_async_engine(url, pool_size=8, max_overflow=12, pool_recycle=3600)

    @event.listens_for(engine.sync_engine, "connect")
    def _prepare_connection(dbapi_connection: Any, _record: Any) -> None:
        # a new database has no vector type yet: the first migration creates it
        with contextlib.suppress(ValueError):
            dbapi_connection.run_async(register_vector)
        # HNSW settings for the whole session spare a typical vector search its own
        # transaction; pgvector < 0.8 drops the unknown iterative_scan with a warning
        dbapi_connection.run_async(_session_settings)

    return engine


async def _session_settings(conn: Any) -> None:
    import asyncpg

    for setting in (f"hnsw.ef_search = {SESSION_EF_SEARCH}", "hnsw.iterative_scan = relaxed_order"):
        with contextlib.suppress(asyncpg.PostgresError):
            await conn.execute(f"SET {setting}")


async def _record_batch(conn: AsyncConnection, batch: EmbeddingBatch, project: str | None) -> None:
    await conn.execute(text(
        "INSERT INTO codequarry.embedding_metadata "
        "(model_id, model_name, model_version, dims, count, seconds, project) "
        "VALUES (:model_id, :model_name, :model_version, :dims, :count, :seconds, :project)"),
        {"model_id": batch.model_id, "model_name": batch.model_name,
         "model_version": batch.model_version, "dims": batch.dims, "count": batch.count,
         "seconds": batch.seconds, "project": project})


def is_transient(exc: BaseException) -> bool:
    """A failure of the environment worth retrying (see codequarry.faults)."""
    return faults.is_transient(exc)


def describe_db_error(exc: BaseException) -> str:
    original = getattr(exc, "orig", None) or exc
    message = str(original).strip().splitlines()[0] if str(original).strip() else ""
    return f"{type(original).__name__}: {message}" if message else type(original).__name__
