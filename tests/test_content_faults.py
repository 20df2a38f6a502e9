"""Issue 10, behaviours 4-9: what gets indexed, what is skipped and why, on real files and a
real PostgreSQL. One bad file never takes its batch-mates with it; text in any Unicode
encoding with a BOM is text; git's own files, FIFOs and secrets are never read; skipped
files are visible in status; and `verify` agrees with all of it."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest

import codequarry.indexer
from codequarry.api import project_state
from codequarry.config import ProjectConfig, Settings, load_settings
from codequarry.console import print_status
from codequarry.errors import CodequarryError
from codequarry.models import ChangeKind
from codequarry.oneshot import _index as oneshot_index
from codequarry.runtime import Runtime, open_runtime, status_report
from codequarry.scan import SECRET_REASON, SourceText, content_hash
from codequarry.search import SearchRequest
from codequarry.verify import check_project

from .conftest import write_files
from .fakes import HashEmbedder
from .test_indexer import index

GOOD = {f"good{i}.py": f"def innocent_{i}():\n    return {i}\n" for i in range(1, 13)}
LATE_NUL = b"def f():\n    return 1\n" + b"#" * 9000 + b"\x00\n"


async def verify_in(runtime: Runtime, config: ProjectConfig) -> list[str]:
    """`codequarry verify` on an open runtime: the index's differences from the tree."""
    return await check_project(runtime.settings, config, runtime.store, runtime.indexer.chunker)


def project_settings(make_settings: Any, repo: Path, **index: Any) -> Settings:
    settings: Settings = make_settings([{"id": "demo", "path": str(repo)}],
                                       **({"index": index} if index else {}))
    return settings


async def lexical_paths(runtime: Runtime, query: str) -> list[str]:
    response = await runtime.searcher.search(SearchRequest(query, ("demo",), "lexical"),
                                             runtime.indexer.model_id)
    return [hit.path for hit in response.results]


# ---- 4. one bad file never takes others with it ---------------------------------------------


