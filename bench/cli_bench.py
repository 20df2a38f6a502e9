"""`codequarry search` as a person types it, with the daemon up (issue 13: p50 <= 150 ms),
against a bare `python -c pass`, `rg QUERY` on the same tree and the full CLI, same run.

    python bench/cli_bench.py [--corpus small] [--home cli] [--runs 15] [--query request_response]
                              [--embedder local|standin]

`--corpus files3k` (about 3,000 files) is the tree of issue 13's re-index and restart
targets. Its ~82k chunks would keep the local model busy for half an hour or more, and a
figure taken while a backlog embeds says nothing, so `--embedder standin` serves fast fake vectors
(tests/ollama_standin.py, 32 dimensions, in this process) as an Ollama model: the files
are registered, chunked and every chunk has a vector, as in a real index, and the timed
commands (re-index, restart) load no local model. Search figures are then not those
of the local model.

A real `codequarry daemon` serves the corpus (private home, stopped with SIGTERM at the
end). Then, in rounds (every command once per round, in turn, so a busy machine slows all
of them alike), each command runs as a subprocess with its output captured (a pipe, as a
script or an agent reads it), timed from spawn to exit:

- `python -c pass`: the interpreter's own start, the floor of any Python CLI;
- `codequarry search QUERY --project P` (the installed script: codequarry.fastcli);
- the same search through the full CLI (`python -c "from codequarry.cli import main; main()"`),
  the path every search took before the fast front door;
- `codequarry status --json`, `codequarry --help`;
- `rg QUERY` over the corpus (ripgrep: `apt-get install ripgrep`; skipped if missing);
- `codequarry index TREE --project P` of the unchanged, registered tree (issue 13: <= 2x
  `git status`), the same through the full CLI, and `git status --porcelain` on the tree.

Then the catch-up after a restart with nothing changed (issue 13: <= 5x `git status`,
timed from process start): `--restarts` times, a `codequarry daemon` is started and timed
from spawn until its socket answers, and until every project is watched, compared with
its tree (not scanning) and has nothing pending; then stopped with SIGTERM.

It prints medians (and p95) in ms and the ratios to `python -c pass` and to `rg`, and the
imports of the fast and the full search (`python -X importtime`: module count and the
sum of top-level cumulative import times, in ms).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import tomlkit

from codequarry.config import Settings, load_settings
from codequarry.errors import CodequarryError
from codequarry.logs import configure_logging
from codequarry.quickclient import request
from common import CORPORA, codequarry_home, emit, summary
from mcp_bench import running_daemon
from search_bench import positive, register

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.ollama_standin import OllamaStandIn

TARGET_P50_MS = 150.0
STANDIN_MODEL, STANDIN_DIMS = "standin", 32
CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
FULL_CLI = [sys.executable, "-c", "import sys; from codequarry.cli import main; main(sys.argv[1:])"]


def time_commands(commands: dict[str, list[str]], runs: int, cwd: Path) -> dict[str, list[float]]:
    """Seconds of each run of each command, interleaved round by round after one warm-up."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    for round_ in range(runs + 1):
        for name, argv in commands.items():
            started = time.perf_counter()
            done = subprocess.run(argv, cwd=cwd, capture_output=True, check=False)
            elapsed = time.perf_counter() - started
            if done.returncode not in (0, 1) or (name != "rg" and done.returncode != 0):
                raise SystemExit(f"{name} failed ({done.returncode}): {done.stderr.decode()[-500:]}")
            if round_:
                times[name].append(elapsed)
    return times


def catch_up(settings: Settings, log_dir: Path, restarts: int, timeout: float = 300,
             env: dict[str, str] | None = None) -> dict[str, Any]:
    """Seconds from spawning `codequarry daemon` to its socket answering and to every project
    being watched, reconciled and idle, over `restarts` starts."""
    answering: list[float] = []
    caught_up: list[float] = []
    socket = str(settings.socket_path)
    for _ in range(restarts):
        with (log_dir / "restart.stderr").open("ab") as stderr:
            started = time.perf_counter()
            process = subprocess.Popen([CODEQUARRY, "daemon"], stdin=subprocess.DEVNULL,
                                       stdout=stderr, stderr=stderr, env=env)
            first: float | None = None
            try:
                while True:
                    if process.poll() is not None or time.perf_counter() - started > timeout:
                        raise CodequarryError("the daemon exited or did not catch up; see restart.stderr")
                    try:
                        projects = request(socket, "GET", "/api/status", None, timeout=10)["projects"]
                    except CodequarryError:
                        time.sleep(0.01)
                        continue
                    now = time.perf_counter() - started
                    first = first if first is not None else now
                    if projects and all(p["watching"] and not p.get("scanning") and p["pending_files"] == 0
                                        and p["pending_events"] == 0 for p in projects):
                        answering.append(first)
                        caught_up.append(now)
                        break
                    time.sleep(0.01)
            finally:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
    return {"socket_answers_s": summary(answering, 1.0), "caught_up_s": summary(caught_up, 1.0)}


def use_standin(config_path: Path, url: str) -> None:
    """Point the home's [embedder] at the stand-in (its port changes every run; the model
    id does not, so vectors of an earlier run stay valid)."""
    document = tomlkit.parse(config_path.read_text(encoding="utf-8"))
    document["embedder"] = {"kind": "ollama", "model": STANDIN_MODEL, "url": url,
                            "dims": STANDIN_DIMS, "batch_size": 256}
    config_path.write_text(tomlkit.dumps(document), encoding="utf-8")


