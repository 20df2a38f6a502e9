"""The store: one PostgreSQL database, a shared schema and one schema per project."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
from pgvector import Vector as PgVector
from pgvector.asyncpg import register_vector
from sqlalchemy import URL, event, text
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from codequarry import __version__, faults
from codequarry.config import EMBEDDED, Settings
from codequarry.errors import StoreUnavailable, UnknownProject
from codequarry.installation import host_name, installation_id
from codequarry.models import EmbeddingBatch, validate_project_id
from codequarry.store import url as dburl
from codequarry.store.embedded import EmbeddedPostgres
from codequarry.store.migrations import (
    PROJECT_VERSION,
    migrate_project,
    migrate_shared,
    quote_ident,
    schema_name,
)
from codequarry.store.privileges import check_database
from codequarry.store.project import SESSION_EF_SEARCH, ProjectStore, project_lock_key

Vector = np.ndarray[Any, np.dtype[np.float32]]
MAX_HNSW_DIMS = {"vector": 2000, "halfvec": 4000}


def asyncpg_url(url: str) -> URL:
    """The SQLAlchemy asyncpg URL of a [database] url (libpq names mapped, e.g. sslmode ->
    ssl); a URL object, whose str() masks the password. StoreUnavailable if unparseable."""
    return dburl.parse(url)


class Store:
    """The database: the shared schema, and a ProjectStore per project of this installation."""

    def __init__(self, engine: AsyncEngine, embedded: EmbeddedPostgres | None,
                 pgvector_version: tuple[int, ...], installation: str,
                 vector_type: str = "auto") -> None:
        self.engine = engine
        # one-statement reads need no transaction (a BEGIN and a ROLLBACK round trip each)
        self.reader = engine.execution_options(isolation_level="AUTOCOMMIT")
        self.embedded = embedded
        self.pgvector_version = pgvector_version
        self.installation = installation
        self.host = host_name()
        self._vector_type = vector_type
        self._projects: dict[str, ProjectStore] = {}

    @classmethod
    async def open(cls, settings: Settings) -> Store:
        """Start (or attach to) the database, check pgvector, migrate the shared schema and
        register this installation. StoreUnavailable says what is wrong in one line."""
        embedded = None
        url = settings.config.database.url
        if url == EMBEDDED:
            from codequarry.daemon_lock import holds

            # the holder of the data dir's lock owns the server (may stop and restart it)
            embedded = EmbeddedPostgres(settings.pgdata, owner=holds(settings.lock_path))
            import anyio

            url = await anyio.to_thread.run_sync(
                embedded.start, settings.config.database.embedded_shared_buffers_mb)
        installation = installation_id(settings.data_dir)
        engine = create_engine(asyncpg_url(url))
        try:
            async with engine.begin() as conn:
                await check_database(conn)  # least privilege: name the admin's SQL first
                await migrate_shared(conn)
                version = (await conn.execute(text(
                    "SELECT extversion FROM pg_extension WHERE extname = 'vector'"))).scalar()
                await _register_installation(conn, installation, host_name(), settings.data_dir,
                                             shared=embedded is None)
            await engine.dispose()  # reconnect so every connection knows the vector type
        except (OSError, DBAPIError, OperationalError, StoreUnavailable) as exc:
            await engine.dispose()
            if embedded:
                embedded.stop()
            if isinstance(exc, StoreUnavailable):
                raise
            raise StoreUnavailable(f"cannot use the database: {describe_db_error(exc, url)}") from None
        parsed = tuple(int(part) for part in str(version).split(".")[:3] if part.isdigit())
        if parsed < (0, 6):
            await engine.dispose()
            raise StoreUnavailable(f"pgvector {version} is too old; codequarry needs 0.6 or newer")
        return cls(engine, embedded, parsed, installation, settings.config.index.vector_type)

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

    def vector_type(self, dims: int) -> str:
        """The column type for `dims`-dimensional vectors: halfvec (pgvector >= 0.7) halves
        memory; HNSW indexes up to 2,000 dims of vector and 4,000 of halfvec (pgvector docs)."""
        halfvec = self.pgvector_version >= (0, 7)
        wanted = self._vector_type if self._vector_type != "auto" else ("halfvec" if halfvec else "vector")
        if wanted == "halfvec" and not halfvec:
            raise StoreUnavailable(f"vector_type = \"halfvec\" needs pgvector 0.7 or newer "
                                   f"(this server has {'.'.join(map(str, self.pgvector_version))})")
        if wanted == "vector" and dims > MAX_HNSW_DIMS["vector"] and halfvec:
            wanted = "halfvec"
        if dims > MAX_HNSW_DIMS[wanted]:
            raise StoreUnavailable(
                f"a {dims}-dimensional model is above pgvector's HNSW limit ({MAX_HNSW_DIMS[wanted]} "
                f"dims for {wanted}); choose a model with fewer dimensions")
        return wanted

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncConnection]:
        async with self.engine.begin() as conn:
            yield conn

    # ---- projects ------------------------------------------------------------------

    async def ensure_project(self, project_id: str, root: str) -> ProjectStore:
        """The project's store, creating, adopting or migrating its schema as needed.

        Safe when several processes start the same project at once: everything runs under
        the project's advisory lock. Raises StoreUnavailable when the index belongs to a
        copy of this installation elsewhere, or was written by a newer codequarry.
        """
        validate_project_id(project_id)
        async with self.engine.begin() as conn:
            await _lock_project(conn, self.installation, project_id)
            row = await _project_row(conn, self.installation, project_id)
            if row is not None and row.installation == "":  # from before installations existed
                if row.root == root:  # this tree's index: adopt it
                    await conn.execute(text(
                        "UPDATE codequarry.projects SET installation = :i WHERE installation = '' "
                        "AND id = :id"), {"i": self.installation, "id": project_id})
                row = None if row.root != root else await _project_row(conn, self.installation, project_id)
            if row is None:
                await conn.execute(text(
                    "INSERT INTO codequarry.projects (installation, id, schema_name, root, host, "
                    "schema_version) VALUES (:i, :id, :s, :root, :host, 0) ON CONFLICT DO NOTHING"),
                    {"i": self.installation, "id": project_id, "root": root, "host": self.host,
                     "s": schema_name(self.installation, project_id)})
                row = await _project_row(conn, self.installation, project_id)
                assert row is not None
            if row.schema_version < PROJECT_VERSION or row.schema_version > PROJECT_VERSION:
                await migrate_project(conn, row.schema_name, row.schema_version,
                                      (self.installation, project_id))
            await conn.execute(text(
                "UPDATE codequarry.projects SET root = :root, host = :host, schema_version = :v "
                "WHERE installation = :i AND id = :id"),
                {"i": self.installation, "id": project_id, "root": root, "host": self.host,
                 "v": PROJECT_VERSION})
        return self._project_store(project_id, row.schema_name)

    async def project(self, project_id: str) -> ProjectStore:
        """The store of an already indexed project; UnknownProject if it has none."""
        validate_project_id(project_id)
        if project_id not in self._projects:
            async with self.engine.connect() as conn:
                row = await _project_row(conn, self.installation, project_id)
            if row is None:
                raise UnknownProject(f"project {project_id!r} has not been indexed")
            if row.schema_version != PROJECT_VERSION:
                return await self.ensure_project(project_id, row.root)
            self._project_store(project_id, row.schema_name)
        return self._projects[project_id]

    def _project_store(self, project_id: str, schema: str) -> ProjectStore:
        store = self._projects.get(project_id)
        if store is None or store.schema != schema:
            store = self._projects[project_id] = ProjectStore(
                self.engine, self.installation, project_id, schema, self.vector_type)
        return store

    async def indexed_projects(self) -> dict[str, str]:
        """Project id -> root, for every project of this installation with data in the store
        (and indexes written before installations existed, not yet adopted)."""
        async with self.reader.connect() as conn:
            rows = await conn.execute(text(
                "SELECT DISTINCT ON (id) id, root FROM codequarry.projects "
                "WHERE installation = :i OR installation = '' "
                "ORDER BY id, installation DESC"), {"i": self.installation})
            return {row.id: row.root for row in rows}

    async def drop_project(self, project_id: str) -> bool:
        validate_project_id(project_id)
        async with self.engine.begin() as conn:
            await _lock_project(conn, self.installation, project_id)
            row = await _project_row(conn, self.installation, project_id)
            if row is not None:
                await conn.execute(text(
                    "DELETE FROM codequarry.projects WHERE installation = :i AND id = :id"),
                    {"i": row.installation, "id": project_id})
                await conn.execute(text(f"DROP SCHEMA IF EXISTS {quote_ident(row.schema_name)} CASCADE"))
        self._projects.pop(project_id, None)
        return row is not None

    # ---- the shared embedding cache ------------------------------------------------------

    async def cached_vectors(self, model_id: str, hashes: Sequence[str]) -> dict[str, Vector]:
        if not hashes:
            return {}
        async with self.engine.connect() as conn:
            return await cached_vectors(conn, model_id, hashes)

    async def record_model(self, model_id: str, dims: int, embedder: dict[str, Any]) -> None:
        """Remember how to build an embedder of `model_id` (its [embedder] config; never a
        secret), so that queries can be embedded for its vectors after the config changed."""
        async with self.engine.begin() as conn:
            await conn.execute(text(
                "INSERT INTO codequarry.models (model_id, embedder, dims) VALUES (:m, CAST(:e AS jsonb), :d) "
                "ON CONFLICT (model_id) DO UPDATE SET embedder = EXCLUDED.embedder, recorded_at = now()"),
                {"m": model_id, "e": json.dumps(embedder), "d": dims})

    async def model_config(self, model_id: str) -> dict[str, Any] | None:
        async with self.engine.connect() as conn:
            found = (await conn.execute(text(
                "SELECT embedder FROM codequarry.models WHERE model_id = :m"), {"m": model_id})).scalar()
        return found if isinstance(found, dict) else None

    async def cached_hashes(self, model_id: str, hashes: Sequence[str]) -> set[str]:
        """Which of `hashes` the embedding cache holds a vector of for `model_id`."""
        if not hashes:
            return set()
        async with self.engine.connect() as conn:
            rows = await conn.execute(text(
                "SELECT content_hash FROM codequarry.embedding_cache "
                "WHERE model_id = :m AND content_hash = ANY(:h)"), {"m": model_id, "h": list(set(hashes))})
            return {row.content_hash for row in rows}

    async def save_vectors(self, model_id: str, vectors: dict[str, Vector],
                           projects: Sequence[ProjectStore], batch: EmbeddingBatch | None = None,
                           project_id: str | None = None) -> int:
        """Add vectors to the shared cache and to the chunks of `projects` that lack them;
        `batch` (what computing them cost) is recorded in the same transaction. Returns the
        number of chunks that got a vector."""
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
                updated += await project.apply_vectors(conn, model_id, list(vectors))
            if batch is not None:
                await _record_batch(conn, batch, project_id, self.installation)
            return updated

    async def embeddings_computed(self, model_id: str | None = None) -> int:
        """How many texts were embedded (not taken from the cache), per embedding_metadata."""
        async with self.engine.connect() as conn:
            query = "SELECT coalesce(sum(count), 0) FROM codequarry.embedding_metadata"
            if model_id:
                query += " WHERE model_id = :m"
            return int((await conn.execute(text(query), {"m": model_id})).scalar() or 0)


async def _lock_project(conn: AsyncConnection, installation: str, project_id: str) -> None:
    """Serialise every schema change of one project between processes (transaction-scoped)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(hashtextextended(:k, 0))"),
                       {"k": project_lock_key(installation, project_id)})


