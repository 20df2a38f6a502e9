"""The `codequarry` console script: a thin front door for the read commands.

With a daemon running, `codequarry search` and `status` only need to ask its socket and
print, so this module imports nothing else (no config models, no rich, no http.client)
on that path: it parses the command line with the full CLI's own arguments for those
commands (codequarry.cli_args, standard library only), finds the socket the way
`Settings.socket_path` does, sends one request (codequarry.quickclient) and prints plain
text when the output is not a terminal.

Everything else goes to `codequarry.cli.main` with the same argv, which then behaves
exactly as before: other commands, `--help`, any parse error, no daemon answering, a
config file not validated since its last change, an answer the daemon refuses, and
output that needs rich (a terminal, notes on stderr, tables, markup-like text).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from codequarry.answer_text import coverage_percent
from codequarry.cli_args import (
    add_global_options,
    add_index_arguments,
    add_search_arguments,
    add_status_arguments,
)
from codequarry.index_state import IndexFollower

FAST_COMMANDS = ("search", "status", "index")
# the full CLI's rules, duplicated to stay import-free; tests compare them with the originals
PROJECT_ID = re.compile(r"[a-z0-9]+(?:-[a-z0-9]+)*")
CONFIG_STAMP = "config-validated.json"  # in the data dir: the config file last validated


class _Fallback(Exception):
    """The fast path cannot answer exactly as the full CLI would: hand over to it."""


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the `codequarry` script; exits with the command's exit code. When
    the reader of stdout leaves early (`codequarry status | head -1`), the command ends
    quietly: no traceback, exit code 0 (the reader has what it wanted), or the command's
    own code if it already had one (the Python docs' recipe for BrokenPipeError; SIGPIPE's
    default would exit 141 and fail a `set -o pipefail` script)."""
    code: Any = 0
    try:
        try:
            _main(list(sys.argv[1:] if argv is None else argv))
        except SystemExit as exit_:
            code = exit_.code
            raise
        finally:
            sys.stdout.flush()  # here, not at exit: a reader gone shows up in this try
    except BrokenPipeError:
        # Python flushes stdout again at exit: make that a no-op
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(code)


def _main(args: list[str]) -> None:
    if _is_help(args):
        _print_help(args)
        sys.exit(0)
    if _command_of(args) in FAST_COMMANDS:
        try:
            code = _fast(args)
        except _Fallback:
            pass
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        else:
            sys.exit(code)
    from codequarry.cli import main as full_main

    full_main(args)


def _command_of(args: list[str]) -> str | None:
    """The command word of argv (skipping the global options and their values)."""
    takes_value = {"--config", "--log-level"}
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in takes_value:
            skip = True
        elif not arg.startswith("-"):
            return arg
        elif arg in ("-h", "--help") or arg == "--" or not arg.startswith("--"):
            return None
    return None


# ---- --help from a cache ---------------------------------------------------------------


def _is_help(args: list[str]) -> bool:
    """`codequarry -h|--help` or `codequarry COMMAND -h|--help`, nothing else."""
    return (len(args) == 1 and args[0] in ("-h", "--help")) or (
        len(args) == 2 and args[1] in ("-h", "--help") and not args[0].startswith("-"))


def _print_help(args: list[str]) -> None:
    """The full parser's help text, kept in the user's cache directory per version, width
    and sources of the parser (cli.py, cli_args.py), so that a second `--help` skips
    importing the full CLI."""
    import hashlib
    import shutil

    from codequarry import __version__

    sources = [Path(__file__).with_name(name) for name in ("cli.py", "cli_args.py")]
    try:  # both define the parser: an option changed in a checkout shows at once
        mtimes = [os.stat(source).st_mtime_ns for source in sources]
    except OSError:
        mtimes = []
    key = hashlib.sha256(json.dumps([__version__, mtimes, shutil.get_terminal_size().columns,
                                     args]).encode()).hexdigest()[:24]
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "codequarry" / "help"
    try:
        sys.stdout.write((cache / key).read_text(encoding="utf-8"))
        return
    except OSError:
        pass
    from codequarry import cli

    parser = cli.build_parser()
    if len(args) == 2:
        subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        if args[0] not in subparsers.choices:
            cli.main(args)  # argparse's own error for an unknown command
        parser = subparsers.choices[args[0]]
    text = parser.format_help()
    try:
        cache.mkdir(parents=True, exist_ok=True)
        tmp = cache / f"{key}.{os.getpid()}.tmp"
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, cache / key)
    except OSError:
        pass  # a read-only home: no cache
    sys.stdout.write(text)


