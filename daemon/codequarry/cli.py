"""The `codequarry` command line.

Exit codes: 0 success, 1 failure, 2 bad usage or config. Errors are one line on stderr;
set CODEQUARRY_DEBUG=1 for a traceback. A reader that closes stdout early (`| head`)
ends a command quietly (codequarry.fastcli.main). Heavy modules are imported inside the commands
that need them, so `codequarry search` asking a running daemon starts quickly.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from codequarry import __version__
from codequarry.cli_args import (
    add_global_options,
    add_globs,
    add_index_arguments,
    add_search_arguments,
    add_status_arguments,
)
from codequarry.config import Settings, load_settings
from codequarry.errors import CodequarryError, DaemonNotRunning, DaemonRunning, UnknownProject, UsageError
from codequarry.registration import register, unregister

if TYPE_CHECKING:
    from codequarry.client import DaemonClient

Handler = Callable[[argparse.Namespace, Settings], int]


def main(argv: Sequence[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help(sys.stderr)
        sys.exit(2)
    from codequarry.logs import configure_logging

    configure_logging(args.log_level, json=None)
    try:
        settings = load_settings(args.config)
        sys.exit(args.handler(args, settings))
    except CodequarryError as exc:
        _fail(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except BrokenPipeError:
        raise  # the reader of stdout left (`| head`): fastcli.main ends quietly
    except Exception as exc:
        if os.environ.get("CODEQUARRY_DEBUG"):
            raise
        _fail(f"internal error: {type(exc).__name__}: {exc} (set CODEQUARRY_DEBUG=1 for a traceback)", 1)


def _fail(message: str, code: int) -> None:
    print(f"codequarry: error: {message}", file=sys.stderr)
    sys.exit(code)


# ---- parser ---------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    add_global_options(common)
    parser = argparse.ArgumentParser(
        prog="codequarry", parents=[common],
        description="Always-fresh local semantic code search. Index repositories into PostgreSQL "
                    "(pgvector + full-text), search them from the shell or any MCP client.")
    parser.add_argument("--version", action="version", version=f"codequarry {__version__}")
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[common], help=help_text, description=help_text)
        p.set_defaults(handler=handler)
        return p

    p = command("index", cmd_index, "Index a repository now (registering it if needed) and "
                "wait until every file is searchable; only changed files are re-read.")
    add_index_arguments(p)

    p = command("search", cmd_search, "Search indexed code by meaning and by words.")
    add_search_arguments(p)

    p = command("symbol", cmd_symbol, "Find where a function, method, class or type is defined "
                "(exact name first, then prefix and similar spellings).")
    p.add_argument("name", help="a name or qualified name, e.g. parse or Color.parse")
    p.add_argument("--kind", help="only this kind: function, method, class, interface, ...")
    p.add_argument("--project", help="only this project (default: all)")
    p.add_argument("--limit", type=int, default=10, help="number of definitions (default 10)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("refs", cmd_refs, "List the lines where an identifier occurs (whole identifiers, "
                "from the index), grouped by file; '*' marks a line that defines it.")
    p.add_argument("name", help="an identifier, e.g. parse_config (a qualified name uses its last part)")
    p.add_argument("--project", help="only this project (default: the one holding the current "
                                     "directory, else all)")
    p.add_argument("--language", help="only files of this language")
    p.add_argument("--path-glob", help="only paths matching this glob, e.g. 'src/**'")
    p.add_argument("--limit", type=int, default=100, help="number of lines (default 100)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("show", cmd_show, "Print code from disk with line numbers: a file, a line or "
                "a range of a registered project, or a definition (--symbol).")
    p.add_argument("location", nargs="?", metavar="PATH[:LINE[-LINE]]",
                   help="file path (relative to the project or absolute), optionally :LINE or "
                        ":START-END")
    p.add_argument("--symbol", help="show this definition, e.g. Color.parse")
    p.add_argument("--project", help="project id, when a relative path is ambiguous")
    p.add_argument("--max-tokens", type=int, default=None, metavar="N",
                   help="budget in tokens of 4 characters (default 4000)")
    p.add_argument("--json", action="store_true", help="print JSON")

    p = command("status", cmd_status, "Show each project's files, chunks, vector coverage and "
                "pending work, and whether the daemon runs.")
    add_status_arguments(p)

    p = command("add", cmd_add, "Register a repository in the config file (the daemon picks it up).")
    p.add_argument("path", type=Path)
    p.add_argument("--project", help="project id (default: derived from the directory name)")
    add_globs(p)

    p = command("remove", cmd_remove, "Unregister a project; its index is kept unless --purge.")
    p.add_argument("project")
    p.add_argument("--purge", action="store_true", help="also delete the project's indexed data")

    p = command("verify", cmd_verify, "Check that a project's index equals a fresh index of its "
                "tree (exit 1 and list differences if not).")
    p.add_argument("--project", required=True)

    p = command("daemon", cmd_daemon, "Run the daemon in the foreground: watch every registered "
                "repository, keep its index fresh, serve MCP on a unix socket.")
    p.add_argument("--log-file", type=Path, help="log to this file instead of stderr")

    command("mcp", cmd_mcp, "Bridge MCP over stdio to the running daemon (for MCP client configs: "
            '{"command": "codequarry", "args": ["mcp"]}).')

    p = command("client-config", cmd_client_config, "Print a ready-to-paste MCP config for a client "
                "(absolute path of this codequarry): claude-desktop, claude-code, cursor, codex, "
                "inspector (default: all).")
    p.add_argument("client", nargs="*", metavar="CLIENT")

    p = command("install-link", cmd_install_link, "Put `codequarry` on your PATH: link it into "
                "~/.local/bin (or --bin-dir) and say whether that directory is on PATH.")
    p.add_argument("--bin-dir", type=Path, default=None, help="directory for the link (default ~/.local/bin)")

    command("init", cmd_init, "Write a starter config file (refuses to overwrite one).")

    p = command("service", cmd_service, "Install, remove or inspect the login service "
                "(systemd user unit on Linux, launchd agent on macOS).")
    p.add_argument("action", choices=["install", "uninstall", "status"])
    p.add_argument("--dry-run", action="store_true", help="print what would be written and run")

    p = command("eval", cmd_eval, "Measure retrieval quality on labelled queries (JSONL): MRR@10, "
                "Recall@1/5/10 and nDCG@10 per search mode.")
    p.add_argument("qrels", type=Path, help='JSONL lines: {"query": ..., "relevant": [{"path", '
                   '"start_line", "end_line"}]}')
    p.add_argument("--project", action="append", default=[], metavar="ID")
    p.add_argument("--mode", action="append", choices=["hybrid", "semantic", "lexical"], default=[])
    p.add_argument("--json", action="store_true")
    p.add_argument("--worst", type=int, default=5, help="show this many worst queries")
    return parser


# ---- the store: through the daemon, or here while holding the data dir's lock ----------

DAEMON_WAIT_SECONDS = 120.0
LONG_REQUEST_SECONDS = 900.0  # verify and eval read a whole project


@contextmanager
def store_access(settings: Settings, role: str) -> Iterator[DaemonClient | None]:
    """How a command that needs the store reaches it: a client of the daemon when one runs
    or is starting or stopping (waited for, up to DAEMON_WAIT_SECONDS), else None while
    this process holds the data dir's lock, so that it may open the store itself and no
    daemon starts its database meanwhile. A one-shot command holding the lock is waited for."""
    from codequarry.client import DaemonClient
    from codequarry.daemon_lock import IndexLock, labelled_holder
    from codequarry.daemon_phase import daemon_phase

    client = DaemonClient(settings.socket_path)
    deadline: float | None = None
    announced: set[str] = set()

    def announce(message: str) -> None:
        if message not in announced:
            print(f"codequarry: {message}", file=sys.stderr)
            announced.add(message)

    while True:
        try:
            if client.running():
                break
        except CodequarryError:
            pass  # a socket that does not answer (yet): see who holds the lock
        lock = IndexLock(settings.lock_path, role, wait=False)
        try:
            lock.__enter__()
        except DaemonRunning:
            holder = labelled_holder(lock)
            if "daemon" in holder:
                deadline = deadline or time.monotonic() + DAEMON_WAIT_SECONDS
                if time.monotonic() > deadline:
                    raise DaemonNotRunning(
                        f"the daemon holds {settings.data_dir} but did not answer on "
                        f"{settings.socket_path} within {DAEMON_WAIT_SECONDS:.0f}s; see its log") from None
                # "gone" too when it exited meanwhile: the next loop takes the lock
                stopping = daemon_phase(settings.data_dir).name == "stopping"
                announce(f"daemon {'stopping' if stopping else 'starting'}, waiting…")
            else:  # a one-shot command: polled, not blocked on, so a daemon starting meanwhile wins
                announce(f"waiting for {holder} to finish")
            time.sleep(0.2)
            continue
        try:
            yield None
        finally:
            lock.__exit__(None, None, None)
        return
    yield client


# ---- commands -------------------------------------------------------------------------


def cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    project = register(settings.config_path, args.path, args.project, args.include, args.exclude)
    print(f"registered {project.id} -> {project.path} in {settings.config_path}", file=sys.stderr)
    return 0


def cmd_remove(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.models import validate_project_id

    project_id = validate_project_id(args.project)
    registered = any(p.id == project_id for p in settings.config.projects)
    if registered:
        removed = unregister(settings.config_path, project_id)
        print(f"unregistered {removed.id} ({removed.path})", file=sys.stderr)
    elif not args.purge:
        unregister(settings.config_path, project_id)  # UnknownProject, with its message
    if not args.purge:
        return 0
    with store_access(settings, "remove") as client:
        if client is not None:
            deleted = bool(client.post("/api/purge", {"project": project_id})["deleted"])
        else:
            deleted = _purge_here(settings, project_id)
    if deleted:
        print(f"deleted the indexed data of {project_id}", file=sys.stderr)
    elif not registered:
        raise UnknownProject(f"no project or index named {project_id!r}")
    return 0


def _purge_here(settings: Settings, project_id: str) -> bool:
    import anyio

    from codequarry.store.db import Store

    async def purge() -> bool:
        store = await Store.open(settings)
        try:
            return await store.drop_project(project_id)
        finally:
            await store.close()

    return anyio.run(purge)


def cmd_index(args: argparse.Namespace, settings: Settings) -> int:
    project = register(settings.config_path, args.path, args.project, args.include, args.exclude)
    settings = load_settings(settings.config_path)
    with store_access(settings, "index") as client:
        if client is not None:
            from codequarry.console import follow_daemon_index

            return follow_daemon_index(client, project.id, str(project.path))
        from codequarry.oneshot import index_here

        return index_here(settings, settings.config.project(project.id))


def cmd_search(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.models import validate_project_id

    for project in args.project:
        validate_project_id(project)
    if not 1 <= args.limit <= 50:
        raise UsageError(f"--limit must be between 1 and 50, got {args.limit}")
    body = {"query": args.query, "projects": args.project, "mode": args.mode,
            "languages": args.language, "path_glob": args.path_glob, "limit": args.limit,
            "detail": args.detail, "offset": args.offset, "max_tokens": args.max_tokens}
    with store_access(settings, "search") as client:
        answer = client.post("/api/search", body) if client else _search_here(settings, body)
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        from codequarry.console import print_results

        print_results(answer)
    return 0


def cmd_symbol(args: argparse.Namespace, settings: Settings) -> int:
    body = {"name": args.name, "kind": args.kind, "project": args.project, "limit": args.limit,
            "cwd": os.getcwd()}
    answer = _ask_tools(settings, "/api/symbol", body)
    from codequarry.code_tools import render_symbols

    print(json.dumps(answer, indent=2) if args.json else render_symbols(answer))
    return 0 if answer["definitions"] else 1


def cmd_refs(args: argparse.Namespace, settings: Settings) -> int:
    body = {"name": args.name, "project": args.project, "language": args.language,
            "path_glob": args.path_glob, "limit": args.limit, "cwd": os.getcwd()}
    answer = _ask_tools(settings, "/api/references", body)
    from codequarry.code_tools import render_references

    print(json.dumps(answer, indent=2) if args.json else render_references(answer))
    return 0 if answer["total"] else 1


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    if not args.location and not args.symbol:
        raise UsageError("give PATH[:LINE[-LINE]] or --symbol NAME")
    from codequarry.code_tools import parse_location, render_code

    path, start, end = parse_location(args.location) if args.location else (None, None, None)
    if path and not os.path.isabs(path) and not args.project and os.path.exists(path):
        path = os.path.abspath(path)  # a path typed in a shell is relative to the shell
    body = {"path": path, "start_line": start, "end_line": end, "symbol": args.symbol,
            "project": args.project, "max_tokens": args.max_tokens, "cwd": os.getcwd()}
    answer = _ask_tools(settings, "/api/read", body)
    print(json.dumps(answer, indent=2) if args.json else render_code(answer, cli=True))
    return 0


def _ask_tools(settings: Settings, route: str, body: dict[str, Any]) -> Any:
    """Ask the daemon (waiting for one that is starting); without one, answer from the
    store here, holding the data dir's lock meanwhile."""
    if body.get("project"):
        from codequarry.models import validate_project_id

        validate_project_id(body["project"])
    with store_access(settings, route.rsplit("/", 1)[-1]) as client:
        if client is not None:
            return client.post(route, body)
        return _tools_here(settings, route, body)


