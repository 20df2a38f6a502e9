"""Which paths of a repository are indexed: git's ignore rules plus ours.

Precedence, highest first (the first rule set that matches a path decides, as in git):
config excludes, `.codequarryignore` files, `.gitignore` files (deeper directories
before their parents), `.git/info/exclude`, built-in defaults. Config includes, when
given, restrict indexing to files that match one of them.

Above all of these: git's own files are never indexed, whatever a negation says. That is
every path with a `.git` component, a directory (a repository's internals) or a file (the
`gitdir: ...` pointer of a worktree or a submodule).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pathspec

IGNORE_FILES = (".gitignore", ".codequarryignore")
# Built-in defaults, checked by name (a pathspec match per file would double the scan time)
DEFAULT_EXCLUDED_DIRS = frozenset({".git", ".hg", ".svn", ".jj", "__pycache__", "node_modules",
                                   ".mypy_cache", ".pytest_cache", ".ruff_cache", ".tox"})
DEFAULT_EXCLUDED_SUFFIXES = (".pyc",)


def is_git_internal(rel_path: str) -> bool:
    """Is `rel_path` (repo-relative, "/"-separated) `.git` or inside one, at any depth?"""
    return rel_path == ".git" or rel_path.startswith(".git/") or "/.git/" in rel_path \
        or rel_path.endswith("/.git")


def _default_excluded(rel_path: str, is_dir: bool) -> bool:
    name = rel_path.rsplit("/", 1)[-1]
    return name in DEFAULT_EXCLUDED_DIRS if is_dir else name.endswith(DEFAULT_EXCLUDED_SUFFIXES)


def _spec(lines: Sequence[str]) -> pathspec.GitIgnoreSpec | None:
    spec = pathspec.GitIgnoreSpec.from_lines(lines)
    # comments and blank lines are patterns that decide nothing (git init's info/exclude
    # is all comments): no spec, so no pathspec call per file
    return spec if any(p.include is not None for p in spec.patterns) else None


def _read_spec(path: Path) -> pathspec.GitIgnoreSpec | None:
    try:
        return _spec(path.read_text(encoding="utf-8", errors="replace").splitlines())
    except OSError:
        return None


def info_exclude_path(root: Path) -> Path:
    """The `info/exclude` git reads for the work tree at `root`: under `.git/`, or, when
    `.git` is a file (`gitdir: ...` of a worktree or submodule), under the repository it
    points to (a worktree's shared "commondir")."""
    dot_git = root / ".git"
    try:
        if not dot_git.is_file():
            return dot_git / "info" / "exclude"
        pointer = dot_git.read_text(encoding="utf-8", errors="replace").strip()
        if not pointer.startswith("gitdir:"):
            return dot_git / "info" / "exclude"
        gitdir = (root / pointer[len("gitdir:"):].strip()).resolve()
        common = gitdir / "commondir"
        if common.is_file():
            gitdir = (gitdir / common.read_text(encoding="utf-8", errors="replace").strip()).resolve()
        return gitdir / "info" / "exclude"
    except OSError:
        return dot_git / "info" / "exclude"


class IgnoreRules:
    """Answers "is this repo-relative path ignored?"; ignore files are read once per directory.

    Call `forget(dir)` (or make a new instance) when an ignore file changes.
    `index_secrets` is [index] index_secrets: False skips key material and credentials
    (decided in codequarry.scan, which lists them as skipped).
    """

    def __init__(
        self, root: Path, excludes: Sequence[str] = (), includes: Sequence[str] = (),
        index_secrets: bool = False,
    ) -> None:
        self.root = root
        self.index_secrets = index_secrets
        self._excludes = _spec(excludes)
        self._includes = _spec(includes)
        self._info_exclude = _read_spec(info_exclude_path(root))
        self._per_dir: dict[str, tuple[pathspec.GitIgnoreSpec | None, ...]] = {}
        # rel_dir -> the ignore files that apply to its entries (see _chain)
        self._chains: dict[str, tuple[tuple[int, pathspec.GitIgnoreSpec], ...]] = {}
        self._dirs: dict[str, bool] = {}  # rel_dir -> ignored

    def forget(self, rel_dir: str = "") -> None:
        """Drop cached ignore files of `rel_dir` ("" for all)."""
        if rel_dir:
            self._per_dir.pop(rel_dir, None)
        else:
            self._per_dir.clear()
            self._info_exclude = _read_spec(info_exclude_path(self.root))
        self._chains.clear()
        self._dirs.clear()  # a changed ignore file can change every directory below it

    def _dir_specs(self, rel_dir: str) -> tuple[pathspec.GitIgnoreSpec | None, ...]:
        specs = self._per_dir.get(rel_dir)
        if specs is None:
            directory = self.root / rel_dir if rel_dir else self.root
            specs = tuple(_read_spec(directory / name) for name in IGNORE_FILES)
            self._per_dir[rel_dir] = specs
        return specs

    def is_ignored(self, rel_path: str, is_dir: bool = False, parents_checked: bool = False) -> bool:
        """`rel_path` uses "/" separators and is relative to the repo root. As in git, a
        path inside an ignored directory stays ignored whatever a negation says."""
        if is_git_internal(rel_path):
            return True
        if not parents_checked:  # a walk that only descends into kept directories skips this
            parts = rel_path.split("/")
            for depth in range(1, len(parts)):
                if self._dir_ignored("/".join(parts[:depth])):
                    return True
        if self._ignored_by_rules(rel_path, is_dir):
            return True
        if self._includes is not None and not is_dir:
            return not self._includes.match_file(rel_path)
        return False

    def _dir_ignored(self, rel_dir: str) -> bool:
        ignored = self._dirs.get(rel_dir)
        if ignored is None:
            ignored = self._dirs[rel_dir] = self._ignored_by_rules(rel_dir, True)
        return ignored

    def _ignored_by_rules(self, rel_path: str, is_dir: bool) -> bool:
        probe = rel_path + "/" if is_dir else rel_path
        if self._excludes is not None:
            result = self._excludes.check_file(probe).include
            if result is not None:
                return result
        decided = self._check_ignore_files(rel_path, probe)
        if decided is not None:
            return decided
        if self._info_exclude is not None:
            result = self._info_exclude.check_file(probe).include
            if result is not None:
                return result
        return _default_excluded(rel_path, is_dir)

    def _check_ignore_files(self, rel_path: str, probe: str) -> bool | None:
        for offset, spec in self._chain(rel_path.rpartition("/")[0]):
            result = spec.check_file(probe[offset:]).include
            if result is not None:
                return result
        return None

    def _chain(self, rel_dir: str) -> tuple[tuple[int, pathspec.GitIgnoreSpec], ...]:
        """The ignore files that apply to the entries of `rel_dir`, deepest directory first
        (its rules override its parents'), ours before git's, each with the length of its
        directory's prefix to strip. Computed once per directory, not per file: in a tree
        without ignore files a file costs no pathspec call at all."""
        chain = self._chains.get(rel_dir)
        if chain is None:
            gitignore, ours = self._dir_specs(rel_dir)
            offset = len(rel_dir) + 1 if rel_dir else 0
            own = tuple((offset, spec) for spec in (ours, gitignore) if spec is not None)
            chain = own + (self._chain(rel_dir.rpartition("/")[0]) if rel_dir else ())
            self._chains[rel_dir] = chain
        return chain