async def _project_row(conn: AsyncConnection, installation: str, project_id: str) -> Any:
    """This installation's row of the project, else a legacy (unadopted) one, else None.
    ('' sorts before any installation id, so DESC puts this installation's row first.)"""
    return (await conn.execute(text(
        "SELECT installation, schema_name, root, schema_version FROM codequarry.projects "
        "WHERE id = :id AND (installation = :i OR installation = '') "
        "ORDER BY installation DESC LIMIT 1"), {"i": installation, "id": project_id})).first()


async def _register_installation(conn: AsyncConnection, installation: str, host: str, data_dir: Path,
                                 shared: bool) -> None:
    """Record this installation; on a shared server, refuse an identity that a copy of
    this data dir (on another host, or still present elsewhere on this one) also uses."""
    row = (await conn.execute(text(
        "SELECT host, data_dir FROM codequarry.installations WHERE id = :id"), {"id": installation})).first()
    if row is not None and shared and (row.host, row.data_dir) != (host, str(data_dir)):
        elsewhere = Path(row.data_dir) / "installation-id"
        copied = row.host != host or (elsewhere.exists() and elsewhere.read_text().strip() == installation)
        if copied:
            raise StoreUnavailable(
                f"installation {installation[:8]} is already used by {row.host}:{row.data_dir}; "
                f"{data_dir} looks like a copy of it: delete {data_dir / 'installation-id'} to give "
                "this installation its own identity (its indexes are then built anew)")
    await conn.execute(text(
        "INSERT INTO codequarry.installations (id, host, data_dir, version) VALUES (:id, :h, :d, :v) "
        "ON CONFLICT (id) DO UPDATE SET host = :h, data_dir = :d, version = :v, last_seen_at = now()"),
        {"id": installation, "h": host, "d": str(data_dir), "v": __version__})


