"""The fast front door (codequarry.fastcli): the same command line, output and exit codes
as the full CLI, with or without a daemon, and none of the heavy imports when a daemon
answers `search` or `status`."""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

from codequarry import cli, console, fastcli, index_state, models
from codequarry.config import Settings

from .conftest import running_daemon, until, write_files
from .fakes import HashEmbedder

REPO = {
    "pkg/geometry.py": "import math\n\n\ndef torus_volume(major, minor):\n"
                       "    \"\"\"Volume of a torus.\"\"\"\n"
                       "\treturn 2 * math.pi ** 2 * major * minor ** 2\n\n\n"
                       "def sphere_area(radius):\n    return 4 * math.pi * radius ** 2\n",
    "pkg/lookup.py": "def find_item(table, key):\n    return table[key]  # [index] access :) \n\n\n"
                     "class Registry:\n    def register(self, name):\n        self.names.append(name)\n",
    "README.md": "# Geometry\n\nShapes and their volumes: torus, sphere.\n",
}
HEAVY = ("pydantic", "rich", "sqlalchemy", "codequarry.config", "http.client", "anyio")


def _subparser(parser: argparse.ArgumentParser, name: str) -> argparse.ArgumentParser:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            chosen = action.choices[name]
            assert isinstance(chosen, argparse.ArgumentParser)
            return chosen
    raise AssertionError(f"no subcommand {name}")


def _shape(parser: argparse.ArgumentParser) -> list[tuple[Any, ...]]:
    return [(type(a).__name__, tuple(a.option_strings), a.dest, a.default, a.choices, a.type, a.nargs,
             a.required, a.metavar, a.help)
            for a in parser._actions if not isinstance(a, argparse._SubParsersAction | argparse._HelpAction)
            and a.dest != "version"]


@pytest.mark.parametrize("command", fastcli.FAST_COMMANDS)
def test_the_fast_parser_has_the_full_parsers_options_choices_and_defaults(command: str) -> None:
    full, fast = cli.build_parser(), fastcli.build_fast_parser()
    assert _shape(_subparser(fast, command)) == _shape(_subparser(full, command))
    assert _shape(fast) == _shape(full)
    assert fastcli.PROJECT_ID.pattern == models._PROJECT_ID.pattern


def test_search_takes_the_path_filter_as_path_glob_like_mcp_and_as_path() -> None:
    for parser in (cli.build_parser(), fastcli.build_fast_parser()):
        for option in ("--path-glob", "--path"):
            assert parser.parse_args(["search", "q", option, "src/**"]).path_glob == "src/**"


@pytest.mark.parametrize(("argv", "command"), [
    (["search", "q"], "search"), (["--log-level", "debug", "status"], "status"),
    (["--config", "search", "status"], "status"), (["--help"], None), (["-h", "search"], None),
    (["index", "."], "index"), ([], None), (["--config=x.toml", "search", "q"], "search")])
def test_the_command_word_is_found_after_the_global_options(argv: list[str], command: str | None) -> None:
    assert fastcli._command_of(argv) == command


@pytest.mark.parametrize("argv", [["search"], ["search", "q", "--help"], ["search", "q", "--limit", "x"],
                                  ["search", "q", "--mode", "fuzzy"], ["status", "--bogus"],
                                  ["--version", "search", "q"]])
