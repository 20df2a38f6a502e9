"""Walk a repository and read its files: the filesystem side of change detection.

`scan_tree` lists what should be indexed (with a cheap stat); `stat_file` says the same of
one path; `read_text_file` reads one file and says, in words, why it is skipped (binary,
too big, not text, a secret). The indexer and `verify` both decide through these three,
so they agree on what is indexed and what is skipped.

Every kind of directory entry is decided here once: regular files are listed; a symlink
is followed only to a regular file inside the repository (else listed as skipped: broken,
outside) or to a directory (not listed: indexed where it lives); FIFOs, sockets and
devices, and symlinks to them, are not listed at all, and are never opened.
"""

from __future__ import annotations

import codecs
import fnmatch
import hashlib
import os
import re
import stat as statmod
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from codequarry.faults import describe_os_error
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

# Key material and credentials: skipped (never read) unless [index] index_secrets = true.
# Matched against the file name, lower-cased. `.env.example`/`.sample`/`.template` are
# meant to be shared and stay indexed; so does `.envrc` (direnv's shell code, usually
# committed; secrets it loads live in `.env`).
SECRET_NAMES = (".env", ".env.*", "*.pem", "*.key", "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*",
                "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx", ".netrc", "_netrc", ".pgpass",
                ".pypirc", ".npmrc", ".git-credentials", ".htpasswd", ".dockercfg",
                "application_default_credentials.json", "credentials.db", "access_tokens.db")
SHARED_SECRET_TEMPLATES = (".example", ".sample", ".template")
# Matched against the end of the repo-relative path: cloud tools' credential files.
SECRET_PATHS = (".aws/credentials", ".docker/config.json", ".kube/config", "gcloud/credentials.json",
                ".config/gh/hosts.yml", ".azure/accesstokens.json")
SECRET_REASON = "secret file (index.index_secrets = false)"
# one regex for every name pattern: a scan asks this of every file (24 fnmatch calls each
# were a third of an unchanged re-index's walk)
_SECRET_NAME = re.compile("|".join(fnmatch.translate(pattern) for pattern in SECRET_NAMES))


@dataclass(frozen=True, slots=True)
class SourceText:
    text: str | None  # None when skipped
    content_hash: str
    skip_reason: str | None = None