def _tools_here(settings: Settings, route: str, body: dict[str, Any]) -> Any:
    import anyio

    from codequarry.code_tools import CodeTools
    from codequarry.search import filters_of
    from codequarry.store.db import Store

    projects = settings.config.projects
    cwd_project = [p.id for p in projects if Path(body["cwd"]).is_relative_to(p.path)]
    if body.get("project"):
        settings.config.project(body["project"])  # UnknownProject if not registered
    scope = [body["project"]] if body.get("project") else cwd_project[-1:]

    async def run() -> Any:
        store = await Store.open(settings)
        try:
            tools = CodeTools(store, projects)
            if route == "/api/symbol":
                return await tools.find_symbol(body["name"], body["kind"], scope, body["limit"])
            if route == "/api/references":
                filters = filters_of(body["language"], body["path_glob"])
                return await tools.find_references(body["name"], scope, filters, body["limit"])
            return await tools.read_code(body["path"], body["start_line"], body["end_line"],
                                         body["symbol"], scope[0] if scope else None, body["max_tokens"])
        finally:
            await store.close()

    return anyio.run(run)


def _search_here(settings: Settings, body: dict[str, Any]) -> Any:
    import anyio

    from codequarry.runtime import open_runtime
    from codequarry.search import SearchRequest

    request = SearchRequest(body["query"], tuple(body["projects"]), body["mode"],
                            tuple(body["languages"]), body["path_glob"], body["limit"],
                            body["detail"], body["offset"], body["max_tokens"]).validate()

    async def run() -> Any:
        async with open_runtime(settings) as runtime:
            model_id = None
            if request.mode != "lexical":
                try:
                    await runtime.embedder.start()
                    model_id = runtime.embedder.model_id
                except CodequarryError as exc:
                    print(f"codequarry: warning: {exc}; lexical results only", file=sys.stderr)
            response = await runtime.searcher.search(request, model_id)
            return response.to_json()

    return anyio.run(run)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.console import print_status
    from codequarry.models import validate_project_id
    from codequarry.oneshot import status_here

    if args.project:
        validate_project_id(args.project)
    with store_access(settings, "status") as client:
        answer = client.get("/api/status") if client else status_here(settings)
    if args.project:
        answer["projects"] = [p for p in answer["projects"] if p["project"] == args.project]
        answer["orphaned"] = [p for p in answer.get("orphaned", []) if p["project"] == args.project]
        if not answer["projects"] and not answer["orphaned"]:
            raise UsageError(f"unknown project {args.project!r}")
    if args.json:
        print(json.dumps(answer, indent=2))
    else:
        print_status(answer)
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    config = settings.config.project(args.project)
    with store_access(settings, "verify") as client:
        if client is not None:
            problems = list(client.post("/api/verify", {"project": config.id},
                                        timeout=LONG_REQUEST_SECONDS)["problems"])
        else:
            from codequarry.verify import verify_project

            problems = verify_project(settings, config)
    for problem in problems[:50]:
        print(problem)
    if problems:
        print(f"codequarry: {len(problems)} difference(s) between the index of {args.project} and "
              "its tree", file=sys.stderr)
        return 1
    print(f"{args.project}: the index equals a fresh index of the tree", file=sys.stderr)
    return 0


