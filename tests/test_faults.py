"""codequarry.faults: which failures are the environment's (retried until they pass) and
which are one file's content (final). The real cases run end to end in test_disk_full.py
and test_content_faults.py; these name every class the indexer relies on."""

from __future__ import annotations

import errno

import asyncpg
import pytest

from codequarry.faults import is_content_fault, is_transient, sqlstate


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.DiskFullError("could not extend file \"base/5/1\": No space left on device"),
    asyncpg.exceptions.OutOfMemoryError("out of memory"),
    asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
    asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
    asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed"),
    asyncpg.exceptions.SerializationError("could not serialize access"),
    asyncpg.exceptions.DeadlockDetectedError("deadlock detected"),
    asyncpg.exceptions.PostgresIOError("could not read block"),
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EIO, "Input/output error"),
    ConnectionResetError(errno.ECONNRESET, "reset"),
    TimeoutError(),
])
def test_environment_faults_are_transient_and_not_content(exc: BaseException) -> None:
    assert is_transient(exc)
    assert not is_content_fault(exc)


@pytest.mark.parametrize("exc", [
    asyncpg.exceptions.CharacterNotInRepertoireError("invalid byte sequence for encoding UTF8: 0x00"),
    asyncpg.exceptions.UntranslatableCharacterError("unsupported Unicode escape sequence"),
    asyncpg.exceptions.ProgramLimitExceededError("string is too long for tsvector"),
])
def test_refused_content_is_final(exc: BaseException) -> None:
    assert is_content_fault(exc)
    assert not is_transient(exc)


def test_a_statement_error_is_neither() -> None:
    exc = asyncpg.exceptions.UndefinedTableError("relation does not exist")
    assert not is_transient(exc)
    assert not is_content_fault(exc)


def test_the_sqlstate_is_found_behind_wrappers() -> None:
    outer = RuntimeError("while writing a batch")
    outer.__cause__ = asyncpg.exceptions.DiskFullError("no space")
    assert sqlstate(outer) == "53100"
    assert is_transient(outer)