async def cached_vectors(conn: AsyncConnection, model_id: str, hashes: Sequence[str]) -> dict[str, Vector]:
    rows = await conn.execute(text(
        "SELECT content_hash, embedding FROM codequarry.embedding_cache "
        "WHERE model_id = :m AND content_hash = ANY(:h)"), {"m": model_id, "h": list(hashes)})
    return {row.content_hash: row.embedding.to_numpy() for row in rows}


def as_pgvectors(vectors: Iterable[Vector]) -> list[PgVector]:
    """asyncpg encodes a vector[] parameter from pgvector objects, not from numpy rows."""
    return [PgVector(v) for v in vectors]


def create_engine(url: str | URL) -> AsyncEngine:
    # no pool_pre_ping: a ping per checkout cost searches a round trip per query; a
    # connection that died with the server fails once, resets the pool, and callers retry
    # issue 13: enough pooled connections that 10 concurrent searches (2-4 statements in
    # parallel each) never open and close overflow connections, each of which costs a
    # backend fork, type introspection and an empty prepared-statement cache
    # asyncpg keeps statements up to 15 KB prepared by default; a search over many projects
    # runs a longer UNION (store/fanout.py), and re-planning it costs more than running it.
    # LIFO: the same few connections serve a light load, so their prepared statements
    # reach PostgreSQL's generic plans (after 5 runs each) instead of being planned anew
    engine = create_async_engine(url, pool_size=24, max_overflow=16, pool_recycle=3600, pool_use_lifo=True,
                                 connect_args={"max_cacheable_statement_size": 1 << 20})

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


