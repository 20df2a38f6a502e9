"""The load generator of mcp_bench.py, run as its own process: N concurrent MCP clients
over the daemon's unix socket, each a thread with a plain HTTP/1.1 keep-alive connection
speaking JSON-RPC (streamable HTTP: initialize, notifications/initialized, tools/call),
so the clients' CPU is small, measured (this process's user + system time) and apart
from the daemon's.

    python bench/mcp_load.py SOCKET PROJECT --clients 10 --searches 40 < queries.txt

Reads one query per line on stdin; client c makes calls c*K .. c*K+K-1 of that list, so
with at least N*K lines every timed query is distinct. Every session initialises and makes
one untimed call first (an extra query from the end of the list); all clients then start
together. Prints one JSON object: per-call seconds, wall seconds and this process's CPU.
"""

from __future__ import annotations

import argparse
import http.client
import json
import resource
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

    def search(self, query: str, project: str) -> None:
        result = self.call("tools/call", {"name": "search_code",
                                          "arguments": {"query": query, "project": project}})
        content = result.get("structuredContent") or {}
        if result.get("isError") or not content.get("results"):
            raise RuntimeError(f"search_code({query!r}) failed or found nothing: {str(result)[:300]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("socket")
    parser.add_argument("project")
    parser.add_argument("--clients", type=int, default=10)
    parser.add_argument("--searches", type=int, default=40)
    args = parser.parse_args()
    queries = [line.strip() for line in sys.stdin if line.strip()]
    needed = args.clients * args.searches + args.clients
    if len(queries) < needed:
        raise SystemExit(f"need {needed} distinct queries, got {len(queries)}")
    sessions = [Session(args.socket) for _ in range(args.clients)]
    for index, session in enumerate(sessions):
        session.initialize()
        session.search(queries[-1 - index], args.project)  # untimed
    times: list[list[float]] = [[] for _ in sessions]
    errors: list[str] = []
    start = threading.Barrier(args.clients + 1)

    def run(client: int) -> None:
        start.wait()
        try:
            for index in range(args.searches):
                query = queries[client * args.searches + index]
                began = time.perf_counter()
                sessions[client].search(query, args.project)
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
               "client_cpu_seconds": cpu, "errors": errors}, sys.stdout)


if __name__ == "__main__":
    main()
