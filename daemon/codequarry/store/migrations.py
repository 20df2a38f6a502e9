"""Versioned schema migrations: upgrading codequarry never requires a re-index.

Each migration is an ordered list of steps: SQL text, or a function for steps that
depend on the data (the dimension of a project's vectors). The shared schema's version
lives in codequarry.schema_version; each project's in codequarry.projects.schema_version.
Migrations run under an advisory lock, so daemons sharing a server take turns, and a
version newer than this code knows is refused, never written to. Append new migrations;
never edit a released one. This module is the only owner of version numbers.

Layout (version 3): `codequarry.projects` is keyed by (installation, id) — several
installations share a server without sharing an index; each project's schema holds
`files`, `chunks` (words, spans, the enclosing unit's span, indexed by unit), `definitions`,
`change_events`, `stats` and one narrow vector table of its active model
(`vectors_<n>`: chunk id -> embedding), so saving a vector never rewrites a chunk row;
while the model changes, the next model's table fills beside it (blue/green).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from codequarry.errors import StoreUnavailable

# A step that needs Python: (connection, quoted schema, project row key) -> None.
ProjectStep = Callable[[AsyncConnection, str, "ProjectKey"], Awaitable[None]]
Step = str | ProjectStep
ProjectKey = tuple[str, str]  # (installation, project id)

SHARED_MIGRATIONS: list[list[str]] = [
    [  # 1: shared tables
        # a no-op without privileges when an administrator has created it (Store.open checks)
        "CREATE EXTENSION IF NOT EXISTS vector",
        "CREATE SCHEMA IF NOT EXISTS codequarry",
        """CREATE TABLE codequarry.schema_version (
               scope text PRIMARY KEY, version int NOT NULL,
               applied_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE codequarry.projects (
               id text PRIMARY KEY, schema_name text NOT NULL UNIQUE, root text NOT NULL,
               model_id text, dims int, schema_version int NOT NULL,
               created_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE codequarry.embedding_cache (
               model_id text NOT NULL, content_hash text NOT NULL, embedding vector NOT NULL,
               created_at timestamptz NOT NULL DEFAULT now(),
               PRIMARY KEY (model_id, content_hash))""",
        """CREATE TABLE codequarry.embedding_metadata (
               id bigserial PRIMARY KEY, model_id text NOT NULL, model_name text NOT NULL,
               model_version text NOT NULL, dims int NOT NULL, count int NOT NULL,
               seconds double precision NOT NULL, project text,
               created_at timestamptz NOT NULL DEFAULT now())""",
    ],
    [  # 2: installations; projects keyed by (installation, id); the active vector table
        """CREATE TABLE codequarry.installations (
               id text PRIMARY KEY, host text NOT NULL, data_dir text NOT NULL,
               version text NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
               last_seen_at timestamptz NOT NULL DEFAULT now())""",
        # rows written before installations existed belong to nobody ('') until the
        # installation that registers the same id for the same root adopts them
        "ALTER TABLE codequarry.projects ADD COLUMN installation text NOT NULL DEFAULT ''",
        "ALTER TABLE codequarry.projects DROP CONSTRAINT projects_pkey",
        "ALTER TABLE codequarry.projects ADD PRIMARY KEY (installation, id)",
        "ALTER TABLE codequarry.projects ADD COLUMN host text",
        "ALTER TABLE codequarry.projects ADD COLUMN vector_table text",
        "ALTER TABLE codequarry.projects ADD COLUMN vector_type text",
        "ALTER TABLE codequarry.projects ADD COLUMN hnsw_ready boolean NOT NULL DEFAULT false",
        "ALTER TABLE codequarry.embedding_metadata ADD COLUMN installation text",
        # a model switch fills the next table in the background while the active one serves
        "ALTER TABLE codequarry.projects ADD COLUMN next_model_id text",
        "ALTER TABLE codequarry.projects ADD COLUMN next_dims int",
        "ALTER TABLE codequarry.projects ADD COLUMN next_vector_table text",
        "ALTER TABLE codequarry.projects ADD COLUMN next_vector_type text",
        # how to build an embedder of each model (no secrets: api keys are env var names),
        # so queries can still be embedded for vectors of the previous model
        """CREATE TABLE codequarry.models (
               model_id text PRIMARY KEY, embedder jsonb NOT NULL, dims int NOT NULL,
               recorded_at timestamptz NOT NULL DEFAULT now())""",
    ],
]


async def _move_vectors_out_of_chunks(conn: AsyncConnection, schema: str, key: ProjectKey) -> None:
    """Version 1 kept each vector in its chunk row; copy them to a narrow table of the
    same type (no re-embedding). Its HNSW index is built later, in the background."""
    row = (await conn.execute(text(
        "SELECT model_id, dims FROM codequarry.projects WHERE installation = :i AND id = :id"),
        {"i": key[0], "id": key[1]})).first()
    if row is not None and row.dims:
        table = f"{schema}.vectors_1"
        await conn.execute(text(
            f"CREATE TABLE {table} (chunk_id bigint PRIMARY KEY REFERENCES {schema}.chunks(id) "
            f"ON DELETE CASCADE, embedding vector({int(row.dims)}) NOT NULL)"))
        await conn.execute(text(
            f"INSERT INTO {table} SELECT id, embedding FROM {schema}.chunks WHERE embedding IS NOT NULL"))
        await conn.execute(text(
            "UPDATE codequarry.projects SET vector_table = 'vectors_1', vector_type = 'vector', "
            "hnsw_ready = false WHERE installation = :i AND id = :id"), {"i": key[0], "id": key[1]})
    await conn.execute(text(f"ALTER TABLE {schema}.chunks DROP COLUMN embedding"))


# "{s}" is the project's schema, quoted by the caller.
PROJECT_MIGRATIONS: list[list[Step]] = [
    [  # 1: files, chunks (tsvector + vector), change events, counters
        "CREATE SCHEMA IF NOT EXISTS {s}",
        """CREATE TABLE {s}.files (
               path text PRIMARY KEY, size bigint NOT NULL, mtime_ns bigint NOT NULL,
               content_hash text, language text, skip_reason text,
               chunk_count int NOT NULL DEFAULT 0, indexed_at timestamptz NOT NULL DEFAULT now())""",
        """CREATE TABLE {s}.chunks (
               id bigserial PRIMARY KEY,
               path text NOT NULL REFERENCES {s}.files(path) ON DELETE CASCADE,
               ordinal int NOT NULL, start_line int NOT NULL, end_line int NOT NULL,
               language text NOT NULL, symbol text, kind text NOT NULL, content text NOT NULL,
               content_hash text NOT NULL, tsv tsvector NOT NULL, embedding vector)""",
        "CREATE INDEX chunks_path ON {s}.chunks (path)",
        "CREATE INDEX chunks_hash ON {s}.chunks (content_hash)",
        "CREATE INDEX chunks_symbol ON {s}.chunks (lower(symbol))",
        "CREATE INDEX chunks_tsv ON {s}.chunks USING gin (tsv)",
        "CREATE INDEX chunks_unembedded ON {s}.chunks (id) WHERE embedding IS NULL",
        """CREATE TABLE {s}.change_events (
               id bigserial PRIMARY KEY, path text NOT NULL, kind text NOT NULL,
               previous_path text, detected_at timestamptz NOT NULL DEFAULT now(),
               processed_at timestamptz, error text)""",
        "CREATE INDEX change_events_pending ON {s}.change_events (path) WHERE processed_at IS NULL",
        "CREATE INDEX change_events_recent ON {s}.change_events (detected_at DESC)",
        """CREATE TABLE {s}.stats (
               id int PRIMARY KEY CHECK (id = 1), chunks bigint NOT NULL,
               embedded bigint NOT NULL, last_indexed_at timestamptz)""",
        "INSERT INTO {s}.stats VALUES (1, 0, 0, NULL)",
    ],
    [  # 2: narrow vector table, unit spans, definitions, chunker version per file
        _move_vectors_out_of_chunks,
        "ALTER TABLE {s}.chunks ADD COLUMN unit_start int, ADD COLUMN unit_end int",
        "ALTER TABLE {s}.files ADD COLUMN chunker_version int NOT NULL DEFAULT 0",
        """CREATE TABLE {s}.definitions (
               id bigserial PRIMARY KEY,
               path text NOT NULL REFERENCES {s}.files(path) ON DELETE CASCADE,
               name text NOT NULL, qualified_name text NOT NULL, kind text NOT NULL,
               language text NOT NULL, start_line int NOT NULL, end_line int NOT NULL)""",
        "CREATE INDEX definitions_path ON {s}.definitions (path)",
        "CREATE INDEX definitions_name ON {s}.definitions (lower(name) text_pattern_ops)",
        "CREATE INDEX definitions_qualified ON {s}.definitions (lower(qualified_name) text_pattern_ops)",
    ],
    [  # 3 (issue 13): each ranked chunk's unit head (its first named chunk) found through an
        # index: without it a search read every chunk of the hit's file (~15 ms of PostgreSQL
        # per search at 50k chunks, most of its time)
        "CREATE INDEX chunks_unit ON {s}.chunks (path, unit_start, unit_end, ordinal) "
        "WHERE symbol IS NOT NULL",
    ],
]

SHARED_VERSION = len(SHARED_MIGRATIONS)
PROJECT_VERSION = len(PROJECT_MIGRATIONS)
# Serialises shared-schema migrations between processes sharing one database.
_MIGRATION_LOCK = 0x636F6471  # "codq"


def newer_schema(what: str, found: int, known: int) -> StoreUnavailable:
    return StoreUnavailable(
        f"{what} was written by a newer codequarry (schema version {found}; this version knows "
        f"up to {known}); upgrade codequarry on this machine")


async def migrate_shared(conn: AsyncConnection) -> None:
    """Bring the shared schema to SHARED_VERSION (the caller has checked pgvector)."""
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    exists = (await conn.execute(text("SELECT to_regclass('codequarry.schema_version')"))).scalar()
    current = 0
    if exists:
        current = (await conn.execute(text(
            "SELECT version FROM codequarry.schema_version WHERE scope = 'shared'"))).scalar() or 0
    if current > SHARED_VERSION:
        raise newer_schema("this database", current, SHARED_VERSION)
    for statements in SHARED_MIGRATIONS[current:]:
        for statement in statements:
            await conn.execute(text(statement))
    if current < SHARED_VERSION:
        await conn.execute(text(
            "INSERT INTO codequarry.schema_version (scope, version) VALUES ('shared', :v) "
            "ON CONFLICT (scope) DO UPDATE SET version = :v, applied_at = now()"), {"v": SHARED_VERSION})


async def migrate_project(conn: AsyncConnection, schema: str, current: int, key: ProjectKey) -> int:
    """Apply the project migrations after `current` (the caller holds the project's
    advisory lock); returns the new version."""
    if current > PROJECT_VERSION:
        raise newer_schema(f"the index of project {key[1]!r}", current, PROJECT_VERSION)
    quoted = quote_ident(schema)
    for steps in PROJECT_MIGRATIONS[current:]:
        for step in steps:
            if isinstance(step, str):
                await conn.execute(text(step.format(s=quoted)))
            else:
                await step(conn, quoted, key)
    return PROJECT_VERSION


def schema_name(installation: str, project_id: str) -> str:
    """`cq_<8 hex of the installation>_<id>`: at most 62 bytes, under PostgreSQL's 63.
    Project ids are [a-z0-9-]; hyphens become underscores, which ids cannot contain."""
    return f"cq_{installation[:8]}_" + project_id.replace("-", "_")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
