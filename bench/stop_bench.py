"""How long `codequarry daemon` takes to stop on SIGTERM, with and without an open MCP session.

Starts a real daemon (embedded PostgreSQL, the default local model) on a small project in
a private home, waits until it is idle and fully embedded, then `--runs` times per mode:
start it, open the session of the mode, send SIGTERM, wait for the process to exit.
Modes: `none` (no client), `socket` (the official MCP SDK over the unix socket, session
initialised and idle, its GET stream open), `bridge` (the same SDK through `codequarry mcp`).
Per run: SIGTERM -> process exit, SIGTERM -> the `daemon_stopped` log line, and the log
records at level error or above (each run has its own log file).

    python bench/stop_bench.py [--runs 5] [--modes none,socket,bridge] [--name stop]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from codequarry.client import DaemonClient
from codequarry.config import load_settings
from common import codequarry_home, emit

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
FILES = {f"pkg/mod{i}.py": f"def handler_{i}(request):\n    \"\"\"Handle request {i}.\"\"\"\n"
                           f"    return request.value * {i}\n" for i in range(5)}


def note(message: str) -> None:
    print(f"[stop_bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


@contextlib.asynccontextmanager
async def session(mode: str, socket_path: Path, cwd: Path, errlog: TextIO) -> AsyncIterator[None]:
    """An initialised MCP SDK session of `mode`, left open; its teardown errors ignored
    (the daemon is gone by then)."""
    if mode == "none":
        yield
        return
    stack = contextlib.AsyncExitStack()
    try:
        if mode == "socket":
            http = await stack.enter_async_context(httpx2.AsyncClient(
                transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)), timeout=30.0))
            read, write, *_ = await stack.enter_async_context(
                streamable_http_client("http://localhost/mcp", http_client=http))
        else:
            env = {k: os.environ[k] for k in
                   ("HOME", "CODEQUARRY_HOME", "CODEQUARRY_CONFIG", "XDG_RUNTIME_DIR")}
            params = StdioServerParameters(command=CODEQUARRY, args=["mcp"], cwd=cwd, env=env)
            read, write = await stack.enter_async_context(stdio_client(params, errlog=errlog))
        client = await stack.enter_async_context(ClientSession(read, write))
        await client.initialize()
        await anyio.sleep(0.3)  # the SDK opens its GET stream after `initialized`
        yield
    finally:
        with anyio.move_on_after(10, shield=True), contextlib.suppress(BaseException):
            await stack.aclose()


def log_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.startswith("{")]


def idle(client: DaemonClient) -> bool:
    status = client.get("/api/status")
    entry = status["projects"][0]
    return bool(entry["files"] == len(FILES) and entry["pending_files"] == 0
                and entry["vector_coverage"] >= 1.0 and status["daemon"].get("model"))


async def stop_with_session(mode: str, process: subprocess.Popen[bytes], socket_path: Path, repo: Path,
                            errlog: TextIO) -> tuple[float, float]:
    """SIGTERM with the session open: (wall time of the signal, seconds to the exit)."""
    async with session(mode, socket_path, repo, errlog):
        signalled_wall, signalled = time.time(), time.perf_counter()
        process.send_signal(signal.SIGTERM)
        await anyio.to_thread.run_sync(process.wait, 60)
        return signalled_wall, time.perf_counter() - signalled


def one_run(mode: str, home: Path, run: int, repo: Path, errlog: TextIO) -> dict[str, Any]:
    settings = load_settings()
    client = DaemonClient(settings.socket_path)
    log = home / "logs" / f"daemon-{mode}-{run}.log"
    process = subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(log)], env=dict(os.environ),
                               stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        while not client.running() or not idle(client):  # idle: nothing to drain
            if process.poll() is not None:
                raise RuntimeError(f"the daemon exited with {process.returncode}: see {log}")
            time.sleep(0.05)
        signalled_wall, exited = anyio.run(stop_with_session, mode, process, settings.socket_path,
                                           repo, errlog)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    records = log_records(log)
    stopped = next(datetime.fromisoformat(r["timestamp"]).timestamp() for r in records
                   if r.get("event") == "daemon_stopped") - signalled_wall
    errors = [r["event"][:80] for r in records if r.get("level") in ("error", "critical")]
    return {"exit": round(exited, 3), "daemon_stopped": round(stopped, 3),
            "after_daemon_stopped": round(exited - stopped, 3), "error_records": errors,
            "returncode": process.returncode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--modes", default="none,socket,bridge")
    parser.add_argument("--name", default="stop", help="results file bench/results/NAME.json")
    args = parser.parse_args()
    with codequarry_home("stop") as home, open(os.devnull, "w") as errlog:
        repo = home / "repo"
        for rel, text in FILES.items():
            (repo / rel).parent.mkdir(parents=True, exist_ok=True)
            (repo / rel).write_text(text)
        (home / "logs").mkdir()
        (home / "config.toml").write_text(f'[[projects]]\nid = "demo"\npath = "{repo}"\n')
        figures: dict[str, Any] = {"runs": args.runs, "load_before": os.getloadavg()}
        for mode in args.modes.split(","):
            runs = []
            for run in range(args.runs):
                runs.append(one_run(mode, home, run, repo, errlog))
                note(f"{mode} #{run}: {runs[-1]}")
            median = {key: round(statistics.median(r[key] for r in runs), 3)
                      for key in ("exit", "daemon_stopped")}
            figures[mode] = {"exit_p50_s": median["exit"], "exit_max_s": max(r["exit"] for r in runs),
                             "daemon_stopped_p50_s": median["daemon_stopped"],
                             "runs_with_error_records": sum(bool(r["error_records"]) for r in runs),
                             "runs": runs}
        figures["load_after"] = os.getloadavg()
    line = "  ".join(f"{m}: exit p50 {figures[m]['exit_p50_s']}s max {figures[m]['exit_max_s']}s, "
                     f"errors in {figures[m]['runs_with_error_records']}/{args.runs}"
                     for m in args.modes.split(","))
    load = f"  (load {figures['load_before'][0]:.2f} -> {figures['load_after'][0]:.2f})"
    emit(args.name, figures, line + load)


if __name__ == "__main__":
    main()