async def test_a_late_nul_byte_skips_only_that_file(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = write_files(tmp_path / "repo", GOOD)
    (repo / "late_nul.py").write_bytes(LATE_NUL)
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        files = await project.store.indexed_files()
        assert sorted(p for p, f in files.items() if f.skip_reason is None) == sorted(GOOD)
        assert files["late_nul.py"].skip_reason == f"binary content (NUL byte at offset {len(LATE_NUL) - 2})"
        for i in (1, 7, 12):
            assert (await lexical_paths(runtime, f"innocent_{i}"))[0] == f"good{i}.py"
        assert await verify_in(runtime, settings.config.project("demo")) == []


async def test_content_the_database_refuses_is_retried_file_by_file_and_skipped(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader that lets a NUL through (as any content PostgreSQL refuses would get past
    it): the batch fails in PostgreSQL, its 12 other files land, the one is skipped."""
    repo = write_files(tmp_path / "repo", GOOD)
    (repo / "late_nul.py").write_bytes(LATE_NUL)
    real_reader = codequarry.indexer.read_text_file

    def lenient_reader(path: Path, max_bytes: int) -> SourceText:
        if path.name == "late_nul.py":
            data = path.read_bytes()
            return SourceText(data.decode(), content_hash(data))
        return real_reader(path, max_bytes)

    monkeypatch.setattr(codequarry.indexer, "read_text_file", lenient_reader)
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        files = await project.store.indexed_files()
        assert sorted(p for p, f in files.items() if f.skip_reason is None) == sorted(GOOD)
        reason = files["late_nul.py"].skip_reason
        assert reason is not None
        assert reason.startswith("refused by the database: ")
        assert "0x00" in reason
        assert files["late_nul.py"].content_hash == content_hash(LATE_NUL)
        assert (await project.store.counts()).recent_errors == []
        assert await verify_in(runtime, settings.config.project("demo")) == []


def nul_files_read_leniently(tmp_path: Path, count: int, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A repo of `count` files with a late NUL, read without the NUL check, so that every
    one of them fails later, when it is written (a bug path, not the file's fault)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(count):
        (repo / f"nul{i}.py").write_bytes(LATE_NUL)

    def lenient_reader(path: Path, max_bytes: int) -> SourceText:
        data = path.read_bytes()
        return SourceText(data.decode(), content_hash(data))

    monkeypatch.setattr(codequarry.indexer, "read_text_file", lenient_reader)
    return repo


async def test_a_batch_whose_every_file_fails_alone_skips_nothing(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The same refusal for every file is no one file's fault (a bug, say): nothing is
    recorded as skipped, the error is on each file's change event, visible in status."""
    repo = nul_files_read_leniently(tmp_path, 3, monkeypatch)
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        assert await project.store.indexed_files() == {}
        errors = (await project.store.counts()).recent_errors
        assert sorted(e.split(":")[0] for e in errors) == ["nul0.py", "nul1.py", "nul2.py"]
        assert all("0x00" in e for e in errors)
        entry = (await status_report(settings, runtime.store, runtime.indexer))["projects"][0]
        assert [f["path"] for f in entry["failed"]] == ["nul0.py", "nul1.py", "nul2.py"]
        assert entry["errors"][0].startswith("failed: 3 files could not be indexed (a bug, please report "
                                             "it): nul0.py (")
        assert project_state(entry) == "error"  # never "complete": the daemon's index fails too


async def test_files_whose_writing_fails_on_a_bug_path_fail_index_naming_them(
        make_settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that fails alone, not of its content (file_failed: recorded on its change
    event), used to let a one-shot `codequarry index` exit 0; it fails naming the files."""
    repo = nul_files_read_leniently(tmp_path, 2, monkeypatch)
    settings = project_settings(make_settings, repo)
    with pytest.raises(CodequarryError, match=r"^2 files could not be indexed \(nul0\.py: .*0x00.*; "
                                              r"nul1\.py: .*; a bug, please report it\); run index again$"):
        await oneshot_index(settings, settings.config.project("demo"), HashEmbedder())


# ---- 6. text is text ---------------------------------------------------------------------------


async def test_utf16_and_utf32_sources_with_a_bom_are_searchable(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    encodings = {"le16.py": "utf-16-le", "be16.py": "utf-16-be", "le32.py": "utf-32-le",
                 "be32.py": "utf-32-be", "bom8.py": "utf-8-sig"}
    boms = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00",
            "utf-32-be": b"\x00\x00\xfe\xff", "utf-8-sig": b""}
    markers = {"le16.py": "quokka", "be16.py": "narwhal", "le32.py": "axolotl", "be32.py": "pangolin",
               "bom8.py": "wombat"}
    for name, encoding in encodings.items():
        marker = markers[name]
        (repo / name).write_bytes(boms[encoding] + f"def {marker}():\n    return 1\n".encode(encoding))
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        files = await project.store.indexed_files()
        assert {p: f.skip_reason for p, f in files.items()} == dict.fromkeys(encodings)
        for name in encodings:
            assert await lexical_paths(runtime, markers[name]) == [name]
            assert await project.store.file_chunks(name) != []
        assert await verify_in(runtime, settings.config.project("demo")) == []


async def test_cr_only_line_endings_give_true_line_spans(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    lines = ["import os", "", "", "def old_mac_function(a, b):", "    return a + b", "", "",
             "class Classic:", "    def method(self):", "        return os.sep"]
    (repo / "mac.py").write_bytes("\r".join(lines).encode() + b"\r")
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        chunks = await project.store.file_chunks("mac.py")
        assert chunks, "the CR-only file was not chunked"
        assert max(end for _, _, end, _ in chunks) == len(lines)
        assert min(start for _, start, _, _ in chunks) == 1
        hits = await runtime.searcher.search(SearchRequest("old_mac_function", ("demo",), "lexical"),
                                             runtime.indexer.model_id)
        assert hits.results[0].start_line <= 4
        assert hits.results[0].end_line >= 5
        assert await verify_in(runtime, settings.config.project("demo")) == []


# ---- 7. the tree is what git would track ---------------------------------------------------------


async def test_git_files_of_a_worktree_and_a_submodule_are_not_indexed(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = write_files(tmp_path / "wt", {
        ".git": "gitdir: /src/main/.git/worktrees/wt\n",
        "lib/.git": "gitdir: ../.git/modules/lib\n",
        "lib/code.py": "def in_submodule():\n    return 1\n",
        "main.py": "def in_worktree():\n    return 2\n",
    })
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        assert set(await project.store.indexed_files()) == {"lib/code.py", "main.py"}
        assert await lexical_paths(runtime, "gitdir") == []
        # a live event for the .git file (the watcher's path into the indexer) changes nothing
        await runtime.indexer.notify("demo", [(".git", ChangeKind.MODIFIED),
                                              ("lib/.git", ChangeKind.CREATED)])
        with anyio.fail_after(60):
            await index(runtime, "demo")
        assert set(await project.store.indexed_files()) == {"lib/code.py", "main.py"}
        assert await verify_in(runtime, settings.config.project("demo")) == []


async def test_a_fifo_and_a_symlink_to_it_never_block_the_indexer(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = write_files(tmp_path / "repo", {"a.py": "def alpha():\n    return 1\n"})
    os.mkfifo(repo / "pipe")
    (repo / "pipe.py").symlink_to("pipe")
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
            # the watcher reports them too (a FIFO created, a link changed): still never opened
            await runtime.indexer.notify("demo", [("pipe", ChangeKind.CREATED),
                                                  ("pipe.py", ChangeKind.MODIFIED)])
            await index(runtime, "demo")
        assert set(await project.store.indexed_files()) == {"a.py"}
        assert await verify_in(runtime, settings.config.project("demo")) == []


# ---- 8. skipped files are visible ------------------------------------------------------------------


async def test_status_names_each_skipped_file_with_its_reason(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder,
        capsys: pytest.CaptureFixture[str]) -> None:
    repo = write_files(tmp_path / "repo", {"plain.py": "def plain():\n    return 1\n",
                                           ".env": "TOKEN=abc\n"})
    (repo / "blob.py").write_bytes(b"\x00\x01\x02" * 100)
    (repo / "latin.txt").write_bytes("naïve\n".encode("latin-1"))
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        report = await status_report(settings, runtime.store, runtime.indexer)
    (entry,) = report["projects"]
    assert entry["skipped_files"] == 3
    assert entry["skipped"] == [
        {"path": ".env", "reason": SECRET_REASON},
        {"path": "blob.py", "reason": "binary content (NUL byte at offset 0)"},
        {"path": "latin.txt", "reason": "not UTF-8 text (invalid byte at offset 2)"},
    ]
    print_status(report)
    out = capsys.readouterr().out
    assert "demo: 3 skipped files" in out
    assert "blob.py: binary content (NUL byte at offset 0)" in out


async def test_status_lists_at_most_200_skipped_files_and_counts_all(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder,
        capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "repo"
    repo.mkdir()
    for i in range(205):
        (repo / f"b{i:03}.py").write_bytes(b"\x00")
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        report = await status_report(settings, runtime.store, runtime.indexer)
    (entry,) = report["projects"]
    assert entry["skipped_files"] == 205
    assert [s["path"] for s in entry["skipped"]] == [f"b{i:03}.py" for i in range(200)]
    print_status(report)
    assert "... and 195 more; list them with: codequarry status --project demo --json" in (
        capsys.readouterr().out)


def test_status_names_ten_unreadable_files_and_counts_the_rest(capsys: pytest.CaptureFixture[str]) -> None:
    unreadable = [{"path": f"u{i:02}.py", "error": "Permission denied"} for i in range(12)]
    report = {"daemon": {"running": True, "pid": 1}, "data_dir": "d", "config": "c", "projects": [{
        "project": "demo", "state": "watching", "files": 12, "skipped_files": 0, "chunks": 0,
        "vector_coverage": 1.0, "pending_files": 12, "last_event_at": None, "index_lag_seconds": 0.0,
        "errors": [], "unreadable_files": 12, "unreadable": unreadable, "failed": []}]}
    print_status(report)
    out = capsys.readouterr().out
    assert "demo: 12 files cannot be read (retried in the background):" in out
    assert "u09.py: Permission denied" in out
    assert "u10.py" not in out
    assert "... and 2 more; list them with: codequarry status --project demo --json" in out


# ---- 9. secure defaults -----------------------------------------------------------------------------

SECRETS = {".env": "API_TOKEN=topsecretvalue\n", "deploy/server.key": "topsecretvalue key\n",
           "home/.aws/credentials": "[default]\naws_secret_access_key = topsecretvalue\n",
           ".env.example": "API_TOKEN=placeholdervalue\n", "app.py": "def app():\n    return 1\n"}


@pytest.mark.parametrize("index_secrets", [False, True])
async def test_secrets_are_skipped_unless_the_config_says_index_them(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder, index_secrets: bool) -> None:
    repo = write_files(tmp_path / "repo", SECRETS)
    settings = project_settings(make_settings, repo, index_secrets=index_secrets)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        files = await project.store.indexed_files()
        secret_paths = [".env", "deploy/server.key", "home/.aws/credentials"]
        expected = None if index_secrets else SECRET_REASON
        assert {p: files[p].skip_reason for p in secret_paths} == dict.fromkeys(secret_paths, expected)
        assert files[".env.example"].skip_reason is None
        hits = await lexical_paths(runtime, "topsecretvalue")
        assert sorted(hits) == (sorted(secret_paths) if index_secrets else [])
        assert await lexical_paths(runtime, "placeholdervalue") == [".env.example"]
        if not index_secrets:  # never read: not even a content hash is kept
            assert all(files[p].content_hash == "" for p in secret_paths)
        assert await verify_in(runtime, settings.config.project("demo")) == []


async def test_turning_index_secrets_on_indexes_them_on_the_next_scan(
        make_settings: Any, tmp_path: Path, hash_embedder: HashEmbedder) -> None:
    repo = write_files(tmp_path / "repo", SECRETS)
    settings = project_settings(make_settings, repo)
    async with open_runtime(settings, hash_embedder) as runtime:
        await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
    settings = project_settings(make_settings, repo, index_secrets=True)
    async with open_runtime(settings, hash_embedder) as runtime:
        project = await runtime.indexer.add_project(settings.config.project("demo"))
        with anyio.fail_after(60):
            await index(runtime, "demo")
        assert (await project.store.indexed_files())[".env"].skip_reason is None
        assert await verify_in(runtime, settings.config.project("demo")) == []


def test_the_data_dir_and_the_runtime_dirs_are_private(
        tmp_path: Path, runtime_dir: Path) -> None:
    from codequarry.service import prepare_socket_path

    data = tmp_path / "deep" / "data"
    config = tmp_path / "config.toml"
    config.write_text(f'data_dir = "{data}"\n[database]\nurl = "postgresql://x@/y"\n')
    settings = load_settings(config)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    socket_dir = settings.socket_path.parent
    prepare_socket_path(settings.socket_path)  # what the daemon does before it listens
    below = socket_dir.relative_to(runtime_dir).parts
    assert below  # $XDG_RUNTIME_DIR/codequarry/<hash of the data dir>
    for depth in range(1, len(below) + 1):
        path = runtime_dir.joinpath(*below[:depth])
        assert stat.S_IMODE(path.stat().st_mode) == 0o700, path
    data.chmod(0o755)  # an existing, too open data dir is tightened
    load_settings(config)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