def test_a_command_line_the_fast_parser_cannot_take_goes_to_the_full_cli(
        argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(fastcli._Fallback):
        fastcli.build_fast_parser().parse_args(argv)
    assert capsys.readouterr() == ("", "")  # the full CLI prints the usage or the error


def _hit(rank: int, snippet: str, path: str = "pkg/a.py", symbol: str | None = "f") -> dict[str, Any]:
    """A result as search answers it: the project is stated once for the whole answer."""
    lines = snippet.split("\n")
    return {"path": path, "start_line": rank, "end_line": rank + len(lines) + 3, "symbol": symbol,
            "kind": "function", "language": "python", "score": round(1.0 / rank, 3), "snippet": snippet,
            "snippet_ranges": [[rank, rank + len(lines) - 1]], "hits": [[rank, rank]]}


SNIPPETS = [
    "def f(x):\n    return x",
    "\tindented with a tab\n\n    trailing spaces   ",
    "table[key] = [1, 2]  # [bold]not markup[/bold]",
    "x = y  # :smile: :thumbs_up: std::vector a:b:c",
    "unicode \u00e9l\u00e8ve \u4e2d\u6587",
    "long " + "word " * 60 + "\n" + "x" * 300,
    "".join(f"line {i}\n" for i in range(20)).rstrip("\n"),
]


@pytest.mark.parametrize("snippet", SNIPPETS)
@pytest.mark.parametrize(("path", "symbol"), [("pkg/a.py", "f"), ("pkg/[id]/page.tsx", None),
                                              ("C:\\odd.py", "odd")])
def test_off_a_terminal_the_fast_path_prints_exactly_what_the_full_cli_prints(
        snippet: str, path: str, symbol: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    """Scripts and pipes get the answer's compact text byte for byte, from either path
    (markup-like brackets, emoji codes and wide characters included)."""
    from rich.console import Console

    from codequarry.answer_text import render_text

    results = [_hit(1, snippet, path, symbol), _hit(2, "pass", "pkg/b.py", None)]
    answer = {"query": "q", "mode": "hybrid", "detail": "snippet", "project": "demo", "offset": 0,
              "next_offset": 2, "results": results,
              "freshness": {"pending_files": 1, "vector_coverage": 0.5, "last_indexed_change": None},
              "notes": ["a note for [bold]you[/bold]"]}
    full, fast = io.StringIO(), io.StringIO()
    monkeypatch.setattr(console, "stdout", Console(file=io.StringIO(), width=200))  # not a terminal
    monkeypatch.delenv("FORCE_COLOR", raising=False)
    monkeypatch.delenv("TTY_COMPATIBLE", raising=False)
    monkeypatch.setattr(sys, "stdout", full)
    console.print_results(answer)
    monkeypatch.setattr(sys, "stdout", fast)
    assert fastcli._print_plain_results(answer)
    assert fast.getvalue() == full.getvalue() == render_text(answer, cli=True) + "\n"
    assert "demo" in full.getvalue().split("\n")[0]  # the shared project, said once


# ---- end to end: the installed script against the full CLI, same daemon ------------------


def _env(settings: Settings) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CODEQUARRY_", "XDG_"))}
    return env | {"CODEQUARRY_CONFIG": str(settings.config_path)}


def _run(settings: Settings, argv: list[str], fast: bool) -> tuple[int, str, str, set[str]]:
    """(exit code, stdout, stderr without import lines, modules imported) of one command."""
    entry = "fastcli" if fast else "cli"
    code = f"import sys; from codequarry.{entry} import main; main(sys.argv[1:])"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code, *argv], env=_env(settings),
                          capture_output=True, text=True, timeout=120, check=False)
    imported, errors = set(), []
    for line in done.stderr.splitlines():
        if line.startswith("import time:"):
            imported.add(line.rsplit("|", 1)[1].strip())
        else:
            errors.append(line)
    return done.returncode, done.stdout, "\n".join(errors), imported


COMMANDS = [
    ["search", "torus volume", "--project", "demo"],
    ["search", "torus volume", "--project", "demo", "--json"],
    ["search", "find_item", "--mode", "lexical", "--language", "python", "--path", "pkg/**", "--limit", "2"],
    ["status", "--json"],
    ["status", "--project", "demo", "--json"],
]
ERRORS = [
    ["search", "q", "--project", "nope"],  # the daemon refuses: unknown project
    ["search", "q", "--limit", "0"],
    ["search", "q", "--project", "Bad_Id"],
    ["status", "--project", "nope"],
    ["search"],
    ["search", "q", "--mode", "fuzzy"],
]


def _comparable(argv: list[str], out: str) -> str:
    if argv[0] == "status" and "--json" in argv:  # the index lag moves between two calls
        answer = json.loads(out)
        for project in answer["projects"]:
            project.pop("index_lag_seconds", None)
        answer["daemon"].pop("uptime_seconds", None)
        return json.dumps(answer, sort_keys=True)
    return out


