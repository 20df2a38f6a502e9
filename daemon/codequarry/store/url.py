"""The `[database] url`: a libpq-style postgresql:// URL, turned into what SQLAlchemy's
asyncpg dialect takes, and rendered for logs without its password.

libpq and asyncpg name some connection parameters differently; SQLAlchemy hands the URL's
query parameters to `asyncpg.connect()` as keyword arguments, so a libpq name such as
`sslmode` would fail there as an unexpected argument. The names are mapped here (the
accepted set is `config.DATABASE_URL_PARAMETERS`, checked when the config is loaded).

A password may come from the URL, from PGPASSWORD or from ~/.pgpass (asyncpg reads both
when the URL has none); it never appears in anything this module renders.
"""

from __future__ import annotations

from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from codequarry.config import DATABASE_URL_RENAMED, SSL_MODES
from codequarry.errors import StoreUnavailable

MASK = "***"


def parse(url: str) -> URL:
    """The SQLAlchemy URL (driver postgresql+asyncpg) of a postgresql:// or postgres:// URL.

    libpq parameter names become asyncpg's (sslmode -> ssl); a `password` query parameter
    becomes the URL's password. Raises StoreUnavailable (one line, no password) when the
    URL cannot be parsed or has an unknown sslmode.
    """
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        raise StoreUnavailable(f"[database] url is not a postgresql:// URL: {mask_text(url)}") from None
    if not parsed.drivername.startswith(("postgresql", "postgres")):
        raise StoreUnavailable(f"[database] url is not a postgresql:// URL: {mask(url)}")
    query = dict(parsed.query)
    password = query.pop("password", None)
    for libpq_name, asyncpg_name in DATABASE_URL_RENAMED.items():
        if libpq_name in query:
            value = query.pop(libpq_name)
            query.setdefault(asyncpg_name, value)
    ssl = query.get("ssl")
    if ssl is not None and (not isinstance(ssl, str) or ssl not in SSL_MODES):
        raise StoreUnavailable(f"[database] url: sslmode must be one of {', '.join(SSL_MODES)}")
    parsed = parsed.set(drivername="postgresql+asyncpg", query=query)
    if password is not None and parsed.password is None:
        parsed = parsed.set(password=password if isinstance(password, str) else password[0])
    return parsed


def mask(url: str | URL) -> str:
    """The URL with its password (in the authority or the query) replaced by ***."""
    try:
        parsed = url if isinstance(url, URL) else make_url(url)
    except (ArgumentError, ValueError):
        return mask_text(str(url))
    query = dict(parsed.query)
    if "password" in query:
        query["password"] = MASK
        parsed = parsed.set(query=query)
    return parsed.render_as_string(hide_password=True)


def mask_text(text: str, *passwords: str | None) -> str:
    """`text` with every given password (4+ characters) and any user:password@ authority
    masked."""
    for password in passwords:
        if password and len(password) >= 4:  # masking "a" would mangle every message
            text = text.replace(password, MASK)
    # an unparseable URL still must not leak "user:secret@host"
    scheme, sep, rest = text.partition("://")
    if sep and "@" in rest.split("/", 1)[0]:
        authority, _, tail = rest.partition("@")
        if ":" in authority:
            authority = authority.split(":", 1)[0] + ":" + MASK
        text = f"{scheme}{sep}{authority}@{tail}"
    return text


def password_of(url: str) -> str | None:
    """The password written in the URL, if any (for masking error texts)."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return None
    query_password = parsed.query.get("password")
    if isinstance(query_password, tuple):
        query_password = query_password[0] if query_password else None
    return parsed.password or query_password


def describe_target(url: str) -> str:
    """"role@host:port/database" for messages: where the daemon tried to connect."""
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "the database"
    host = parsed.host or str(parsed.query.get("host") or "localhost")
    port = f":{parsed.port}" if parsed.port else ""
    user = f"{parsed.username}@" if parsed.username else ""
    return f"{user}{host}{port}/{parsed.database or ''}"
