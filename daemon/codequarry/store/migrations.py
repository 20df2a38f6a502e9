"""Versioned schema migrations: upgrading codequarry never requires a re-index.

Each migration is an ordered list of SQL statements. The shared schema's version lives
in codequarry.schema_version; each project's in codequarry.projects.schema_version.
Append new migrations; never edit a released one.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

SHARED_MIGRATIONS: list[list[str]] = [
    [  # 1: shared tables
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
]

# "{s}" is the project's schema, quoted by the caller.
PROJECT_MIGRATIONS: list[list[str]] = [
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
]

SHARED_VERSION = len(SHARED_MIGRATIONS)
PROJECT_VERSION = len(PROJECT_MIGRATIONS)
# Serialises migrations between processes sharing one database.
_MIGRATION_LOCK = 0x636F6471  # "codq"


async def migrate_shared(conn: AsyncConnection) -> None:
    await conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _MIGRATION_LOCK})
    exists = (await conn.execute(text("SELECT to_regclass('codequarry.schema_version')"))).scalar()
    current = 0
    if exists:
        current = (await conn.execute(text(
            "SELECT version FROM codequarry.schema_version WHERE scope = 'shared'"))).scalar() or 0
    for statements in SHARED_MIGRATIONS[current:]:
        for statement in statements:
            await conn.execute(text(statement))
    if current < SHARED_VERSION:
        await conn.execute(text(
            "INSERT INTO codequarry.schema_version (scope, version) VALUES ('shared', :v) "
            "ON CONFLICT (scope) DO UPDATE SET version = :v, applied_at = now()"), {"v": SHARED_VERSION})


async def migrate_project(conn: AsyncConnection, schema: str, current: int) -> int:
    """Apply the project migrations after `current`; returns the new version."""
    quoted = quote_ident(schema)
    for statements in PROJECT_MIGRATIONS[current:]:
        for statement in statements:
            await conn.execute(text(statement.format(s=quoted)))
    return PROJECT_VERSION


def schema_name(project_id: str) -> str:
    """Project ids are [a-z0-9-]; hyphens become underscores, which ids cannot contain."""
    return "cq_" + project_id.replace("-", "_")


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'
