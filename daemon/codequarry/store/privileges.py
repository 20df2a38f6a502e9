"""Least privilege on a shared server: say which SQL an admin must run, before failing.

A team server's role is usually not a superuser. codequarry needs, in its database:
the `vector` extension (only a superuser can create it: pgvector is not a trusted
extension), the right to create schemas (the shared `codequarry` schema and one schema
per project), and, when another role created the shared schema, the use of its tables.
`check_database` looks these up in the catalogs (no side effects) and raises one line
naming the SQL, instead of a bare "permission denied" from the middle of a migration.
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from codequarry.errors import StoreUnavailable

SHARED_SCHEMA = "codequarry"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


async def check_database(conn: AsyncConnection) -> None:
    """Raise StoreUnavailable naming the admin SQL when the connected role cannot set up
    or use codequarry in this database; return quietly when it can.

    Checked, in order: pgvector installed or installable by this role; CREATE on the
    database; USAGE on the shared schema and SELECT/INSERT/UPDATE/DELETE on its tables
    when the schema exists already.
    """
    row = (await conn.execute(text(
        "SELECT current_user AS role, current_database() AS database, "
        "  (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) AS superuser, "
        "  (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS installed, "
        "  (SELECT bool_or(trusted) FROM pg_available_extension_versions WHERE name = 'vector') "
        "    AS trusted, "
        "  EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'vector') AS available, "
        "  has_database_privilege(current_database(), 'CREATE') AS can_create, "
        "  to_regnamespace(:schema) IS NOT NULL AS schema_exists"),
        {"schema": SHARED_SCHEMA})).mappings().one()
    role, database = _ident(row["role"]), _ident(row["database"])
    where = f"database {row['database']!r} as role {row['role']!r}"
    if row["installed"] is None:
        if not row["available"]:
            raise StoreUnavailable(
                f"pgvector is not installed on the server of {where}: install pgvector (0.6 or "
                f"newer) on the server, then run as a superuser in that database: CREATE EXTENSION vector;")
        if not (row["superuser"] or (row["trusted"] and row["can_create"])):
            raise StoreUnavailable(
                f"the vector extension is not installed in {where}, and this role may not create it; "
                f"an admin must run, connected to that database as a superuser: CREATE EXTENSION vector;")
    if not row["can_create"]:
        raise StoreUnavailable(
            f"role {row['role']!r} may not create schemas in database {row['database']!r} "
            f"(codequarry keeps each project in its own schema); an admin must run: "
            f"GRANT CREATE ON DATABASE {database} TO {role};")
    if row["schema_exists"]:
        await _check_shared_schema(conn, row["role"], row["database"])


async def _check_shared_schema(conn: AsyncConnection, role_name: str, database_name: str) -> None:
    role = _ident(role_name)
    missing = (await conn.execute(text(
        "SELECT NOT has_schema_privilege(:schema, 'USAGE') AS no_usage, "
        "  coalesce((SELECT bool_or(NOT has_table_privilege(c.oid, 'SELECT, INSERT, UPDATE, DELETE')) "
        "   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "   WHERE n.nspname = :schema AND c.relkind = 'r'), false) AS no_tables"),
        {"schema": SHARED_SCHEMA})).mappings().one()
    if missing["no_usage"] or missing["no_tables"]:
        schema = _ident(SHARED_SCHEMA)
        raise StoreUnavailable(
            f"role {role_name!r} cannot use the shared schema {SHARED_SCHEMA!r} in database "
            f"{database_name!r} (another role created it); its owner or an admin must run: "
            f"GRANT USAGE ON SCHEMA {schema} TO {role}; "
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {schema} TO {role}; "
            f"GRANT USAGE ON ALL SEQUENCES IN SCHEMA {schema} TO {role};")
