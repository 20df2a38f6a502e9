"""The load generator of mcp_bench.py, run as its own process: N concurrent MCP clients
over the daemon's unix socket, each a thread with a plain HTTP/1.1 keep-alive connection
speaking JSON-RPC (streamable HTTP: initialize, notifications/initialized, tools/call),
so the clients' CPU is small, measured (this process's user + system time) and apart
from the daemon's.

    python bench/mcp_load.py SOCKET PROJECT --clients 10 --searches 40 < queries.txt
    python bench/mcp_load.py SOCKET PROJECT --tool list_projects [--arguments '{}'] < /dev/null

search_code (the default): reads one query per line on stdin; client c makes calls c*K ..
c*K+K-1 of that list, so with at least N*K lines every timed query is distinct;
`--arguments` (a JSON object) is added to each call's {"query", "project"}. Any other
`--tool` is called K times per client with `--arguments` as they are (stdin is not read):
the same load on a tool that does no search shows what the transport and FastMCP cost
per call. `--tool ping` sends the MCP `ping` request instead of a tool call (the
session's floor without any tool machinery). Every session initialises and makes one
untimed call first (for search_code an extra query from the end of the list); all
clients then start together. Prints one JSON object: per-call seconds, wall seconds and
this process's CPU, and how long the first session's first call took (not timed with the
others: on a daemon no client has called yet, what its first tool call costs).
`--wait-for-go`: once every session is warm, print `warm` on a line of its own and wait
for SIGUSR1 before the timed calls (so a caller measuring the daemon's CPU leaves the
sessions' set-up and first calls out of it).
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
import signal
import socket
import sys
import threading
import time
from typing import Any

PROTOCOL = "2025-06-18"


class _Unix(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=120)
        self._path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self._path)
        self.sock = sock


class Session:
    """One MCP session on its own keep-alive connection."""

    def __init__(self, socket_path: str) -> None:
        self.connection = _Unix(socket_path)
        self.session_id: str | None = None
        self.next_id = 0

    def _post(self, message: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream",
                   "MCP-Protocol-Version": PROTOCOL}
        if self.session_id:
            headers["Mcp-Session-Id"] = self.session_id
        self.connection.request("POST", "/mcp", body=json.dumps(message).encode(), headers=headers)
        response = self.connection.getresponse()
        body = response.read()
        if response.status >= 400:
            raise RuntimeError(f"HTTP {response.status}: {body[:300]!r}")
        self.session_id = response.getheader("mcp-session-id") or self.session_id
        if "id" not in message or not body:
            return None
        if response.getheader("content-type", "").startswith("text/event-stream"):
            for line in body.decode().splitlines():
                if line.startswith("data:"):
                    data = json.loads(line[5:])
                    if data.get("id") == message["id"]:
                        return data
            raise RuntimeError("no JSON-RPC answer in the event stream")
        return json.loads(body)

    def call(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        answer = self._post({"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params})
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer["result"]

    def initialize(self) -> None:
        self.call("initialize", {"protocolVersion": PROTOCOL, "capabilities": {},
                                 "clientInfo": {"name": "mcp_load", "version": "1"}})
        self._post({"jsonrpc": "2.0", "method": "notifications/initialized"})

    def search(self, query: str, project: str, extra: dict[str, Any]) -> None:
        result = self.call("tools/call", {"name": "search_code",
                                          "arguments": {"query": query, "project": project, **extra}})
        content = result.get("structuredContent") or {}
        if result.get("isError") or not content.get("results"):
            raise RuntimeError(f"search_code({query!r}) failed or found nothing: {str(result)[:300]}")

    def tool(self, name: str, arguments: dict[str, Any]) -> None:
        if name == "ping":
            self.call("ping", {})
            return
        result = self.call("tools/call", {"name": name, "arguments": arguments})
        if result.get("isError"):
            raise RuntimeError(f"{name} failed: {str(result)[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("project")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--searches", type=int, default=40, help="timed calls per client")
    parser.add_argument("--tool", default="search_code", help="the tool to call, or ping")
    parser.add_argument("--arguments", type=json.loads, default={}, help="a JSON object")
    parser.add_argument("--wait-for-go", action="store_true", help="print warm, wait for SIGUSR1")
    args = parser.parse_args()
    if args.wait_for_go:  # blocked before any thread starts, so every thread inherits it
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
    searching = args.tool == "search_code"
    queries = [line.strip() for line in sys.stdin if line.strip()] if searching else []
    needed = args.clients * args.searches + args.clients
    if searching and len(queries) < needed:
        raise SystemExit(f"need {needed} distinct queries, got {len(queries)}")

    def call(session: Session, index: int) -> None:
        """Call number `index` of the list (negative: an untimed one from its end)."""
        if searching:
            session.search(queries[index], args.project, args.arguments)
        else:
            session.tool(args.tool, args.arguments)

    sessions = [Session(args.socket) for _ in range(args.clients)]
    first_call = 0.0
    for index, session in enumerate(sessions):
        session.initialize()
        began = time.perf_counter()
        call(session, -1 - index)  # untimed (the first: a fresh daemon's first tool call)
        first_call = first_call or time.perf_counter() - began
    if args.wait_for_go:
        print("warm", flush=True)
        signal.sigwait({signal.SIGUSR1})
    times: list[list[float]] = [[] for _ in sessions]
    errors: list[str] = []
    start = threading.Barrier(args.clients + 1)

    def run(client: int) -> None:
        start.wait()
        try:
            for index in range(args.searches):
                began = time.perf_counter()
                call(sessions[client], client * args.searches + index)
                times[client].append(time.perf_counter() - began)
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    threads = [threading.Thread(target=run, args=(c,)) for c in range(args.clients)]
    for thread in threads:
        thread.start()
    before = resource.getrusage(resource.RUSAGE_SELF)
    start.wait()
    began = time.perf_counter()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - began
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    json.dump({"times": [t for per in times for t in per], "wall_seconds": wall,
               "client_cpu_seconds": cpu, "first_call_seconds": first_call, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
