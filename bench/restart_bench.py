"""A daemon restart as MCP clients live it: SIGTERM, then `codequarry daemon` again.

Starts one idle `codequarry daemon` in a private home and connects bridge A (`codequarry
mcp`, initialized). Each run: SIGTERM to the daemon; 0.2 s later a new bridge B sends
`initialize`; 0.3 s later A calls `get_status`; as soon as the old daemon has exited a new
`codequarry daemon` is started (what `systemctl restart` does). Times are seconds from
the SIGTERM: the old daemon's exit, the new one answering its health route, and B's and
A's answers with whether each was a result or an error. --no-restart: one SIGTERM and no
new daemon (when do the clients get their errors).

    python bench/restart_bench.py [--runs 3] [--no-restart]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from bridge_bench import CODEQUARRY, INITIALIZE, answer, client_env, send
from codequarry.client import DaemonClient
from codequarry.config import load_settings
from codequarry.errors import CodequarryError
from common import codequarry_home, emit, summary


def start_daemon(home: Path) -> subprocess.Popen[bytes]:
    log = (home / "daemon.stderr").open("ab")
    return subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(home / "daemon.log")],
                            stdin=subprocess.DEVNULL, stdout=log, stderr=log)


def wait_serving(client: DaemonClient, daemon: subprocess.Popen[bytes], seconds: float = 300) -> None:
    deadline = time.monotonic() + seconds
    while True:
        try:
            if client.running():
                return
        except CodequarryError:
            pass
        if daemon.poll() is not None or time.monotonic() > deadline:
            raise CodequarryError("the daemon did not start; see its log")
        time.sleep(0.02)


def bridge(home: Path, name: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([CODEQUARRY, "mcp"], env=client_env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=(home / f"{name}.err").open("ab"))


def timed_answer(process: subprocess.Popen[bytes], request_id: int, t0: float,
                 out: dict[str, Any], key: str) -> None:
    message, _ = answer(process, request_id)
    out[key] = {"seconds": round(time.perf_counter() - t0, 2),
                "outcome": "result" if "result" in message else
                f"error: {message.get('error', {}).get('message', '')[:90]}"}


def one_restart(home: Path, daemon: subprocess.Popen[bytes], a: subprocess.Popen[bytes],
                request_id: int, client: DaemonClient,
                restart: bool = True) -> tuple[dict[str, Any], subprocess.Popen[bytes]]:
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    b = bridge(home, "b")
    send(b, INITIALIZE)
    threads = [threading.Thread(target=timed_answer, args=(b, 1, t0, out, "new_client_initialize"))]
    threads[0].start()
    time.sleep(0.1)
    send(a, {"jsonrpc": "2.0", "id": request_id, "method": "tools/call",
             "params": {"name": "get_status", "arguments": {}}})
    threads.append(threading.Thread(target=timed_answer, args=(a, request_id, t0, out,
                                                               "connected_client_call")))
    threads[1].start()
    daemon.wait(60)
    out["old_daemon_exited"] = round(time.perf_counter() - t0, 2)
    fresh = daemon
    if restart:
        fresh = start_daemon(home)
        wait_serving(client, fresh)
        out["new_daemon_answers"] = round(time.perf_counter() - t0, 2)
    for thread in threads:
        thread.join(90)
    assert b.stdin is not None
    b.stdin.close()
    b.wait(10)
    return out, fresh


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--results", default="restart")
    parser.add_argument("--no-restart", action="store_true",
                        help="one run: SIGTERM only, no new daemon (the clients' errors, and when)")
    args = parser.parse_args()
    with codequarry_home("restart") as home:
        client = DaemonClient(load_settings().socket_path)
        daemon = start_daemon(home)
        runs: list[dict[str, Any]] = []
        wait_serving(client, daemon)
        a = bridge(home, "a")
        try:
            send(a, INITIALIZE)
            answer(a, 1)
            send(a, {"jsonrpc": "2.0", "method": "notifications/initialized"})
            for i in range(1 if args.no_restart else args.runs):
                run, daemon = one_restart(home, daemon, a, 100 + i, client, not args.no_restart)
                run["load_average"] = [round(x, 2) for x in os.getloadavg()]
                runs.append(run)
                print(json.dumps(run), flush=True)
        finally:
            assert a.stdin is not None
            a.stdin.close()
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)

    def times(key: str) -> list[float]:
        return [r[key]["seconds"] for r in runs if key in r]

    answered = {key: sum(1 for r in runs if r.get(key, {}).get("outcome") == "result")
                for key in ("new_client_initialize", "connected_client_call")}
    figures = {"runs": runs, "answered": answered,
               "new_client_initialize_s": summary(times("new_client_initialize"), 1.0),
               "connected_client_call_s": summary(times("connected_client_call"), 1.0)}
    emit(args.results, figures,
         f"restart: new client answered {answered['new_client_initialize']}/{len(runs)}, "
         f"connected client answered {answered['connected_client_call']}/{len(runs)}; "
         f"old daemon exits at {[r['old_daemon_exited'] for r in runs]} s, new answers at "
         f"{[r.get('new_daemon_answers') for r in runs]} s after SIGTERM")


if __name__ == "__main__":
    main()
