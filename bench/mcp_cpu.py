"""CPU per search_code call through the daemon's MCP socket (issue 13): the daemon's, the
PostgreSQL server's and the clients' own, measured apart, with wall-time p50/p95.

    python bench/mcp_cpu.py [--corpus medium] [--home prof] [--clients 10] [--searches 40]
                            [--daemon-code DIR] [--results NAME] [--tool NAME --arguments JSON]

A real `codequarry daemon` runs on the home (the corpus registered and indexed there as
mcp_bench.py does it, `codequarry_home(home, fresh=False)`); once the project is idle and
fully embedded, bench/mcp_load.py (its own process: N threads, one MCP session each over
HTTP/1.1) makes N x K distinct search_code calls (mcp_bench.distinct_queries, so the
daemon's result cache cannot make the figure; its counters are reported). CPU seconds of
the daemon and of PostgreSQL (live and reaped backends) are read before and after; CPU ms
per search is robust to a shared machine's load, wall times are not (the load average
is reported). `--daemon-code DIR`: the daemon imports the `codequarry` package from DIR
(e.g. `git archive main daemon | tar -x -C /tmp/main`, then DIR=/tmp/main/daemon) to
compare two versions on the same home, corpus and queries. `--tool NAME` (e.g.
list_projects, or ping: no tool at all) makes the same load call that tool instead, with
`--arguments` (JSON; for search_code added to each query's): the CPU per call of a tool
that does no search is what the transport, FastMCP and our wrappers cost (the figures
keep their names, "per search" meaning per call). `--profile FILE`: py-spy (installed
beside this Python, not a project dependency) samples the daemon during the load and
writes its collapsed stacks to FILE (its sampling costs the daemon some CPU: take CPU
figures from runs without it).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from codequarry.client import DaemonClient
from codequarry.config import load_settings
from codequarry.errors import CodequarryError
from codequarry.logs import configure_logging
from common import CORPORA, codequarry_home, corpus, emit, summary
from mcp_bench import distinct_queries, measured_load, postgres_pid
from search_bench import register

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))


def wait_idle(client: DaemonClient, timeout: float) -> None:
    deadline, calm = time.monotonic() + timeout, 0
    while calm < 3:
        if time.monotonic() > deadline:
            raise CodequarryError(f"the daemon was not idle and fully embedded within {timeout:.0f}s")
        time.sleep(2)
        try:
            projects = client.get("/api/status")["projects"]
        except (CodequarryError, OSError):
            continue
        idle = all(p["watching"] and p["pending_files"] == 0 and p["pending_events"] == 0
                   and p["vector_coverage"] >= 1.0 for p in projects)
        calm = calm + 1 if idle else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="medium", choices=sorted(CORPORA))
    parser.add_argument("--home", default="prof")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--searches", type=int, default=40)
    parser.add_argument("--daemon-code", help="directory holding the codequarry package the daemon runs")
    parser.add_argument("--results", default="mcp_cpu")
    parser.add_argument("--start-timeout", type=float, default=1800)
    parser.add_argument("--tool", default="search_code", help="the tool to call (ping: the MCP ping)")
    parser.add_argument("--arguments", default="{}", help="the tool's arguments, a JSON object")
    parser.add_argument("--profile", help="write py-spy's collapsed stacks of the daemon here")
    args = parser.parse_args()
    configure_logging("warning")
    name = args.corpus
    searching = args.tool == "search_code"
    queries = distinct_queries(corpus(name), args.clients * (args.searches + 1)) if searching else []
    with codequarry_home(args.home, fresh=False) as home:
        register(home / "config.toml", name)
        settings = load_settings()
        env = dict(os.environ)
        if args.daemon_code:
            env["PYTHONPATH"] = args.daemon_code
        with (home / "daemon.stderr").open("w") as errors:
            daemon = subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(home / "daemon.log")],
                                      stdout=subprocess.DEVNULL, stderr=errors, env=env)
        try:
            client = DaemonClient(settings.socket_path)
            wait_idle(client, args.start_timeout)
            pg = postgres_pid(settings)
            spy = None
            if args.profile:
                spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-p",
                                        str(daemon.pid), "-r", "200", "-f", "raw", "--nonblocking",
                                        "-o", args.profile], stdout=subprocess.DEVNULL)
                time.sleep(1)  # attached before the load starts
            try:
                result, daemon_cpu, pg_cpu = measured_load(
                    settings.socket_path, name, args.clients, args.searches, queries, daemon.pid, pg,
                    home, args.tool, args.arguments)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    spy.wait(60)
            cache = client.get("/api/health").get("search_cache")
        finally:
            daemon.terminate()
            daemon.wait(120)
    n = len(result["times"])
    per = {"daemon": daemon_cpu / n, "postgres": pg_cpu / n,
           "clients": result["client_cpu_seconds"] / n}
    figures: dict[str, Any] = {
        "corpus": name, "description": CORPORA[name][0], "tool": args.tool,
        "arguments": json.loads(args.arguments), "clients": args.clients, "searches": n,
        "daemon_code": args.daemon_code or "this checkout", "ms": summary(result["times"]),
        "searches_per_second": round(n / result["wall_seconds"], 1),
        # the daemon's first tool call since its start (wait_idle asks only the JSON routes)
        "first_call_ms": round(1000 * result["first_call_seconds"], 1),
        "cpu_ms_per_search": {k: round(1000 * v, 2) for k, v in per.items()},
        # two cores' worth of CPU over what the daemon and PostgreSQL spend per search
        "implied_capacity_per_second": round(2.0 / (per["daemon"] + per["postgres"]), 1),
        "search_cache": cache, "load_average": [round(x, 2) for x in os.getloadavg()]}
    cpu = figures["cpu_ms_per_search"]
    emit(args.results, figures,
         f"mcp_cpu {name} ({figures['daemon_code']}): {n} {args.tool} calls by {args.clients} clients, "
         f"p50/p95 {figures['ms']['p50']}/{figures['ms']['p95']} ms "
         f"(first call {figures['first_call_ms']} ms), CPU ms per call daemon {cpu['daemon']}, "
         f"postgres {cpu['postgres']}, clients {cpu['clients']}; capacity "
         f"~{figures['implied_capacity_per_second']}/s; load {figures['load_average']}")


if __name__ == "__main__":
    main()
