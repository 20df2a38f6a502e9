"""The installed `codequarry` command, run as a subprocess the way a user runs it.

Each command that touches the store starts its own embedded PostgreSQL under
CODEQUARRY_HOME (no daemon here) and uses the real local model, so the indexed state is
built once per module and the number of such commands is kept small.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import write_files

CODEQUARRY = Path(sys.executable).with_name("codequarry")

REPO = {
    "pkg/settings.py": (
        "import tomllib\n\n\n"
        "def load_settings(path):\n"
        "    \"\"\"Read the TOML settings file at path and return it as a dict.\"\"\"\n"
        "    with open(path, 'rb') as handle:\n"
        "        return tomllib.load(handle)\n"),
    "pkg/shapes.py": (
        "import math\n\n\n"
        "def circle_area(radius):\n"
        "    return math.pi * radius ** 2\n"),
    "README.md": "# Demo\n\nA tiny repository for the command line tests.\n",
}


@dataclass(frozen=True)
class Cli:
    env: dict[str, str]
    config: Path
    root: Path

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(CODEQUARRY), *args], env=self.env, capture_output=True, text=True,
                              timeout=180, check=False)


def make_cli(root: Path) -> Cli:
    """An environment whose config, data dir and HOME all live under `root`."""
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("CODEQUARRY_", "XDG_")) and key != "NOTIFY_SOCKET"}
    (root / "home").mkdir(parents=True, exist_ok=True)
    env.update(HOME=str(root / "home"), CODEQUARRY_HOME=str(root / "data"),
               CODEQUARRY_CONFIG=str(root / "config.toml"))
    return Cli(env, root / "config.toml", root)


@dataclass(frozen=True)
class Indexed:
    cli: Cli
    repo: Path
    index_result: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def indexed(tmp_path_factory: pytest.TempPathFactory) -> Indexed:
    """Two tiny repositories indexed by `codequarry index` (one is for the purge test)."""
    root = tmp_path_factory.mktemp("cli")
    cli = make_cli(root)
    repo = write_files(root / "demo", REPO)
    scratch = write_files(root / "scratch", {"notes.md": "# Scratch\n\nThrow-away notes.\n"})
    result = cli.run("index", str(repo), "--project", "cli-demo")
    scratch_result = cli.run("index", str(scratch), "--project", "cli-scratch")
    assert scratch_result.returncode == 0, scratch_result.stderr
    return Indexed(cli, repo, result)


@pytest.fixture
def cli(tmp_path: Path) -> Cli:
    """A fresh environment with no config and no data, for commands that fail early."""
    return make_cli(tmp_path / "cli")


def test_index_exits_0_and_registers_the_repository_in_the_config_file(indexed: Indexed) -> None:
    result = indexed.index_result
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "cli-demo: 3 files (0 skipped)" in result.stderr
    config = tomllib.loads(indexed.cli.config.read_text())
    assert {"id": "cli-demo", "path": str(indexed.repo)} in config["projects"]


def test_search_json_prints_results_with_locations_and_freshness(indexed: Indexed) -> None:
    result = indexed.cli.run("search", "read the settings file", "--project", "cli-demo", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    first = answer["results"][0]
    assert first["path"] == "pkg/settings.py"
    assert first["symbol"] == "load_settings"
    assert answer["project"] == "cli-demo"  # one project asked: stated once
    lines = (indexed.repo / "pkg/settings.py").read_text().split("\n")
    assert 1 <= first["start_line"] <= 4
    assert first["end_line"] == 7
    shown = [n for start, end in first["snippet_ranges"] for n in range(start, end + 1)]
    assert first["snippet"] == "\n".join(lines[n - 1] for n in shown)
    assert answer["freshness"]["pending_files"] == 0
    assert answer["freshness"]["vector_coverage"] == 1.0


def test_search_pages_with_offset_and_prints_compact_text(indexed: Indexed) -> None:
    first = indexed.cli.run("search", "settings", "--project", "cli-demo", "--limit", "1", "--json")
    answer = json.loads(first.stdout)
    assert answer["next_offset"] == 1
    second = indexed.cli.run("search", "settings", "--project", "cli-demo", "--limit", "1",
                             "--offset", "1", "--json")
    assert json.loads(second.stdout)["results"][0]["path"] != answer["results"][0]["path"]
    text = indexed.cli.run("search", "settings", "--project", "cli-demo", "--detail", "paths")
    assert text.returncode == 0, text.stderr
    assert "pkg/settings.py:" in text.stdout
    assert "{" not in text.stdout


def test_symbol_prints_the_definition_and_its_span(indexed: Indexed) -> None:
    result = indexed.cli.run("symbol", "load_settings")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1].startswith("pkg/settings.py:")
    assert "def load_settings(path):" in result.stdout
    missing = indexed.cli.run("symbol", "zzzz_not_defined_anywhere")
    assert missing.returncode == 1


def test_refs_lists_the_lines_of_an_identifier_by_file(indexed: Indexed) -> None:
    result = indexed.cli.run("refs", "circle_area", "--project", "cli-demo")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["1 reference to circle_area in 1 file (* = definition)",
                                             "pkg/shapes.py (1)", "  4* def circle_area(radius):"]
    other = indexed.cli.run("refs", "circle_area", "--path-glob", "*.md", "--json")
    assert json.loads(other.stdout)["total"] == 0
    assert other.returncode == 1


def test_show_prints_numbered_lines_from_disk_and_refuses_outside_paths(indexed: Indexed) -> None:
    result = indexed.cli.run("show", str(indexed.repo / "pkg/shapes.py") + ":4-5")
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[1:3] == ["4 def circle_area(radius):",
                                               "5     return math.pi * radius ** 2"]
    by_symbol = indexed.cli.run("show", "--symbol", "circle_area", "--project", "cli-demo")
    assert "def circle_area(radius):" in by_symbol.stdout
    outside = indexed.cli.run("show", "/etc/passwd")
    assert outside.returncode == 2
    assert "outside every registered project" in outside.stderr


def test_status_json_reports_pending_files_and_vector_coverage_per_project(indexed: Indexed) -> None:
    result = indexed.cli.run("status", "--json")
    assert result.returncode == 0, result.stderr
    projects = {p["project"]: p for p in json.loads(result.stdout)["projects"]}
    demo = projects["cli-demo"]
    assert (demo["files"], demo["pending_files"], demo["vector_coverage"]) == (3, 0, 1.0)
    assert demo["chunks"] >= 3
    assert demo["model_id"].startswith("local:")


def test_verify_exits_0_on_a_fresh_index_and_1_after_a_file_changes_on_disk(indexed: Indexed) -> None:
    fresh = indexed.cli.run("verify", "--project", "cli-demo")
    assert fresh.returncode == 0, fresh.stdout + fresh.stderr
    assert "equals a fresh index" in fresh.stderr
    with (indexed.repo / "README.md").open("a") as handle:
        handle.write("\nA line added after indexing.\n")
    stale = indexed.cli.run("verify", "--project", "cli-demo")
    assert stale.returncode == 1, stale.stdout + stale.stderr
    assert stale.stdout.splitlines() == ["README.md: stat differs from the index"]
    assert "1 difference(s)" in stale.stderr


def test_remove_purge_unregisters_the_project_and_drops_its_data(indexed: Indexed) -> None:
    removed = indexed.cli.run("remove", "cli-scratch", "--purge")
    assert removed.returncode == 0, removed.stderr
    assert "deleted the indexed data of cli-scratch" in removed.stderr
    status = indexed.cli.run("status", "--json")
    assert status.returncode == 0, status.stderr
    listed = {p["project"] for p in json.loads(status.stdout)["projects"]}
    assert "cli-scratch" not in listed  # neither registered nor holding data
    assert "cli-demo" in listed
    assert "cli-scratch" not in indexed.cli.config.read_text()


@pytest.mark.parametrize("args", [("search", "anything", "--project", "Bad_Id"),
                                  ("verify", "--project", "Bad_Id"),
                                  ("remove", "Bad_Id")])
def test_an_invalid_project_id_exits_2_with_one_line_on_stderr_and_no_traceback(
        cli: Cli, args: tuple[str, ...]) -> None:
    result = cli.run(*args)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "codequarry: error: invalid project id 'Bad_Id': use lowercase letters, digits and single "
        "inner hyphens, 1-50 characters"]
    assert result.stdout == ""


@pytest.mark.parametrize(("text", "line", "detail"), [
    ('[index]\nexclude = []\nmax_file_bytes = "big"\n', 3, "index.max_file_bytes"),
    ("[embedder]\nkind = 'local'\n\n[index\n", 4, "invalid TOML"),
])
def test_a_malformed_config_exits_2_naming_config_toml_and_the_line(
        cli: Cli, text: str, line: int, detail: str) -> None:
    cli.config.parent.mkdir(parents=True, exist_ok=True)
    cli.config.write_text(text)
    result = cli.run("status")
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
    assert "config.toml" in result.stderr
    assert detail in result.stderr
    assert f"config.toml:{line}" in result.stderr or f"line {line}" in result.stderr


def test_search_with_limit_0_exits_2(cli: Cli) -> None:
    result = cli.run("search", "anything", "--limit", "0")
    assert result.returncode == 2
    assert result.stderr.splitlines() == ["codequarry: error: --limit must be between 1 and 50, got 0"]


@pytest.mark.parametrize(("command", "explanation"), [
    ("index", "Index a repository now"),
    ("search", "Search indexed code by meaning and by words"),
    ("status", "vector coverage"),
    ("add", "Register a repository"),
    ("remove", "Unregister a project"),
    ("verify", "fresh index of its tree"),
    ("daemon", "Run the daemon in the foreground"),
    ("mcp", "Bridge MCP over stdio"),
    ("init", "Write a starter config file"),
    ("service", "login service"),
    ("eval", "Measure retrieval quality"),
])
def test_help_of_every_subcommand_exits_0_and_explains_it(cli: Cli, command: str, explanation: str) -> None:
    result = cli.run(command, "--help")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(f"usage: codequarry {command}")
    assert explanation in " ".join(result.stdout.split())


def test_eval_scores_every_mode_and_lists_the_missed_query_first(indexed: Indexed) -> None:
    qrels = indexed.cli.root / "qrels.jsonl"
    labels = [("load_settings", "pkg/settings.py", 4, 7), ("circle_area", "pkg/shapes.py", 4, 5),
              ("circle_area", "pkg/missing.py", 1, 3)]  # a label no result can hit
    qrels.write_text("".join(json.dumps({"query": q, "relevant": [
        {"path": p, "start_line": s, "end_line": e}]}) + "\n" for q, p, s, e in labels))
    result = indexed.cli.run("eval", str(qrels), "--project", "cli-demo", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    for mode in ("lexical", "semantic", "hybrid"):
        assert report["modes"][mode]["queries"] == 3
        assert report["modes"][mode]["mrr@10"] == pytest.approx(2 / 3, abs=1e-3), mode
    assert report["worst"][0] == {"query": "circle_area", "expected": "pkg/missing.py",
                                  "lexical": None, "semantic": None, "hybrid": None}


@pytest.mark.parametrize(("location", "parsed"), [
    ("src/app.py", ("src/app.py", None, None)), ("src/app.py:12", ("src/app.py", 12, 12)),
    ("src/app.py:12-40", ("src/app.py", 12, 40)), ("src/app.py:770-", ("src/app.py", 770, None)),
    ("C:/odd:name.py:3", ("C:/odd:name.py", 3, 3))])
def test_show_locations_take_a_line_a_range_or_an_open_range(
        location: str, parsed: tuple[str, int | None, int | None]) -> None:
    from codequarry.code_tools import parse_location

    assert parse_location(location) == parsed