def cmd_daemon(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.daemon_lock import lock_for_daemon
    from codequarry.logs import configure_logging

    level = args.log_level if args.log_level != "warning" else "info"
    configure_logging(level, args.log_file)
    # the lock before the daemon's imports (~0.7 s): from then on a client that starts
    # sees a daemon starting and waits for it (daemon_phase)
    lock = lock_for_daemon(settings.lock_path)
    from codequarry.service import run_daemon

    code = run_daemon(settings, lock)
    # stopped cleanly (socket removed, PostgreSQL stopped, lock released): what is left is
    # the interpreter's own teardown, a garbage collection of every imported module's
    # objects (FastMCP, pydantic, ONNX Runtime) that took 0.5-1 s more, for nothing
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def cmd_mcp(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.bridge import load_target, run_bridge

    return run_bridge(load_target(settings.config_path))


def cmd_client_config(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.clientconfig import print_client_configs

    return print_client_configs(list(args.client))


def cmd_install_link(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.clientconfig import install_link

    return install_link(args.bin_dir)


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.config import write_starter_config

    path = write_starter_config(settings.config_path)
    print(f"wrote {path}; register repositories with: codequarry add PATH --project ID", file=sys.stderr)
    return 0


def cmd_service(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.units import service_command

    return service_command(args.action, settings, dry_run=args.dry_run)


def cmd_eval(args: argparse.Namespace, settings: Settings) -> int:
    from codequarry.evaluation import load_qrels, print_report, run_eval_command

    with store_access(settings, "eval") as client:
        if client is None:
            return run_eval_command(settings, args.qrels, args.project, args.mode or None, args.json,
                                    args.worst)
        queries = load_qrels(args.qrels)
        body = {"queries": [{"query": q.text, "relevant": [
                    {"path": r.path, "start_line": r.start_line, "end_line": r.end_line}
                    for r in q.relevant]} for q in queries],
                "projects": args.project, "modes": args.mode}
        report = client.post("/api/eval", body, timeout=LONG_REQUEST_SECONDS)
    report["worst"] = report["worst"][:args.worst]
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print_report(report, len(queries))
    return 0
