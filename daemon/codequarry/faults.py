"""Is a failure the environment's (retry it) or the content's (record it and move on)?

Environment faults pass: the database restarting or unreachable, a full disk (ours or the
database's), an I/O error, a lock or serialization conflict. Work that failed of one is
retried with backoff until it succeeds. Content faults are final: the database refuses
the text of one file (an encoding it cannot store, a value beyond a limit); retrying
cannot help, so the file is recorded as skipped with the reason. Anything else is a bug.

A leaf module: the database drivers are imported lazily.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

# SQLSTATE classes (https://www.postgresql.org/docs/current/errcodes-appendix.html)
_TRANSIENT_CLASSES = ("08", "53", "57", "58")  # connection, resources (disk full), shutdown, system I/O
_TRANSIENT_STATES = frozenset({"40001", "40P01", "55P03", "55006", "25006"})  # conflicts, locks, read-only
_CONTENT_CLASSES = ("22", "54")  # data exception (bad encoding, NUL), program limit exceeded
# the message prefix of a skip reason recorded because the database refused a file's content
DATABASE_REFUSED = "refused by the database"


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the errors behind it (SQLAlchemy's .orig, __cause__, __context__)."""
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return
        yield seen
        seen = getattr(seen, "orig", None) or seen.__cause__ or seen.__context__


def sqlstate(exc: BaseException) -> str | None:
    """The SQLSTATE of the first database error in `exc`'s chain, if any."""
    for seen in _chain(exc):
        state = getattr(seen, "sqlstate", None) or getattr(seen, "pgcode", None)
        if isinstance(state, str) and len(state) == 5:
            return state
    return None


def is_transient(exc: BaseException) -> bool:
    """A failure of the environment worth retrying: connection lost, server restarting or
    shutting down, disk full (SQLSTATE 53100 or ENOSPC), I/O error, lock or serialization
    conflict, a timeout. A statement's own error is not transient."""
    import asyncpg
    from sqlalchemy.exc import DBAPIError

    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    state = sqlstate(exc)
    if state is not None:
        return state.startswith(_TRANSIENT_CLASSES) or state in _TRANSIENT_STATES
    for seen in _chain(exc):
        if isinstance(seen, asyncpg.PostgresConnectionError | asyncpg.CannotConnectNowError
                      | asyncpg.AdminShutdownError | asyncpg.TooManyConnectionsError
                      | asyncpg.ConnectionDoesNotExistError | TimeoutError | ConnectionError):
            return True
        if isinstance(seen, OSError):  # a socket, or ENOSPC/EIO on our own writes
            return True
        if isinstance(seen, asyncpg.InterfaceError) and "closed" in str(seen):
            return True
    return False


def is_content_fault(exc: BaseException) -> bool:
    """Did the database refuse the data itself (SQLSTATE class 22 or 54)? Final for that
    data: the same content fails the same way every time."""
    state = sqlstate(exc)
    return state is not None and state.startswith(_CONTENT_CLASSES)


def describe_os_error(exc: OSError) -> str:
    return exc.strerror or (os.strerror(exc.errno) if exc.errno else type(exc).__name__)