# ---- parser: the full CLI's arguments, for the fast commands only ---------------------------------


class _QuietParser(argparse.ArgumentParser):
    """Never prints or exits: anything but a clean parse goes to the full CLI."""

    def error(self, message: str) -> NoReturn:
        raise _Fallback(message)

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        raise _Fallback(message or "")

    def print_help(self, file: Any = None) -> None:
        raise _Fallback("help")

    def print_usage(self, file: Any = None) -> None:
        raise _Fallback("usage")

    def _print_message(self, message: str, file: Any = None) -> None:
        raise _Fallback("message")


def build_fast_parser() -> argparse.ArgumentParser:
    """The full CLI's global options and its search, index and status arguments (the same
    codequarry.cli_args functions), on parsers that hand anything but a clean parse over."""
    common = _QuietParser(add_help=False)
    add_global_options(common)
    parser = _QuietParser(prog="codequarry", parents=[common])
    parser.add_argument("--version", action="version", version="codequarry")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND", parser_class=_QuietParser)
    for name, add_arguments in (("search", add_search_arguments), ("index", add_index_arguments),
                                ("status", add_status_arguments)):
        p = sub.add_parser(name, parents=[common])
        p.set_defaults(command=name)
        add_arguments(p)
    return parser


# ---- the fast path ---------------------------------------------------------------------


def _fast(argv: list[str]) -> int:
    args = build_fast_parser().parse_args(argv)
    socket, raw = _socket_path(args.config)
    if args.command == "search":
        return _search(args, socket)
    if args.command == "index":
        return _index(args, socket, raw)
    return _status(args, socket)


def _search(args: argparse.Namespace, socket: str) -> int:
    if not all(_valid_project_id(p) for p in args.project) or not 1 <= args.limit <= 50:
        raise _Fallback("the full CLI words this error")
    body = {"query": args.query, "projects": args.project, "mode": args.mode,
            "languages": args.language, "path_glob": args.path_glob, "limit": args.limit,
            "detail": args.detail, "offset": args.offset, "max_tokens": args.max_tokens}
    answer = _ask(socket, "POST", "/api/search", body)
    if args.json:
        print(json.dumps(answer, indent=2))
    elif not _print_plain_results(answer):
        from codequarry.console import print_results

        print_results(answer)
    return 0


def _status(args: argparse.Namespace, socket: str) -> int:
    if args.project is not None and not _valid_project_id(args.project):
        raise _Fallback("the full CLI words this error")
    answer = _ask(socket, "GET", "/api/status", None)
    if args.project:
        answer["projects"] = [p for p in answer["projects"] if p["project"] == args.project]
        if not answer["projects"]:
            raise _Fallback("unknown project: the full CLI words this error")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        from codequarry.console import print_status  # a rich table

        print_status(answer)
    return 0


def _index(args: argparse.Namespace, socket: str, raw: dict[str, Any]) -> int:
    """`codequarry index` of a project already registered for this path, with the daemon
    watching it: the daemon's index is current once it has nothing pending, so this asks
    it and waits like console.follow_daemon_index (the same index_state.IndexFollower,
    without its progress bars, hence only when stderr is no terminal). Registering a new
    project goes to the full CLI."""
    if sys.stderr.isatty():
        raise _Fallback("progress bars: the full CLI draws them")
    repo = os.path.abspath(os.path.expanduser(args.path))
    project = args.project or _derive_project_id(repo)
    paths = [p.get("path") for p in raw.get("projects", []) if isinstance(p, dict) and p.get("id") == project]
    if not _valid_project_id(project) or len(paths) != 1 or not isinstance(paths[0], str) \
            or os.path.abspath(os.path.expanduser(paths[0])) != repo or not os.path.isdir(repo):
        raise _Fallback("registering: the full CLI edits the config file")
    # the daemon answers once it has compared the tree with its index: with its status
    answer = _ask(socket, "POST", "/api/index", {"path": repo, "project": project})
    status = {"projects": [answer.get("status", {})]}
    follower = IndexFollower(project)
    while True:
        entry = next((p for p in status.get("projects", []) if p.get("project") == project), None)
        done, failure = follower.check(entry, time.monotonic())
        if done:
            break
        time.sleep(0.3)
        status = _ask(socket, "GET", "/api/status", None)
    if entry is not None and "files" in entry:
        print(f"{project}: {entry['files']} files, {entry['chunks']} chunks, "
              f"{coverage_percent(entry['vector_coverage'])} with vectors (indexed by the daemon)",
              file=sys.stderr)
    if failure:
        _fail(failure, 1)
    return 0


