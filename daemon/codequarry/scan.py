"""Walk a repository and read its files: the filesystem side of change detection.

`scan_tree` lists what should be indexed (with a cheap stat); `read_text_file` reads one
file and says, in words, why it is skipped when it is binary, too big or not UTF-8.
"""

from __future__ import annotations

import hashlib
import os
import stat as statmod
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from codequarry.ignore import IgnoreRules
from codequarry.models import FileStat

# Extensions that are never text; skipped without opening the file.
BINARY_EXTENSIONS = frozenset((
    ".png .jpg .jpeg .gif .bmp .ico .webp .tif .tiff .psd .pdf .zip .gz .tgz .bz2 .xz .zst .7z"
    " .rar .jar .war .whl .egg .so .dylib .dll .exe .o .a .lib .obj .class .pyc .pyo .wasm"
    " .mp3 .mp4 .wav .flac .ogg .mov .avi .mkv .webm .ttf .otf .woff .woff2 .eot .sqlite"
    " .db .bin .dat .pkl .npy .npz .onnx .pt .parquet .arrow"
).split())
SNIFF_BYTES = 8192
MAX_LINE_CHARS = 20_000  # longer lines mean minified or generated text


@dataclass(frozen=True, slots=True)
class SourceText:
    text: str | None  # None when skipped
    content_hash: str
    skip_reason: str | None = None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def stat_file(root: Path, rel_path: str, max_bytes: int) -> FileStat | None:
    """Stat one repo file as `scan_tree` would; None if it is gone or not a regular file."""
    path = root / rel_path
    try:
        info = os.lstat(path)
        if statmod.S_ISLNK(info.st_mode):
            reason = _symlink_reason(root, path)
            if reason is not None:
                return _file_stat(rel_path, info, max_bytes, reason)
            info = os.stat(path)
    except OSError:
        return None
    if not statmod.S_ISREG(info.st_mode):
        return None
    return _file_stat(rel_path, info, max_bytes, None)


def _file_stat(rel: str, info: os.stat_result, max_bytes: int, reason: str | None) -> FileStat:
    if reason is None and info.st_size > max_bytes:
        reason = f"larger than max_file_bytes ({info.st_size} > {max_bytes} bytes)"
    if reason is None and os.path.splitext(rel)[1].lower() in BINARY_EXTENSIONS:
        reason = "binary file type"
    return FileStat(rel, info.st_size, info.st_mtime_ns, reason)


def _symlink_reason(root: Path, path: Path) -> str | None:
    if not path.is_symlink():
        return None
    try:
        target = path.resolve(strict=True)
    except (OSError, RuntimeError):
        return "broken symlink"
    if not target.is_relative_to(root.resolve()):
        return "symlink to outside the repository"
    return None


def scan_tree(root: Path, rules: IgnoreRules, max_bytes: int) -> Iterator[FileStat]:
    """Every non-ignored regular file under `root`; symlinked directories are not followed."""
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except OSError:
            continue  # vanished or unreadable directory: the next scan sees it again
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not rules.is_ignored(rel, is_dir=True, parents_checked=True):
                        pending.append(rel)
                    continue
                if rules.is_ignored(rel, parents_checked=True):
                    continue
                if entry.is_symlink():
                    reason = _symlink_reason(root, Path(entry.path))
                    if reason is None and Path(entry.path).is_dir():
                        continue  # a link to a directory inside the repo: indexed where it lives
                    info = os.stat(entry.path) if reason is None else entry.stat(follow_symlinks=False)
                    yield _file_stat(rel, info, max_bytes, reason)
                elif entry.is_file(follow_symlinks=False):
                    yield _file_stat(rel, entry.stat(follow_symlinks=False), max_bytes, None)
            except OSError:
                continue  # raced with a delete


def read_text_file(path: Path, max_bytes: int) -> SourceText:
    """Read a file as UTF-8 text or say why not. Raises FileNotFoundError if it vanished."""
    with open(path, "rb") as handle:
        data = handle.read(max_bytes + 1)
    digest = content_hash(data)
    if len(data) > max_bytes:
        return SourceText(None, digest, f"larger than max_file_bytes ({max_bytes} bytes)")
    if b"\0" in data[:SNIFF_BYTES]:
        return SourceText(None, digest, "binary content")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return SourceText(None, digest, f"not UTF-8 text (byte {exc.start})")
    if len(text) > MAX_LINE_CHARS and max(map(len, text.splitlines()), default=0) > MAX_LINE_CHARS:
        return SourceText(None, digest, f"a line longer than {MAX_LINE_CHARS} characters")
    return SourceText(text.replace("\r\n", "\n"), digest)
