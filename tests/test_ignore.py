"""Which files of a repository are indexed (codequarry.ignore), checked on real trees on
disk, mostly through scan_tree as the indexer uses it."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from codequarry.ignore import IgnoreRules
from codequarry.scan import scan_tree

from .conftest import write_files


def _scan(root: Path, excludes: Sequence[str] = (), includes: Sequence[str] = ()) -> set[str]:
    rules = IgnoreRules(root, excludes, includes)
    return {stat.path for stat in scan_tree(root, rules, 1_000_000)}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    return root


def test_deeper_gitignore_negation_re_includes_what_a_parent_excluded(repo: Path) -> None:
    write_files(repo, {
        ".gitignore": "*.log\n",
        "src/.gitignore": "!keep.log\n",
        "top.log": "", "src/keep.log": "", "src/other.log": "", "other/keep.log": "",
        "src/main.py": "",
    })
    assert _scan(repo) == {".gitignore", "src/.gitignore", "src/keep.log", "src/main.py"}
    rules = IgnoreRules(repo)
    assert not rules.is_ignored("src/keep.log")
    assert rules.is_ignored("other/keep.log")


def test_negation_cannot_re_include_a_file_inside_an_excluded_directory(repo: Path) -> None:
    write_files(repo, {
        ".gitignore": "build/\n!build/direct.txt\n",
        "build/.gitignore": "!inner.txt\n",
        "build/inner.txt": "", "build/direct.txt": "", "build/sub/x.txt": "", "main.py": "",
    })
    assert _scan(repo) == {".gitignore", "main.py"}


def test_single_path_check_agrees_with_the_scan_for_files_in_an_excluded_directory(
    repo: Path,
) -> None:
    write_files(repo, {
        ".gitignore": "build/\n!build/direct.txt\n",
        "build/.gitignore": "!inner.txt\n",
        "build/inner.txt": "", "build/direct.txt": "",
    })
    rules = IgnoreRules(repo)
    assert rules.is_ignored("build/inner.txt")
    assert rules.is_ignored("build/direct.txt")


def test_nested_gitignore_applies_only_below_its_directory(repo: Path) -> None:
    write_files(repo, {
        "sub/.gitignore": "*.tmp\n/anchored.txt\n",
        "a.tmp": "", "sub/b.tmp": "", "sub/deep/c.tmp": "",
        "anchored.txt": "", "sub/anchored.txt": "", "sub/deep/anchored.txt": "",
    })
    assert _scan(repo) == {"sub/.gitignore", "a.tmp", "anchored.txt", "sub/deep/anchored.txt"}


def test_git_info_exclude_is_honoured(repo: Path) -> None:
    write_files(repo, {
        ".git/info/exclude": "secret.txt\nprivate/\n",
        "secret.txt": "", "sub/secret.txt": "", "private/a.py": "", "main.py": "",
    })
    assert _scan(repo) == {"main.py"}


def test_gitignore_negation_overrides_git_info_exclude(repo: Path) -> None:
    write_files(repo, {
        ".git/info/exclude": "*.txt\n", ".gitignore": "!wanted.txt\n",
        "wanted.txt": "", "other.txt": "",
    })
    assert _scan(repo) == {".gitignore", "wanted.txt"}


def test_codequarryignore_files_exclude_like_gitignore_at_any_level(repo: Path) -> None:
    write_files(repo, {
        ".codequarryignore": "generated/\n*.snap\n",
        "lib/.codequarryignore": "fixtures.json\n",
        "generated/a.py": "", "lib/x.snap": "", "lib/fixtures.json": "", "fixtures.json": "",
        "lib/code.py": "",
    })
    assert _scan(repo) == {".codequarryignore", "lib/.codequarryignore", "fixtures.json",
                           "lib/code.py"}


def test_codequarryignore_overrides_the_gitignore_of_the_same_directory(repo: Path) -> None:
    write_files(repo, {
        ".gitignore": "*.gen.py\n", ".codequarryignore": "!schema.gen.py\nnotes.md\n",
        "schema.gen.py": "", "other.gen.py": "", "notes.md": "",
    })
    assert _scan(repo) == {".gitignore", ".codequarryignore", "schema.gen.py"}


def test_config_excludes_win_over_a_gitignore_negation(repo: Path) -> None:
    write_files(repo, {
        ".gitignore": "*.log\n!important.log\n",
        "src/.gitignore": "!*.log\n",
        "important.log": "", "src/app.log": "", "src/main.py": "",
    })
    assert _scan(repo) >= {"important.log", "src/app.log"}
    assert _scan(repo, excludes=["important.log", "*.log"]) == {
        ".gitignore", "src/.gitignore", "src/main.py"}


def test_config_exclude_of_a_directory_prunes_it(repo: Path) -> None:
    write_files(repo, {"vendor/lib/a.py": "", "src/vendor/b.py": "", "main.py": ""})
    assert _scan(repo, excludes=["/vendor/"]) == {"src/vendor/b.py", "main.py"}
    assert _scan(repo, excludes=["vendor/"]) == {"main.py"}


def test_includes_restrict_indexing_to_matching_files(repo: Path) -> None:
    write_files(repo, {
        "README.md": "", "src/app.py": "", "src/deep/util.py": "", "src/style.css": "",
        "docs/guide.md": "", "setup.cfg": "",
    })
    assert _scan(repo, includes=["*.py", "docs/"]) == {
        "src/app.py", "src/deep/util.py", "docs/guide.md"}


def test_includes_do_not_override_ignore_rules(repo: Path) -> None:
    write_files(repo, {".gitignore": "gen/\n", "gen/x.py": "", "src/y.py": ""})
    assert _scan(repo, includes=["*.py"]) == {"src/y.py"}


def test_built_in_defaults_skip_vcs_dependency_and_cache_directories(repo: Path) -> None:
    write_files(repo, {
        ".git/config": "", ".git/HEAD": "", "node_modules/pkg/index.js": "",
        "web/node_modules/pkg/index.js": "", "__pycache__/m.cpython-311.pyc": "",
        "pkg/__pycache__/m.py": "", "pkg/stale.pyc": "", ".pytest_cache/v": "",
        "pkg/m.py": "", "web/app.js": "",
    })
    assert _scan(repo) == {"pkg/m.py", "web/app.js"}
    rules = IgnoreRules(repo)
    assert rules.is_ignored(".git", is_dir=True)
    assert rules.is_ignored("a/node_modules", is_dir=True)


def test_forget_picks_up_a_changed_ignore_file(repo: Path) -> None:
    write_files(repo, {".gitignore": "*.log\n", "sub/.gitignore": "", "a.log": "",
                       "sub/b.txt": ""})
    rules = IgnoreRules(repo)
    assert rules.is_ignored("a.log")
    assert not rules.is_ignored("sub/b.txt")
    (repo / ".gitignore").write_text("")
    (repo / "sub" / ".gitignore").write_text("*.txt\n")
    assert rules.is_ignored("a.log")  # read once per directory: still the cached rules
    rules.forget("sub")
    assert rules.is_ignored("sub/b.txt")
    assert rules.is_ignored("a.log")  # only "sub" was forgotten
    rules.forget()
    assert not rules.is_ignored("a.log")


def test_ignore_file_created_after_first_use_is_seen_after_forget(repo: Path) -> None:
    write_files(repo, {"sub/b.txt": ""})
    rules = IgnoreRules(repo)
    assert not rules.is_ignored("sub/b.txt")
    write_files(repo, {"sub/.codequarryignore": "b.txt\n"})
    rules.forget("sub")
    assert rules.is_ignored("sub/b.txt")


def test_git_files_of_worktrees_and_submodules_are_never_indexed(repo: Path) -> None:
    write_files(repo, {
        ".git": "gitdir: /elsewhere/.git/worktrees/wt\n",  # a worktree
        "vendor/lib/.git": "gitdir: ../../.git/modules/lib\n",  # a submodule
        "vendor/lib/lib.py": "x = 1\n",
        "nested/.git/HEAD": "ref: refs/heads/main\n",  # an embedded repository's internals
        "nested/code.py": "y = 2\n",
        ".gitignore": "!.git\n!.git/\n",  # a negation cannot bring git's files back
        ".gitmodules": "[submodule \"lib\"]\n",
    })
    assert _scan(repo, excludes=["!.git"]) == {".gitignore", ".gitmodules", "vendor/lib/lib.py",
                                               "nested/code.py"}
    rules = IgnoreRules(repo)
    for rel in (".git", "vendor/lib/.git", "nested/.git", "nested/.git/HEAD"):
        assert rules.is_ignored(rel), rel


def test_the_watcher_filter_and_the_scan_agree_on_git_files(repo: Path) -> None:
    import watchfiles

    from codequarry.watch import RepoFilter

    write_files(repo, {".git": "gitdir: x\n", "sub/.git": "gitdir: y\n", "sub/a.py": "",
                       "deep/.git/config": "", "b.py": ""})
    rules = IgnoreRules(repo)
    keep = RepoFilter(repo, rules)
    scanned = _scan(repo)
    for rel in (".git", "sub/.git", "deep/.git/config", "sub/a.py", "b.py"):
        assert keep(watchfiles.Change.modified, str(repo / rel)) == (rel in scanned), rel
    assert keep(watchfiles.Change.modified, str(repo / ".git/info/exclude"))  # changes the rules


def test_a_worktree_honours_the_info_exclude_of_its_repository(tmp_path: Path) -> None:
    import subprocess

    main = tmp_path / "main"
    main.mkdir()
    git = ["git", "-c", "user.email=t@t", "-c", "user.name=t"]
    subprocess.run([*git, "-C", str(main), "init", "-q"], check=True)
    write_files(main, {"a.py": "x\n"})
    subprocess.run([*git, "-C", str(main), "add", "-A"], check=True)
    subprocess.run([*git, "-C", str(main), "commit", "-qm", "c"], check=True)
    (main / ".git" / "info").mkdir(exist_ok=True)
    (main / ".git" / "info" / "exclude").write_text("*.local\n")
    worktree = tmp_path / "wt"
    subprocess.run([*git, "-C", str(main), "worktree", "add", "-q", str(worktree)], check=True)
    write_files(worktree, {"notes.local": "mine\n"})
    assert _scan(worktree) == {"a.py"}