def content_hash(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def is_secret_file(rel_path: str) -> bool:
    """Does `rel_path` ("/"-separated) name key material or credentials (SECRET_NAMES,
    SECRET_PATHS)? Templates such as `.env.example` do not."""
    lowered = rel_path.lower()
    name = lowered.rsplit("/", 1)[-1]
    if name.startswith(".env") and name.endswith(SHARED_SECRET_TEMPLATES):
        return False
    if _SECRET_NAME.match(name):
        return True
    return lowered.endswith(SECRET_PATHS) and any(
        lowered == path or lowered.endswith("/" + path) for path in SECRET_PATHS)


def stat_file(root: Path, rel_path: str, max_bytes: int,
              rules: IgnoreRules | None = None) -> FileStat | None:
    """Stat one repo file as `scan_tree` would; None if it is gone or is no file that
    `scan_tree` lists (a directory, FIFO, socket, device, or a symlink to one). `rules`
    gives `index_secrets` (default: secrets are skipped). Ignore rules are not applied.
    Raises OSError when the file cannot be looked at (EACCES on a directory above it, EIO):
    that is not a deletion."""
    try:
        return _entry_stat(root, rel_path, os.lstat(root / rel_path), max_bytes, _secrets(rules))
    except (FileNotFoundError, NotADirectoryError):
        return None


def _secrets(rules: IgnoreRules | None) -> bool:
    return rules is not None and rules.index_secrets


def _entry_stat(root: Path, rel: str, info: os.stat_result, max_bytes: int,
                index_secrets: bool) -> FileStat | None:
    """The one decision for every kind of entry, from its lstat (see the module doc)."""
    if statmod.S_ISLNK(info.st_mode):
        reason = _symlink_reason(root, root / rel)
        if reason is not None:
            return _file_stat(rel, info, max_bytes, reason, index_secrets)
        info = os.stat(root / rel)
    if not statmod.S_ISREG(info.st_mode):
        return None  # a directory (or a link to one), FIFO, socket or device
    return _file_stat(rel, info, max_bytes, None, index_secrets)


def _file_stat(rel: str, info: os.stat_result, max_bytes: int, reason: str | None,
               index_secrets: bool) -> FileStat:
    if reason is None and not index_secrets and is_secret_file(rel):
        reason = SECRET_REASON
    if reason is None and info.st_size > max_bytes:
        reason = f"larger than max_file_bytes ({info.st_size} > {max_bytes} bytes)"
    if reason is None and os.path.splitext(rel)[1].lower() in BINARY_EXTENSIONS:
        reason = "binary file type"
    return FileStat(rel, info.st_size, info.st_mtime_ns, reason)


def is_stat_skip(reason: str | None) -> bool:
    """Was `reason` decided from the stat alone (so a changed config can undo it without
    the file changing: index_secrets, max_file_bytes)?"""
    return reason is not None and (reason in _STAT_REASONS or bool(_LARGER_STAT.match(reason)))


_STAT_REASONS = frozenset({SECRET_REASON, "binary file type", "broken symlink",
                           "symlink to outside the repository"})
_LARGER_STAT = re.compile(r"larger than max_file_bytes \(\d+ > \d+ bytes\)$")


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


def scan_tree(root: Path, rules: IgnoreRules, max_bytes: int,
              unlisted: dict[str, str] | None = None) -> Iterator[FileStat]:
    """Every non-ignored regular file under `root`; symlinked directories are not followed.
    A directory or file that exists but cannot be looked at (EACCES, EIO) is not listed;
    its relative path ("" for the root) and the error go to `unlisted`, so that a caller
    never takes what it holds for deleted."""
    pending = [""]
    while pending:
        rel_dir = pending.pop()
        try:
            entries = list(os.scandir(root / rel_dir if rel_dir else root))
        except (FileNotFoundError, NotADirectoryError):
            continue  # vanished meanwhile
        except OSError as exc:
            if unlisted is not None:
                unlisted[rel_dir] = describe_os_error(exc)
            continue
        for entry in entries:
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            try:
                if entry.is_dir(follow_symlinks=False):
                    if not rules.is_ignored(rel, is_dir=True, parents_checked=True):
                        pending.append(rel)
                    continue
                if rules.is_ignored(rel, parents_checked=True):
                    continue
                stat = _entry_stat(root, rel, entry.stat(follow_symlinks=False), max_bytes,
                                   rules.index_secrets)
                if stat is not None:
                    yield stat
            except (FileNotFoundError, NotADirectoryError):
                continue  # raced with a delete
            except OSError as exc:
                if unlisted is not None:
                    unlisted[rel] = describe_os_error(exc)


def hidden_by(path: str, unlisted: Collection[str]) -> bool:
    """Is `path` one of the `unlisted` paths of scan_tree, or under one ("" = the root)?"""
    return any(not where or path == where or path.startswith(where + "/") for where in unlisted)


# Byte order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
_BOMS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32"),
         (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16"),
         (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16"))


def read_text_file(path: Path, max_bytes: int) -> SourceText:
    """Read a file as text or say why not. The one skip rule for content, shared by the
    indexer and `verify`:

    - UTF-8, or UTF-8/UTF-16/UTF-32 with a byte order mark, decoded strictly;
    - no NUL character anywhere (PostgreSQL cannot store one in text);
    - no line over MAX_LINE_CHARS; at most `max_bytes` bytes.

    Line endings (CRLF, lone CR) become LF; `content_hash` is of the raw bytes. Raises
    FileNotFoundError if the file vanished or is no longer a regular file (a FIFO is
    never read: the open does not block), other OSError for a read error.
    """
    descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    with open(descriptor, "rb") as handle:
        if not statmod.S_ISREG(os.fstat(descriptor).st_mode):
            raise FileNotFoundError(f"no longer a regular file: {path}")
        data = handle.read(max_bytes + 1)
    digest = content_hash(data)
    if len(data) > max_bytes:
        return SourceText(None, digest, f"larger than max_file_bytes ({max_bytes} bytes)")
    text, reason = decode_text(data)
    if text is None:
        return SourceText(None, digest, reason)
    if len(text) > MAX_LINE_CHARS and max(map(len, text.splitlines()), default=0) > MAX_LINE_CHARS:
        return SourceText(None, digest, f"a line longer than {MAX_LINE_CHARS} characters")
    return SourceText(text.replace("\r\n", "\n").replace("\r", "\n"), digest)


def decode_text(data: bytes) -> tuple[str | None, str | None]:
    """(text, None) or (None, a reason naming what was detected and where)."""
    for bom, codec, name in _BOMS:
        if data.startswith(bom):
            try:
                text = data[len(bom):].decode(codec)
            except UnicodeDecodeError as exc:
                return None, f"not {name} text (invalid data at byte offset {exc.start + len(bom)})"
            nul = text.find("\0")
            if nul >= 0:
                return None, f"binary content (NUL character at character {nul} of the {name} text)"
            return text, None
    nul = data.find(b"\0")
    if 0 <= nul < SNIFF_BYTES:  # binary files are told apart before a costly decode
        return None, f"binary content (NUL byte at offset {nul})"
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not UTF-8 text (invalid byte at offset {exc.start})"
    if nul >= 0:
        return None, f"binary content (NUL byte at offset {nul})"
    return text, None
