"""Bridge start-up: spawn `codequarry mcp` -> `initialize` answered, as an MCP client sees it.

Starts one `codequarry daemon` in a private home (no projects: idle), then N times spawns
the bridge with the minimal environment MCP clients pass (HOME, PATH, SHELL, TERM, USER,
LOGNAME + the bench's CODEQUARRY_HOME/CODEQUARRY_CONFIG), writes `initialize` and times
the answer; also how long the bridge takes to exit once stdin closes, the tokens of a
`tools/list` answer (characters / 4) and the bridge's import time.

    python bench/bridge_bench.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from codequarry.config import load_settings
from codequarry.errors import CodequarryError
from common import codequarry_home, emit, summary

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
INITIALIZE = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {},
    "clientInfo": {"name": "bridge-bench", "version": "1"}}}


def client_env() -> dict[str, str]:
    env = {key: os.environ[key] for key in ("HOME", "PATH", "SHELL", "TERM", "USER", "LOGNAME")
           if key in os.environ}
    return env | {k: os.environ[k] for k in ("CODEQUARRY_HOME", "CODEQUARRY_CONFIG")}


def send(process: subprocess.Popen[bytes], message: dict[str, Any]) -> None:
    assert process.stdin is not None
    process.stdin.write(json.dumps(message).encode() + b"\n")
    process.stdin.flush()


def answer(process: subprocess.Popen[bytes], request_id: int) -> tuple[dict[str, Any], bytes]:
    assert process.stdout is not None
    while True:
        line = process.stdout.readline()
        if not line:
            raise CodequarryError("the bridge closed stdout before answering")
        message = json.loads(line)
        if message.get("id") == request_id:
            return message, line


def one_run(want_tools: bool) -> tuple[float, float, int]:
    """(seconds to the initialize answer, seconds to exit after stdin closed, tools/list chars)."""
    started = time.perf_counter()
    process = subprocess.Popen([CODEQUARRY, "mcp"], env=client_env(), stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    send(process, INITIALIZE)
    answer(process, 1)
    initialized = time.perf_counter() - started
    chars = 0
    if want_tools:
        send(process, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        send(process, {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}})
        _, line = answer(process, 2)
        chars = len(line.decode().strip())
    assert process.stdin is not None
    closing = time.perf_counter()
    process.stdin.close()
    process.wait(30)
    return initialized, time.perf_counter() - closing, chars


def import_ms() -> float:
    """Cumulative import time of the bridge's modules (python -X importtime), in ms."""
    code = "import codequarry.entry, codequarry.bridge"
    done = subprocess.run([sys.executable, "-X", "importtime", "-c", code],
                          capture_output=True, text=True, check=True)
    total = sum(int(m.group(1)) for m in re.finditer(r"import time:\s+(\d+) \|", done.stderr))
    return round(total / 1000, 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    with codequarry_home("bridge") as home:
        settings = load_settings()
        log = (home / "daemon.stderr").open("wb")
        daemon = subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(home / "daemon.log")],
                                  stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        try:
            deadline = time.monotonic() + 300
            from codequarry.client import DaemonClient

            while not DaemonClient(settings.socket_path).running():
                if daemon.poll() is not None or time.monotonic() > deadline:
                    raise CodequarryError(f"the daemon did not start; see {home / 'daemon.log'}")
                time.sleep(0.5)
            one_run(False)  # warm the page cache once
            runs = [one_run(want_tools=i == 0) for i in range(args.runs)]
        finally:
            daemon.send_signal(signal.SIGTERM)
            daemon.wait(60)
            log.close()
    init = [r[0] for r in runs]
    exits = [r[1] for r in runs]
    chars = runs[0][2]
    figures = {"spawn_to_initialize_ms": summary(init), "stdin_close_to_exit_ms": summary(exits),
               "tools_list_chars": chars, "tools_list_tokens": chars // 4, "import_ms": import_ms()}
    s = figures["spawn_to_initialize_ms"]
    emit("bridge", figures, f"bridge: spawn->initialize p50 {s['p50']} ms, p95 {s['p95']} ms "
         f"(n={len(init)}); "
         f"exit after stdin closes p95 {figures['stdin_close_to_exit_ms']['p95']} ms; "
         f"tools/list {chars} chars ~{chars // 4} tokens; imports {figures['import_ms']} ms")


if __name__ == "__main__":
    main()