def _derive_project_id(path: str) -> str:
    """codequarry.cli.derive_project_id for an absolute path."""
    name = re.sub(r"[^a-z0-9]+", "-", os.path.basename(os.path.realpath(path)).lower()).strip("-")
    return name[:50].strip("-") or "project"


def _ask(socket: str, method: str, path: str, body: dict[str, Any] | None) -> Any:
    from codequarry.errors import CodequarryError, DaemonNotRunning
    from codequarry.quickclient import request

    try:
        return request(socket, method, path, body)
    except DaemonNotRunning:
        raise _Fallback("no daemon: the full CLI answers by itself") from None
    except CodequarryError as exc:  # the daemon's own answer: as the full CLI prints it
        _fail(str(exc), exc.exit_code)


def _fail(message: str, code: int) -> NoReturn:
    print(f"codequarry: error: {message}", file=sys.stderr)
    sys.exit(code)


def _valid_project_id(project_id: str) -> bool:
    return len(project_id) <= 50 and PROJECT_ID.fullmatch(project_id) is not None


# ---- where the daemon listens ------------------------------------------------------------


def _socket_path(config_option: Path | None) -> tuple[str, dict[str, Any]]:
    """Settings.socket_path without pydantic: the config file read with tomllib, trusted only
    if it is the file last validated by codequarry.config (a stamp in the data dir); a
    changed file is validated once here (slow path), an invalid one goes to the full CLI."""
    from codequarry import paths

    config_path = config_option or paths.default_config_path()
    try:
        stat = os.stat(config_path)
        identity: list[Any] = [str(config_path), stat.st_ino, stat.st_size, stat.st_mtime_ns,
                               stat.st_ctime_ns]
        raw = _read_toml(config_path)
    except FileNotFoundError:
        identity, raw = [str(config_path), "absent"], {}
    data_dir = _data_dir(raw)
    if not data_dir.is_dir():
        raise _Fallback("no data dir: no daemon")
    record = _read_json(data_dir / "daemon.json")
    stamp = data_dir / CONFIG_STAMP
    if identity[1] != "absent" and _read_json(stamp).get("identity") != identity:
        _validate(config_path, data_dir)
        _write_stamp(stamp, identity)
    socket = record.get("socket")
    if isinstance(socket, str) and socket:
        return socket, raw
    mcp = raw.get("mcp", {})
    configured = mcp.get("socket") if isinstance(mcp, dict) else None
    return str(paths.socket_path(data_dir, Path(configured).expanduser() if configured else None)), raw


def _read_toml(path: Path) -> dict[str, Any]:
    import tomllib

    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
        raise _Fallback("unreadable config: the full CLI words this error") from None


def _data_dir(raw: dict[str, Any]) -> Path:
    from codequarry import paths

    configured = raw.get("data_dir")
    if configured is not None and not isinstance(configured, str):
        raise _Fallback("odd data_dir: the full CLI words this error")
    chosen = paths.env_data_dir() or (Path(configured).expanduser() if configured else None) \
        or paths.default_data_dir()
    return Path(os.path.abspath(chosen))


def _validate(config_path: Path, data_dir: Path) -> None:
    from codequarry.config import load_settings
    from codequarry.errors import CodequarryError

    try:
        settings = load_settings(config_path)
    except CodequarryError:
        raise _Fallback("invalid config: the full CLI words this error") from None
    if settings.data_dir != data_dir:
        raise _Fallback("the data dir differs from the fast reading of the config")


def _read_json(path: Path) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as handle:
            value = json.load(handle)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _write_stamp(path: Path, identity: list[Any]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(json.dumps({"identity": identity}), encoding="utf-8")
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a read-only data dir: validate again next time


# ---- printing --------------------------------------------------------------------------


def _print_plain_results(answer: dict[str, Any]) -> bool:
    """Print what console.print_results does when stdout is no terminal (the answer's
    compact text, codequarry.answer_text); False (nothing printed) on a terminal, where
    the full CLI colours it."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR") or sys.stdout.isatty():
        return False
    from codequarry.answer_text import render_text

    sys.stdout.write(render_text(answer, cli=True) + "\n")
    return True


if __name__ == "__main__":
    main()
