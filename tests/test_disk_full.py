"""Issue 10, behaviour 5: nothing transient is permanent. The database's disk fills up for
real (an embedded PostgreSQL on a small tmpfs, filled to the brim); edits made meanwhile
are indexed once space is freed, by the same running daemon, without a restart.

Mounting a tmpfs needs root (CI runs as root); elsewhere the test skips and says why.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import anyio
import pytest
import tomlkit

from codequarry.config import ProjectConfig, load_settings
from codequarry.runtime import Runtime
from codequarry.search import SearchRequest
from codequarry.store.embedded import EmbeddedPostgres
from codequarry.verify import check_project

from .conftest import running_daemon, until, write_files
from .fakes import HashEmbedder

TMPFS_MB = 96  # initdb's 40 MB, the current WAL segment, a small index, and room to fill


async def verify_in(runtime: Runtime, config: ProjectConfig) -> list[str]:
    """`codequarry verify` on an open runtime: the index's differences from the tree."""
    return await check_project(runtime.settings, config, runtime.store, runtime.indexer.chunker)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A TMPFS_MB tmpfs mounted for this test (unmounted after it)."""
    mount_point = Path("/tmp") / f"cq-diskfull-{uuid.uuid4().hex[:8]}"
    mount_point.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m,mode=0755", "tmpfs",
                             str(mount_point)], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        mount_point.rmdir()
        pytest.skip(f"cannot mount a tmpfs (needs root): {result.stderr.strip() or result.returncode}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)
        shutil.rmtree(mount_point, ignore_errors=True)


def fill(disk: Path) -> Path:
    """Write one file until the disk has no byte left; returns it."""
    filler = disk / "filler"
    descriptor = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        for size in (1 << 20, 1 << 12, 1):
            try:
                while True:
                    os.write(descriptor, b"\xff" * size)
            except OSError as exc:
                if exc.errno != errno.ENOSPC:
                    raise
    finally:
        os.close(descriptor)
    return filler


def module(word: str, functions: int) -> str:
    return "".join(f"def {word}_{i}(value):\n    \"\"\"{word} number {i}.\"\"\"\n"
                   f"    return value * {i} + len('{word}')\n\n\n" for i in range(functions))


async def test_edits_made_while_the_database_disk_is_full_are_indexed_once_it_is_freed(
        small_disk: Path, tmp_path: Path, runtime_dir: Path, hash_embedder: HashEmbedder) -> None:
    server = EmbeddedPostgres(small_disk / "pg" / "pgdata")
    await anyio.to_thread.run_sync(server.start, 16)
    try:
        repo = write_files(tmp_path / "repo", {"base.py": module("baseline", 20)})
        config = tmp_path / "config.toml"
        config.write_text(tomlkit.dumps({"data_dir": str(tmp_path / "data"),
                                         "database": {"url": server.url()},
                                         "projects": [{"id": "demo", "path": str(repo)}]}))
        settings = load_settings(config)
        async with running_daemon(settings, hash_embedder) as daemon:
            assert daemon.runtime is not None
            runtime = daemon.runtime
            indexer = runtime.indexer

            async def settled() -> bool:
                return ("demo" in indexer.projects and indexer.idle() and indexer.embedding_settled()
                        and not indexer.scanning("demo"))

            await until(settled, 60, "the first index")
            store = indexer.projects["demo"].store
            filler = await anyio.to_thread.run_sync(fill, small_disk)
            log = small_disk / "pg" / "pgdata" / "log"
            log_before = log.read_text(errors="replace") if log.exists() else ""

            # edits while full: big enough that the chunks table must grow
            (repo / "grown.py").write_text(module("quokkafull", 400))
            (repo / "base.py").write_text(module("baseline", 20) + module("narwhalfull", 50))

            async def refused() -> bool:
                text = log.read_text(errors="replace") if log.exists() else ""
                return "No space left on device" in text[len(log_before):]

            await until(refused, 60, "PostgreSQL to refuse a write for lack of space")
            assert "grown.py" not in await store.indexed_files()

            filler.unlink()  # space is back: the same daemon catches up on its own

            async def caught_up() -> bool:
                files = await store.indexed_files()
                return ("grown.py" in files and files["grown.py"].skip_reason is None
                        and await settled()
                        and await verify_in(runtime, settings.config.project("demo")) == [])

            await until(caught_up, 90, "the edits made while the disk was full to be indexed")
            for word in ("quokkafull_399", "narwhalfull_49"):
                response = await runtime.searcher.search(
                    SearchRequest(word, ("demo",), "lexical"), indexer.model_id)
                assert response.results, word
            counts = await store.counts()
            assert counts.skipped_files == 0
            assert counts.recent_errors == []
    finally:
        await anyio.to_thread.run_sync(server.stop)