def imports(argv: list[str]) -> dict[str, Any]:
    """Modules imported by one run and the sum of their top-level cumulative times."""
    done = subprocess.run([argv[0], "-X", "importtime", *argv[1:]], capture_output=True, text=True,
                          check=True)
    modules, top_us = 0, 0
    for line in done.stderr.splitlines():
        parts = line.split("|")
        if not line.startswith("import time:") or len(parts) != 3 or "cumulative" in line:
            continue
        modules += 1
        if not parts[2].startswith("  "):  # nested imports are indented
            top_us += int(parts[1])
    return {"modules": modules, "import_ms": round(top_us / 1000, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="small", choices=sorted(CORPORA), help="default: small")
    parser.add_argument("--home", default="cli", help="bench home under $CQ_BENCH_DIR/homes (reused)")
    parser.add_argument("--runs", type=positive, default=15, help="timed rounds (default 15)")
    parser.add_argument("--query", default="request_response",
                        help="the search (and the rg pattern); default: request_response")
    parser.add_argument("--restarts", type=int, default=3, help="daemon restarts timed (0: none)")
    parser.add_argument("--start-timeout", type=float, default=900)
    parser.add_argument("--embedder", choices=["local", "standin"], default="local",
                        help="standin: fast fake vectors (see the module doc)")
    parser.add_argument("--results", default="cli", help="bench/results/NAME.json (default: cli)")
    args = parser.parse_args()
    configure_logging("warning")
    name = args.corpus
    load_before = os.getloadavg()
    with codequarry_home(args.home, fresh=False) as home, contextlib.ExitStack() as stack:
        register(home / "config.toml", name)
        if args.embedder == "standin":
            standin = stack.enter_context(OllamaStandIn(STANDIN_MODEL, STANDIN_DIMS))
            use_standin(home / "config.toml", standin.url)
        settings = load_settings()
        tree = settings.config.project(name).path
        search = ["search", args.query, "--project", name]
        commands = {"python -c pass": [sys.executable, "-c", "pass"],
                    "codequarry search": [CODEQUARRY, *search],
                    "full CLI search": [*FULL_CLI, *search],
                    "codequarry status --json": [CODEQUARRY, "status", "--json"],
                    "codequarry --help": [CODEQUARRY, "--help"]}
        rg = shutil.which("rg")
        if rg:
            commands["rg"] = [rg, args.query, str(tree)]
        commands |= {"codequarry index": [CODEQUARRY, "index", str(tree), "--project", name],
                     "full CLI index": [*FULL_CLI, "index", str(tree), "--project", name],
                     "git status": ["git", "-C", str(tree), "status", "--porcelain"]}
        with running_daemon(settings, home, args.start_timeout):
            times = time_commands(commands, args.runs, tree)
            import_figures = {"codequarry search": imports([sys.executable, "-m", "codequarry.fastcli",
                                                            *search]),
                              "full CLI search": imports([*FULL_CLI, *search])}
        # with and (alternately) without importing the MCP server during the PostgreSQL start
        # (codequarry.warmup), so both see the same machine
        runs: dict[str, dict[str, list[float]]] = {"on": {}, "off": {}}
        for _ in range(args.restarts):
            for variant, env in (("on", None), ("off", os.environ | {"CODEQUARRY_IMPORT_WARMUP": "0"})):
                for key, figure in catch_up(settings, home, 1, env=env).items():
                    runs[variant].setdefault(key, []).append(figure["p50"])
        restart = {k: summary(v, 1.0) for k, v in runs["on"].items()} if args.restarts else None
        restart_serial = {k: summary(v, 1.0) for k, v in runs["off"].items()} if args.restarts else None
    medians = {k: statistics.median(v) for k, v in times.items()}
    git = medians["git status"]
    base = medians["python -c pass"]
    figures: dict[str, Any] = {
        "corpus": name, "description": CORPORA[name][0], "query": args.query, "runs": args.runs,
        "embedder": args.embedder, "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "ms": {k: summary(v) for k, v in times.items()},
        "ratio_to_python": {k: round(m / base, 2) for k, m in medians.items()},
        "imports": import_figures, "target_p50_ms": TARGET_P50_MS,
        "files": int(subprocess.run(["git", "-C", str(tree), "ls-files"], capture_output=True, text=True,
                                    check=True).stdout.count("\n")),
        "reindex_ratio_to_git_status": {k: round(medians[k] / git, 2)
                                        for k in ("codequarry index", "full CLI index")},
        "restart": restart, "restart_without_import_warmup": restart_serial,
        "restart_ratio_to_git_status": {k: round(v["p50"] / git, 1) for k, v in restart.items()}
        if restart else None,
        "meets_target": medians["codequarry search"] * 1000 <= TARGET_P50_MS}
    if rg:
        figures["ratio_to_rg"] = {k: round(m / medians["rg"], 2) for k, m in medians.items()}
    fast, full = medians["codequarry search"] * 1000, medians["full CLI search"] * 1000
    line = (f"cli {name}: codequarry search p50 {fast:.0f} ms = {fast / base / 1000:.1f}x python -c pass"
            + (f", {medians['codequarry search'] / medians['rg']:.1f}x rg" if rg else "")
            + f"; full CLI {full:.0f} ms ({full / fast:.1f}x the fast path); --help "
            f"{medians['codequarry --help'] * 1000:.0f} ms (target p50 <= {TARGET_P50_MS:g} ms); "
            f"unchanged index {figures['reindex_ratio_to_git_status']['codequarry index']}x git status "
            f"(full CLI {figures['reindex_ratio_to_git_status']['full CLI index']}x, target 2x)"
            + (f"; restart caught up {figures['restart_ratio_to_git_status']['caught_up_s']}x git status "
               "(target 5x)" if restart else "")
            + f"; load average {figures['load_average_before'][0]} -> {figures['load_average_after'][0]}")
    emit(args.results, figures, line)


if __name__ == "__main__":
    main()
