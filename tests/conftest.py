"""Shared fixtures: one real embedded PostgreSQL (pgvector) per test run, a fresh
database per test, an isolated HOME/XDG environment, and settings built from a real
config file on disk.

The server is started from a plain synchronous session fixture; async engines are made
per test, so no event loop outlives its test (see design.md on "different loop" errors).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import tomlkit

from codequarry.config import Settings, load_settings
from codequarry.store.embedded import EmbeddedPostgres

from .fakes import HashEmbedder


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The embedded PostgreSQL 18 + pgvector server shared by the whole run."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("pg") / "pgdata")
    server.start()
    yield server
    server.stop()


@pytest.fixture
def database_url(postgres: EmbeddedPostgres) -> Iterator[str]:
    """A new, empty database for one test: its own shared schema and embedding cache."""
    name = "t_" + uuid.uuid4().hex[:12]
    postgres.psql(f"CREATE DATABASE {name}")
    yield postgres.url(name)
    postgres.psql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(autouse=True)
def isolated_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No test reads or writes the real user's config, data or runtime directories."""
    home = tmp_path / "home"
    home.mkdir()
    for key in ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG", "XDG_CONFIG_HOME", "XDG_DATA_HOME",
                "XDG_RUNTIME_DIR", "NOTIFY_SOCKET"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(home))
    yield
    structlog.reset_defaults()


@pytest.fixture
def make_settings(tmp_path: Path, database_url: str) -> Callable[..., Settings]:
    """Write a config file for this test (database = the test's database) and load it."""

    def build(projects: list[dict[str, Any]] | None = None, **sections: dict[str, Any]) -> Settings:
        document: dict[str, Any] = {"data_dir": str(tmp_path / "data"),
                                    "database": {"url": database_url}}
        document.update(sections)
        if projects:
            document["projects"] = projects
        path = tmp_path / "config.toml"
        path.write_text(tomlkit.dumps(document))
        return load_settings(path)

    return build


@pytest.fixture
def hash_embedder() -> HashEmbedder:
    return HashEmbedder()


def write_files(root: Path, files: dict[str, str]) -> Path:
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    return root


os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
