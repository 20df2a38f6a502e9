"""Walking a repository and reading its files (codequarry.scan) on real files on disk:
stats, skip reasons, symlinks, text normalisation, content hashes, races."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from codequarry.ignore import IgnoreRules
from codequarry.models import FileStat
from codequarry.scan import (
    MAX_LINE_CHARS,
    SECRET_REASON,
    content_hash,
    is_secret_file,
    read_text_file,
    scan_tree,
    stat_file,
)

from .conftest import write_files

MAX_BYTES = 1_000_000


def _scan(root: Path, max_bytes: int = MAX_BYTES) -> dict[str, FileStat]:
    stats = list(scan_tree(root, IgnoreRules(root), max_bytes))
    by_path = {stat.path: stat for stat in stats}
    assert len(by_path) == len(stats), "a path was listed twice"
    return by_path


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


# ------------------------------------------------------------------ scan_tree and stat_file


def test_scan_lists_regular_files_with_size_and_mtime(repo: Path) -> None:
    write_files(repo, {"a.py": "print(1)\n", "pkg/b.py": "x = 22\n", "pkg/deep/c.md": ""})
    os.utime(repo / "a.py", ns=(1_600_000_000_000_000_000, 1_600_000_000_123_456_789))
    stats = _scan(repo)
    assert set(stats) == {"a.py", "pkg/b.py", "pkg/deep/c.md"}
    assert stats["a.py"] == FileStat("a.py", 9, 1_600_000_000_123_456_789, None)
    assert stats["pkg/b.py"].size == 7
    assert stats["pkg/deep/c.md"].size == 0
    assert all(stat.skip_reason is None for stat in stats.values())


def test_binary_extension_is_skipped_from_the_stat_alone(repo: Path) -> None:
    write_files(repo, {"logo.png": "not really an image", "Photo.JPG": "x", "a.py": "x"})
    stats = _scan(repo)
    assert stats["logo.png"].skip_reason == "binary file type"
    assert stats["Photo.JPG"].skip_reason == "binary file type"
    assert stats["a.py"].skip_reason is None


def test_file_above_max_bytes_is_skipped_from_the_stat_alone(repo: Path) -> None:
    write_files(repo, {"big.txt": "x" * 101, "edge.txt": "x" * 100})
    stats = _scan(repo, max_bytes=100)
    assert stats["big.txt"].skip_reason == "larger than max_file_bytes (101 > 100 bytes)"
    assert stats["edge.txt"].skip_reason is None


def test_symlink_to_outside_the_repository_is_listed_with_a_skip_reason(
    repo: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write_files(outside, {"secret.py": "token = 1\n"})
    (repo / "leak.py").symlink_to(outside / "secret.py")
    (repo / "leakdir").symlink_to(outside, target_is_directory=True)
    stats = _scan(repo)
    assert stats["leak.py"].skip_reason == "symlink to outside the repository"
    assert stats["leakdir"].skip_reason == "symlink to outside the repository"
    assert not any(path.startswith("leakdir/") for path in stats)


def test_symlinked_file_inside_the_repository_is_indexed(repo: Path) -> None:
    write_files(repo, {"real/impl.py": "def f():\n    return 1\n"})
    (repo / "alias.py").symlink_to(Path("real") / "impl.py")
    stats = _scan(repo)
    assert stats["alias.py"].skip_reason is None
    assert stats["alias.py"].size == stats["real/impl.py"].size  # the target's size
    source = read_text_file(repo / "alias.py", MAX_BYTES)
    assert source.text == "def f():\n    return 1\n"


def test_symlinked_directory_inside_the_repository_is_not_followed(repo: Path) -> None:
    write_files(repo, {"src/a.py": "x", "src/sub/b.py": "y"})
    (repo / "mirror").symlink_to(repo / "src", target_is_directory=True)
    (repo / "src" / "sub" / "up").symlink_to("..", target_is_directory=True)
    assert set(_scan(repo)) == {"src/a.py", "src/sub/b.py"}


def test_symlink_loops_end_the_scan_as_skipped_entries(repo: Path) -> None:
    write_files(repo, {"a.py": "x"})
    (repo / "self").symlink_to("self")
    (repo / "ping").symlink_to("pong")
    (repo / "pong").symlink_to("ping")
    (repo / "root-link").symlink_to(".", target_is_directory=True)
    stats = _scan(repo)
    assert set(stats) == {"a.py", "self", "ping", "pong"}
    assert {stats[name].skip_reason for name in ("self", "ping", "pong")} == {"broken symlink"}


def test_dangling_symlink_is_listed_as_broken(repo: Path) -> None:
    (repo / "gone.py").symlink_to("nowhere.py")
    assert _scan(repo)["gone.py"].skip_reason == "broken symlink"


def test_stat_file_agrees_with_scan_tree_for_every_kind_of_entry(
    repo: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "outside"
    write_files(outside, {"o.py": "outside\n"})
    write_files(repo, {"plain.py": "plain\n", "dir/inner.py": "inner\n", "img.png": "x",
                       "big.txt": "y" * 50})
    (repo / "out.py").symlink_to(outside / "o.py")
    (repo / "in.py").symlink_to(repo / "dir" / "inner.py")
    (repo / "indir").symlink_to(repo / "dir", target_is_directory=True)
    (repo / "loop").symlink_to("loop")
    (repo / "dangling").symlink_to("missing")
    scanned = _scan(repo, max_bytes=40)
    candidates = [*scanned, "indir", "dir", "missing.py", "dir/missing.py"]
    for rel in candidates:
        assert stat_file(repo, rel, 40) == scanned.get(rel), rel
    assert scanned["in.py"].skip_reason is None
    assert scanned["out.py"].skip_reason == "symlink to outside the repository"
    assert scanned["big.txt"].skip_reason is not None
    assert stat_file(repo, "missing.py", 40) is None


class _VanishingRules(IgnoreRules):
    """Real ignore rules that delete a path when asked about it: a delete racing the scan."""

    def __init__(self, root: Path, victims: dict[str, Path]) -> None:
        super().__init__(root)
        self.victims = victims

    def is_ignored(self, rel_path: str, is_dir: bool = False, parents_checked: bool = False) -> bool:
        victim = self.victims.pop(rel_path, None)
        if victim is not None:
            if victim.is_dir():
                shutil.rmtree(victim)
            else:
                victim.unlink()
        return super().is_ignored(rel_path, is_dir, parents_checked)


def test_directory_vanishing_during_the_scan_does_not_raise(repo: Path) -> None:
    write_files(repo, {"gone/a.py": "x", "gone/deep/b.py": "y", "stay/c.py": "z"})
    rules = _VanishingRules(repo, {"gone": repo / "gone"})
    stats = {stat.path for stat in scan_tree(repo, rules, MAX_BYTES)}
    assert stats == {"stay/c.py"}
    assert rules.victims == {}  # the race really happened


def test_file_deleted_between_listing_and_stat_is_left_out(repo: Path) -> None:
    write_files(repo, {"a.py": "x", "b.py": "y"})
    rules = _VanishingRules(repo, {"a.py": repo / "a.py"})
    assert {stat.path for stat in scan_tree(repo, rules, MAX_BYTES)} == {"b.py"}
    assert rules.victims == {}


# ------------------------------------------------------------------ read_text_file


def test_reads_utf8_text_and_normalises_crlf(tmp_path: Path) -> None:
    path = tmp_path / "win.py"
    path.write_bytes(b"def f():\r\n    return 'caf\xc3\xa9'\r\n")
    source = read_text_file(path, MAX_BYTES)
    assert source.skip_reason is None
    assert source.text == "def f():\n    return 'café'\n"


def test_utf8_byte_order_mark_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "bom.py"
    path.write_bytes(b"\xef\xbb\xbfx = 1\n")
    assert read_text_file(path, MAX_BYTES).text == "x = 1\n"


def test_nul_bytes_mean_binary_content(tmp_path: Path) -> None:
    path = tmp_path / "data.txt"
    path.write_bytes(b"header\x00\x01\x02 payload")
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason == "binary content (NUL byte at offset 6)"
    assert source.content_hash == content_hash(b"header\x00\x01\x02 payload")


def test_non_utf8_text_is_skipped_with_the_offending_byte(tmp_path: Path) -> None:
    path = tmp_path / "latin1.txt"
    path.write_bytes("naïve\n".encode("latin-1"))
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason == "not UTF-8 text (invalid byte at offset 2)"


def test_file_grown_past_max_bytes_is_skipped_when_read(tmp_path: Path) -> None:
    path = tmp_path / "grown.txt"
    path.write_text("z" * 11)
    source = read_text_file(path, 10)
    assert source.text is None
    assert source.skip_reason == "larger than max_file_bytes (10 bytes)"
    path.write_text("z" * 10)
    assert read_text_file(path, 10).text == "z" * 10


def test_line_longer_than_the_limit_means_minified_text(tmp_path: Path) -> None:
    path = tmp_path / "bundle.js"
    path.write_text("var a=1;\n" + "x" * (MAX_LINE_CHARS + 1) + "\n")
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason == f"a line longer than {MAX_LINE_CHARS} characters"
    path.write_text("y" * MAX_LINE_CHARS + "\n" + "z" * MAX_LINE_CHARS + "\n")
    assert read_text_file(path, MAX_BYTES).skip_reason is None


def test_reading_a_vanished_file_raises_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        read_text_file(tmp_path / "gone.py", MAX_BYTES)


def test_content_hash_is_stable_and_changes_with_the_content(tmp_path: Path) -> None:
    path = tmp_path / "a.py"
    path.write_text("x = 1\n")
    first = read_text_file(path, MAX_BYTES).content_hash
    assert read_text_file(path, MAX_BYTES).content_hash == first
    assert first == content_hash(b"x = 1\n")
    assert len(first) == 32
    assert set(first) <= set("0123456789abcdef")
    path.write_text("x = 2\n")
    assert read_text_file(path, MAX_BYTES).content_hash != first
    assert content_hash(b"x = 1\r\n") != content_hash(b"x = 1\n")  # raw bytes are hashed


# ------------------------------------------------------------------ text is text (issue 10)

WIDE = "def wide_marker():\n    return 'ünïcode'\n"


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-le", "utf-16-be", "utf-32", "utf-32-le",
                                      "utf-32-be", "utf-8-sig"])
def test_text_with_a_byte_order_mark_is_decoded(tmp_path: Path, encoding: str) -> None:
    bom = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00",
           "utf-32-be": b"\x00\x00\xfe\xff"}.get(encoding, b"")
    raw = bom + WIDE.encode(encoding)
    path = tmp_path / "wide.py"
    path.write_bytes(raw)
    source = read_text_file(path, MAX_BYTES)
    assert source.skip_reason is None
    assert source.text == WIDE
    assert source.content_hash == content_hash(raw)


def test_utf16_that_does_not_decode_says_so_with_the_offset(tmp_path: Path) -> None:
    path = tmp_path / "broken.py"
    path.write_bytes(b"\xff\xfe" + "ok".encode("utf-16-le") + b"\x00\xd8")  # a lone high surrogate
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason is not None
    assert source.skip_reason.startswith("not UTF-16 text (invalid data at byte offset 6")


def test_a_nul_byte_after_the_sniffed_prefix_is_binary_content_too(tmp_path: Path) -> None:
    path = tmp_path / "late_nul.py"
    data = b"def f():\n    return 1\n" + b"#" * 9000 + b"\x00\n"
    path.write_bytes(data)
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason == f"binary content (NUL byte at offset {len(data) - 2})"


def test_a_nul_character_in_utf16_text_is_binary_content(tmp_path: Path) -> None:
    path = tmp_path / "nul16.txt"
    path.write_bytes("ab\0c".encode("utf-16"))
    source = read_text_file(path, MAX_BYTES)
    assert source.text is None
    assert source.skip_reason == "binary content (NUL character at character 2 of the UTF-16 text)"


def test_cr_only_line_endings_become_lines(tmp_path: Path) -> None:
    raw = b"def old_mac():\r    return 1\r\rx = 2\r\n"
    path = tmp_path / "mac.py"
    path.write_bytes(raw)
    source = read_text_file(path, MAX_BYTES)
    assert source.text == "def old_mac():\n    return 1\n\nx = 2\n"
    assert source.content_hash == content_hash(raw)  # the raw bytes are hashed


# ------------------------------------------------------------------ every kind of directory entry


def test_fifos_sockets_and_links_to_them_are_neither_listed_nor_read(repo: Path) -> None:
    import socket
    import threading

    write_files(repo, {"a.py": "x = 1\n"})
    os.mkfifo(repo / "pipe")
    (repo / "pipe.py").symlink_to(repo / "pipe")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock_path = repo / "s.sock"
    if len(os.fsencode(sock_path)) < 100:
        listener.bind(str(sock_path))
        (repo / "sock.py").symlink_to(sock_path)
    try:
        scanned = _scan(repo)
        assert set(scanned) == {"a.py"}
        for rel in ("pipe", "pipe.py", "s.sock", "sock.py"):
            assert stat_file(repo, rel, MAX_BYTES) is None, rel
        outcome: list[BaseException | None] = []

        def read() -> None:
            try:
                read_text_file(repo / "pipe.py", MAX_BYTES)
                outcome.append(None)
            except BaseException as exc:
                outcome.append(exc)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        reader.join(10)
        assert not reader.is_alive(), "reading a FIFO blocked"
        assert isinstance(outcome[0], FileNotFoundError)
    finally:
        listener.close()


def test_a_symlink_to_a_device_is_outside_the_repository(repo: Path) -> None:
    (repo / "zero.py").symlink_to("/dev/zero")
    assert _scan(repo)["zero.py"].skip_reason == "symlink to outside the repository"
    assert stat_file(repo, "zero.py", MAX_BYTES) == _scan(repo)["zero.py"]


# ------------------------------------------------------------------ secrets


@pytest.mark.parametrize("rel", [".env", ".env.local", "config/.env.production", "certs/server.pem",
                                 "tls.key", "id_rsa", "id_ed25519.pub", "keys/id_ecdsa", "store.p12",
                                 "win.PFX", ".netrc", ".pypirc", ".npmrc", "home/.aws/credentials",
                                 ".docker/config.json", ".git-credentials", "vault.kdbx", ".htpasswd",
                                 "gcloud/application_default_credentials.json"])
def test_key_material_and_credentials_are_secret_files(rel: str) -> None:
    assert is_secret_file(rel)


@pytest.mark.parametrize("rel", [".env.example", ".env.sample", ".env.template", ".envrc", "env.py",
                                 "keyboard.py", "docs/keys.md", "aws/credentials.py", "config.json",
                                 "monkey.pyi"])
def test_ordinary_files_are_not_secret_files(rel: str) -> None:
    assert not is_secret_file(rel)


def test_secret_files_are_listed_as_skipped_unless_index_secrets(repo: Path) -> None:
    write_files(repo, {".env": "API_KEY=s3cr3t\n", ".env.example": "API_KEY=\n", "a.py": "x\n",
                       "deploy/server.pem": "-----BEGIN PRIVATE KEY-----\n"})
    scanned = _scan(repo)
    assert scanned[".env"].skip_reason == SECRET_REASON
    assert scanned["deploy/server.pem"].skip_reason == SECRET_REASON
    assert scanned[".env.example"].skip_reason is None
    assert stat_file(repo, ".env", MAX_BYTES) == scanned[".env"]
    rules = IgnoreRules(repo, index_secrets=True)
    opened = {s.path: s for s in scan_tree(repo, rules, MAX_BYTES)}
    assert opened[".env"].skip_reason is None
    assert stat_file(repo, ".env", MAX_BYTES, rules) == opened[".env"]