async def _record_batch(conn: AsyncConnection, batch: EmbeddingBatch, project: str | None,
                        installation: str) -> None:
    await conn.execute(text(
        "INSERT INTO codequarry.embedding_metadata "
        "(model_id, model_name, model_version, dims, count, seconds, project, installation) "
        "VALUES (:model_id, :model_name, :model_version, :dims, :count, :seconds, :project, :i)"),
        {"model_id": batch.model_id, "model_name": batch.model_name,
         "model_version": batch.model_version, "dims": batch.dims, "count": batch.count,
         "seconds": batch.seconds, "project": project, "i": installation})


def is_transient(exc: BaseException) -> bool:
    """A failure of the environment worth retrying (see codequarry.faults)."""
    return faults.is_transient(exc)


def describe_db_error(exc: BaseException, url: str | URL | None = None) -> str:
    """One line for a database failure: the driver's own error (asyncpg's, not SQLAlchemy's
    wrapper), where the daemon tried to connect when `url` is given, a hint for the
    usual team-server mistakes, and never the URL's password."""
    original = _driver_error(exc)
    message = str(original).strip().splitlines()[0] if str(original).strip() else ""
    name = type(original).__name__
    hint = ""
    if "rejected SSL upgrade" in message:
        hint = ("; the server does not offer TLS, and the URL's sslmode requires it "
                "(use sslmode=prefer or disable, or enable TLS on the server)")
    elif name == "InvalidPasswordError" and url is not None and dburl.password_of(str(url)) is None:
        hint = "; the URL has no password: set PGPASSWORD or add a ~/.pgpass line for this host"
    where = ""
    password = None
    if url is not None:
        text_url = url.render_as_string(hide_password=False) if isinstance(url, URL) else url
        password = dburl.password_of(text_url)
        if not text_url.startswith("postgresql+asyncpg://postgres@/"):  # the embedded server's socket
            where = f" ({dburl.describe_target(text_url)})"
    line = (f"{name}: {message}" if message else name) + where + hint
    return dburl.mask_text(line, password)


def _driver_error(exc: BaseException) -> BaseException:
    """The asyncpg (or OS) exception under SQLAlchemy's and the adapter's wrappers."""
    seen: BaseException = getattr(exc, "orig", None) or exc
    for _ in range(4):
        inner = seen.__cause__ or seen.__context__
        if inner is None or type(inner).__module__.startswith("sqlalchemy"):
            break
        if type(seen).__module__.startswith("sqlalchemy"):
            seen = inner
        else:
            break
    return seen