async def test_with_a_daemon_search_and_status_answer_like_the_full_cli_without_heavy_imports(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    """...and a reader that closes stdout at once (`| head -1`) ends every printing command
    quietly with exit code 0, on the fast path, the full CLI and rich's tables alike."""
    repo = write_files(tmp_path / "repo", REPO)
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    async with running_daemon(settings, HashEmbedder()) as daemon:
        assert daemon.runtime is not None
        indexer = daemon.runtime.indexer

        async def ready() -> bool:
            store = indexer.projects.get("demo")
            if store is None or not indexer.idle() or not indexer.embedding_settled():
                return False
            chunks, embedded = await store.store.vector_counts()
            return chunks > 0 and chunks == embedded and len(await store.store.indexed_files()) == 3

        await until(ready, 30, "the demo project indexed and embedded")
        first = await anyio.to_thread.run_sync(_run, settings, ["status", "--json"], True)
        assert "codequarry.config" in first[3]  # a config file not seen before is validated once
        commands = [*COMMANDS, ["index", str(repo), "--project", "demo"]]
        for argv in commands + ERRORS:
            fast = await anyio.to_thread.run_sync(_run, settings, argv, True)
            full = await anyio.to_thread.run_sync(_run, settings, argv, False)
            assert fast[0] == full[0], (argv, fast, full)
            assert _comparable(argv, fast[1]) == _comparable(argv, full[1]), argv
            assert fast[2] == full[2], argv
            if argv in commands and (argv[0] in ("search", "index") or "--json" in argv):
                assert fast[0] == 0, fast
                assert not {m for m in fast[3] if m.split(".")[0] in HEAVY or m in HEAVY}, argv
            if argv == COMMANDS[0]:
                assert "project demo" in fast[1].split("\n")[0]  # stated once
                assert "\npkg/geometry.py:" in fast[1]
                assert "torus_volume" in fast[1]
        for argv in (["status"], COMMANDS[0], COMMANDS[3], ["symbol", "torus_volume"], ["client-config"]):
            assert await anyio.to_thread.run_sync(_to_a_closed_pipe, settings, argv) == (0, ""), argv


def _to_a_closed_pipe(settings: Settings, argv: list[str]) -> tuple[int, str]:
    """(exit code, stderr) of the `codequarry` script writing to a pipe nobody reads."""
    read, write = os.pipe()
    os.close(read)
    try:
        done = subprocess.run([str(Path(sys.executable).with_name("codequarry")), *argv], env=_env(settings),
                              stdout=write, stderr=subprocess.PIPE, text=True, timeout=120, check=False)
    finally:
        os.close(write)
    return done.returncode, done.stderr


async def test_an_edited_config_is_validated_again_and_an_invalid_one_fails_like_the_full_cli(
        make_settings: Callable[..., Settings], tmp_path: Path) -> None:
    repo = write_files(tmp_path / "repo", REPO)
    settings = make_settings([{"id": "demo", "path": str(repo)}])
    argv = ["status", "--json"]
    async with running_daemon(settings, HashEmbedder()):
        for _ in range(2):
            assert (await anyio.to_thread.run_sync(_run, settings, argv, True))[0] == 0
        assert "codequarry.config" not in (await anyio.to_thread.run_sync(_run, settings, argv, True))[3]
        text = settings.config_path.read_text()
        settings.config_path.write_text(text + "\n# a comment\n")
        edited = await anyio.to_thread.run_sync(_run, settings, argv, True)
        assert edited[0] == 0
        assert "codequarry.config" in edited[3]
        settings.config_path.write_text(text + "\n[index]\nmax_file_bytes = 'big'\n")
        fast = await anyio.to_thread.run_sync(_run, settings, argv, True)
        full = await anyio.to_thread.run_sync(_run, settings, argv, False)
        assert fast[:3] == full[:3]
        assert fast[0] == 2
        assert "max_file_bytes" in fast[2]


def test_without_a_daemon_a_read_command_is_answered_by_the_full_cli(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    for argv in (["status", "--project", "Bad_Id"], ["search", "q", "--limit", "99"]):
        fast, full = _run(settings, argv, True), _run(settings, argv, False)
        assert fast[:3] == full[:3]
        assert fast[0] == 2


@pytest.mark.parametrize("argv", [["--help"], ["-h"], ["search", "--help"], ["index", "-h"],
                                  ["status", "--help"], ["nonsense", "--help"]])
def test_help_is_the_full_clis_help_the_first_time_and_from_the_cache_the_next(
        make_settings: Callable[..., Settings], argv: list[str]) -> None:
    settings = make_settings()
    full = _run(settings, argv, False)
    first, second = _run(settings, argv, True), _run(settings, argv, True)
    assert first[:3] == full[:3]
    assert second[:3] == full[:3]
    if full[0] == 0:
        assert "codequarry.config" not in second[3]



def test_index_gives_up_with_the_error_when_the_daemon_keeps_retrying_the_project(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A project whose start keeps failing (state "retrying") must not make `index` poll
    forever: after RETRYING_GIVE_UP_SECONDS the fast path exits 1 naming the daemon's error,
    as the full CLI does."""
    repo = tmp_path / "repo"
    repo.mkdir()
    retrying = {"project": "repo", "state": "retrying", "error": "permission denied: repo/.git",
                "pending_files": 0, "pending_events": 0, "vector_coverage": 0.0, "errors": []}
    asked: list[str] = []

    def ask(socket: str, method: str, path: str, body: dict[str, Any] | None) -> Any:
        asked.append(path)
        return {"status": retrying} if path == "/api/index" else {"projects": [retrying]}

    monkeypatch.setattr(fastcli, "_ask", ask)
    monkeypatch.setattr(index_state, "RETRYING_GIVE_UP_SECONDS", 0.05)
    monkeypatch.setattr(fastcli.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    args = argparse.Namespace(path=str(repo), project=None)
    with pytest.raises(SystemExit) as exited:
        fastcli._index(args, "unused.sock", {"projects": [{"id": "repo", "path": str(repo)}]})
    assert exited.value.code == 1
    assert "keeps retrying it): permission denied: repo/.git" in capsys.readouterr().err
    assert asked[0] == "/api/index"
    assert set(asked[1:]) == {"/api/status"}
