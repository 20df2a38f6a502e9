"""search_code round-trip latency through the daemon's MCP unix socket (and, with --sdk,
the official SDK client and the `codequarry mcp` stdio bridge), with 1 and with N
concurrent clients, next to the same searches in-process (issue 13 target: socket p95
<= 100 ms with 10 clients, every query distinct, clients' CPU measured apart).

    python bench/mcp_bench.py [--corpus mcp50k] [--home search] [--clients 10] [--searches 40] [--sdk]

Every timed query is distinct (`distinct_queries`: the 42 queries of search_bench.py, then
lone identifiers defined in the corpus and those questions narrowed by an identifier), so
no cache can make the figure; the daemon's result-cache hit rate, if it has one, is
reported apart (`/api/health`).

Socket load (the headline figure): the clients run in their own process (bench/mcp_load.py:
threads with plain HTTP/1.1 keep-alive connections speaking JSON-RPC), whose CPU time is
reported apart from the daemon's and PostgreSQL's over the same interval.

1. The corpus (~50k chunks) is a project of the home shared with search_bench.py
   (`codequarry_home(home, fresh=False)`): its numpy chunks are already in the embedding
   cache when the huge corpus was indexed there first. It is brought up to date in this
   process (nothing to do on a second run), then ANALYZEd.
2. In-process: the product's Searcher in this process (query embedding included, as the
   daemon does it), one warm-up pass, then 1 client x K searches and N tasks x K.
3. A real `codequarry daemon` subprocess on the same home (stopped with SIGTERM at the
   end, also on failure), once it answers and every project is idle and fully embedded.
   Socket: N official MCP SDK clients (streamable HTTP over the unix socket); bridge: N
   SDK stdio clients, each running its own `codequarry mcp`. Every session initialises
   and makes one untimed search, all wait for each other, then each makes K timed
   `search_code` calls (the queries of search_bench.py, each client starting at a
   different one), timed from call to parsed result. All clients run as tasks in this
   one process, so the client-side work (JSON, pydantic) is part of the round trip.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
from mcp import ClientSession
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.client.streamable_http import streamable_http_client

from codequarry.client import DaemonClient
from codequarry.config import Settings, load_settings
from codequarry.errors import CodequarryError
from codequarry.logs import configure_logging
from codequarry.runtime import open_runtime
from codequarry.search import SearchRequest
from common import CORPORA, codequarry_home, corpus, emit, rss_mb, summary
from search_bench import QUERIES, index_projects, positive, register

CODEQUARRY = str(Path(sys.executable).with_name("codequarry"))
TARGET_SOCKET_P95_MS = 100.0
Opener = Callable[[], Any]  # an async context manager yielding an initialised ClientSession


def distinct_queries(tree: Path, count: int) -> list[str]:
    """`count` distinct queries: QUERIES, then (deterministically shuffled) identifiers
    defined in the corpus, alone (a third) or narrowing one of the questions."""
    names: set[str] = set()
    for path in sorted(tree.rglob("*.py")):
        names.update(re.findall(r"^\s*(?:def|class) ([A-Za-z_][A-Za-z0-9_]{3,})", path.read_text(
            errors="replace"), re.MULTILINE))
    identifiers = sorted(names)
    random.Random(13).shuffle(identifiers)
    out = list(dict.fromkeys(QUERIES))
    for index, name in enumerate(identifiers):
        if len(out) >= count:
            break
        out.append(name if index % 3 == 0 else f"{QUERIES[index % len(QUERIES)]} {name}")
    if len(out) < count:
        raise CodequarryError(f"the corpus yields only {len(out)} distinct queries, {count} needed")
    return out[:count]


QUERY_LIST: list[str] = list(QUERIES)  # replaced by distinct_queries() in main()
_used = 0


def take_queries(count: int) -> list[str]:
    """The next `count` queries of QUERY_LIST: no query is asked twice in a run."""
    global _used
    if _used + count > len(QUERY_LIST):
        raise CodequarryError(f"out of distinct queries ({len(QUERY_LIST)})")
    _used += count
    return QUERY_LIST[_used - count:_used]


async def run_clients(clients: int, searches: int,
                      search: Callable[[int, str], Awaitable[None]]) -> list[float]:
    """`clients` concurrent loops of `searches` timed calls of `search(client, query)`."""
    times: list[float] = []
    for client, query in enumerate(take_queries(clients)):
        await search(client, query)  # warm-up
    async with anyio.create_task_group() as tasks:
        for client in range(clients):
            tasks.start_soon(_client_loop, client, take_queries(searches), search, times)
    return times


async def _client_loop(client: int, queries: list[str], search: Callable[[int, str], Awaitable[None]],
                       times: list[float]) -> None:
    for query in queries:
        started = time.perf_counter()
        await search(client, query)
        times.append(time.perf_counter() - started)


# ---- in-process ----------------------------------------------------------------------


async def in_process(settings: Settings, name: str, clients: int, searches: int) -> dict[str, Any]:
    async with open_runtime(settings) as runtime:
        await runtime.embedder.start()
        index = (await index_projects(runtime, [name]))[name]
        model_id = runtime.embedder.model_id

        async def search(_client: int, query: str) -> None:
            response = await runtime.searcher.search(SearchRequest(query, (name,)), model_id)
            if not response.results:
                raise CodequarryError(f"no results for {query!r}")

        for query in take_queries(len(QUERIES)):  # warm caches and the HNSW pages
            await search(0, query)
        single = await run_clients(1, searches, search)
        many = await run_clients(clients, searches, search)
    return {"index": index, "in_process_ms": {"1": summary(single), str(clients): summary(many)}}


# ---- the daemon and its clients ------------------------------------------------------


@contextlib.contextmanager
def running_daemon(settings: Settings, log_dir: Path,
                   start_timeout: float) -> Iterator[subprocess.Popen[bytes]]:
    """A `codequarry daemon` subprocess, answering and idle; SIGTERM (then SIGKILL) at exit."""
    stderr = (log_dir / "daemon.stderr").open("wb")
    process = subprocess.Popen([CODEQUARRY, "daemon", "--log-file", str(log_dir / "daemon.log")],
                               stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    try:
        wait_until_idle(settings, process, start_timeout)
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        stderr.close()


def wait_until_idle(settings: Settings, process: subprocess.Popen[bytes], timeout: float) -> None:
    """Until the daemon answers and, on two polls a second apart, every project is watched,
    fully embedded and has nothing pending."""
    client = DaemonClient(settings.socket_path, timeout=10)
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        if process.poll() is not None:
            raise CodequarryError(f"the daemon exited with {process.returncode}; see its logs")
        if time.monotonic() > deadline:
            raise CodequarryError(f"the daemon was not idle within {timeout:.0f}s")
        time.sleep(1)
        if not client.running():
            continue
        projects = client.get("/api/status")["projects"]
        idle = all(p["watching"] and p["pending_files"] == 0 and p["pending_events"] == 0
                   and p["vector_coverage"] >= 1.0 for p in projects)
        calm = calm + 1 if idle else 0


@asynccontextmanager
async def socket_session(socket_path: Path) -> AsyncIterator[ClientSession]:
    """An official MCP SDK client session over the daemon's unix socket."""
    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(socket_path)),
                              timeout=httpx2.Timeout(30.0, read=120.0))
    async with http, streamable_http_client("http://localhost/mcp", http_client=http) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


@asynccontextmanager
async def bridge_session(settings: Settings, errlog: Any) -> AsyncIterator[ClientSession]:
    """An official MCP SDK client session through its own `codequarry mcp` subprocess,
    started with the small environment an MCP client passes."""
    env = {key: os.environ[key] for key in ("HOME", "PATH", "XDG_RUNTIME_DIR", "CODEQUARRY_HOME")
           if key in os.environ} | {"CODEQUARRY_CONFIG": str(settings.config_path)}
    params = StdioServerParameters(command=CODEQUARRY, args=["mcp"], env=env)
    async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
        await session.initialize()
        yield session


async def through(opener: Opener, name: str, clients: int, searches: int) -> list[float]:
    """Open `clients` sessions, then time `searches` search_code calls on each, concurrently."""
    async with contextlib.AsyncExitStack() as stack:
        sessions = [await stack.enter_async_context(opener()) for _ in range(clients)]

        async def search(client: int, query: str) -> None:
            result = await sessions[client].call_tool("search_code", {"query": query, "project": name})
            if result.is_error or not (result.structured_content or {}).get("results"):
                text = " ".join(getattr(part, "text", "") for part in result.content)
                raise CodequarryError(f"search_code({query!r}) failed or found nothing: {text[:300]}")

        return await run_clients(clients, searches, search)


async def transports(settings: Settings, name: str, clients: int, searches: int, bridge: bool,
                     errlog: Any) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    openers: dict[str, Opener] = {"socket": lambda: socket_session(settings.socket_path)}
    if bridge:
        openers["bridge"] = lambda: bridge_session(settings, errlog)
    for transport, opener in openers.items():
        out[f"{transport}_ms"] = {str(n): summary(await through(opener, name, n, searches))
                                  for n in (1, clients)}
    return out


def cpu_seconds(pid: int, with_children: bool = False) -> float:
    """User + system CPU of a process (and of its children, live or reaped), in seconds."""
    import psutil

    process = psutil.Process(pid)
    members = [process, *(process.children(recursive=True) if with_children else [])]
    total = 0.0
    if with_children:  # backends that exited since: their CPU is counted in the parent's
        reaped = process.cpu_times()
        total += reaped.children_user + reaped.children_system
    for member in members:
        with contextlib.suppress(psutil.Error):
            times = member.cpu_times()
            total += times.user + times.system
    return total


def postgres_pid(settings: Settings) -> int | None:
    try:
        return int((settings.pgdata / "postmaster.pid").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def measured_load(socket_path: Path, name: str, clients: int, searches: int, queries: list[str],
                  daemon_pid: int, pg: int | None, workdir: Path, tool: str = "search_code",
                  arguments: str = "{}") -> tuple[dict[str, Any], float, float]:
    """bench/mcp_load.py in its own process (`queries`: the untimed ones first, reversed);
    returns its JSON result and the CPU seconds of the daemon and of PostgreSQL (live and
    reaped backends) over the timed calls only: the sessions open and make their first
    call before the interval starts (mcp_load --wait-for-go)."""
    asked = workdir / "mcp_load.queries"
    asked.write_text("\n".join(reversed(queries[:clients])) + "\n" + "\n".join(queries[clients:]) + "\n")
    with asked.open() as stdin:
        load = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("mcp_load.py")), str(socket_path), name,
             "--clients", str(clients), "--searches", str(searches), "--tool", tool,
             "--arguments", arguments, "--wait-for-go"],
            stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert load.stdout is not None
    warm = load.stdout.readline().strip()
    before = (cpu_seconds(daemon_pid), cpu_seconds(pg, with_children=True) if pg else 0.0)
    if warm == "warm":
        load.send_signal(signal.SIGUSR1)
    out, err = load.communicate(timeout=3600)
    after = (cpu_seconds(daemon_pid), cpu_seconds(pg, with_children=True) if pg else 0.0)
    if load.returncode != 0 or warm != "warm":
        (workdir / "mcp_load.stderr").write_text(err)
        raise CodequarryError(f"mcp_load.py failed: {err[-500:]}")
    result: dict[str, Any] = json.loads(out)
    if result["errors"]:
        raise CodequarryError(f"{tool} failed under load: {result['errors'][:3]}")
    return result, after[0] - before[0], after[1] - before[1]


def light_load(settings: Settings, name: str, clients: int, searches: int, daemon_pid: int,
               log_dir: Path) -> dict[str, Any]:
    """bench/mcp_load.py in its own process: `clients` threads x `searches` distinct calls;
    the CPU of the clients, the daemon and PostgreSQL over the same interval."""
    queries = take_queries(clients * searches + clients)
    result, daemon, postgres = measured_load(settings.socket_path, name, clients, searches, queries,
                                             daemon_pid, postgres_pid(settings), log_dir)
    wall = result["wall_seconds"]
    return {"ms": summary(result["times"]), "wall_seconds": round(wall, 2),
            "searches_per_second": round(len(result["times"]) / wall, 1),
            "cpu_seconds": {"clients": round(result["client_cpu_seconds"], 2),
                            "daemon": round(daemon, 2), "postgres": round(postgres, 2)}}


def cache_stats(settings: Settings) -> Any:
    """The daemon's result-cache counters, if it reports them in /api/health."""
    return DaemonClient(settings.socket_path).get("/api/health").get("search_cache")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="mcp50k", choices=sorted(CORPORA), help="default: mcp50k")
    parser.add_argument("--home", default="search",
                        help="shared bench home under $CQ_BENCH_DIR/homes (reused; default: search)")
    parser.add_argument("--clients", type=positive, default=10, help="concurrent clients (default 10)")
    parser.add_argument("--searches", type=positive, default=40,
                        help="timed searches per client (default 40)")
    parser.add_argument("--sdk", action="store_true",
                        help="also time the official SDK client over the socket and the stdio bridge")
    parser.add_argument("--no-bridge", action="store_true", help="with --sdk: skip the stdio bridge")
    parser.add_argument("--no-in-process", action="store_true", help="skip the in-process figures")
    parser.add_argument("--start-timeout", type=float, default=600,
                        help="seconds to wait for the daemon to be up and idle (default 600)")
    args = parser.parse_args()
    configure_logging("warning")  # warnings and errors only, on stderr
    name = args.corpus
    global QUERY_LIST
    QUERY_LIST = distinct_queries(corpus(name), 8 * (args.clients + 1) * (args.searches + 1) + 200)
    with codequarry_home(args.home, fresh=False) as home:
        register(home / "config.toml", name)
        settings = load_settings()
        local: dict[str, Any] = {"index": {}, "in_process_ms": {}}
        if not args.no_in_process:
            local = anyio.run(in_process, settings, name, args.clients, args.searches)
        remote: dict[str, Any] = {}
        with (home / "bridge.stderr").open("w") as errlog, \
                running_daemon(settings, home, args.start_timeout) as daemon:
            load = {str(n): light_load(settings, name, n, args.searches, daemon.pid, home)
                    for n in (1, args.clients)}
            remote["socket_ms"] = {n: figures["ms"] for n, figures in load.items()}
            remote["socket_load"] = load
            remote["search_cache"] = cache_stats(settings)
            if args.sdk:
                sdk = anyio.run(transports, settings, name, args.clients, args.searches,
                                not args.no_bridge, errlog)
                remote["sdk_socket_ms"] = sdk.pop("socket_ms")
                remote.update(sdk)
            daemon_rss = rss_mb(daemon.pid)
    n = str(args.clients)
    socket_p95 = remote["socket_ms"][n]["p95"]
    figures = {"corpus": name, "description": CORPORA[name][0], "home": str(home), **local["index"],
               "clients": args.clients, "searches_per_client": args.searches,
               "distinct_queries": True, "in_process_ms": local["in_process_ms"], **remote,
               "daemon_rss_mb_after": round(daemon_rss, 1),
               "target_socket_p95_ms": TARGET_SOCKET_P95_MS,
               "meets_target": socket_p95 <= TARGET_SOCKET_P95_MS}

    def pair(d: dict[str, Any]) -> str:
        return f"{d['p50']}/{d['p95']}"

    parts = [f"{label} {pair(figures[key]['1'])} | {pair(figures[key][n])}"
             for label, key in (("in-process", "in_process_ms"), ("socket", "socket_ms"),
                                ("SDK socket", "sdk_socket_ms"), ("bridge", "bridge_ms"))
             if figures.get(key)]
    cpu = remote["socket_load"][n]["cpu_seconds"]
    parts.append(f"CPU s with {n}: clients {cpu['clients']}, daemon {cpu['daemon']}, "
                 f"postgres {cpu['postgres']}; cache {remote['search_cache']}")
    line = (f"mcp {name}: {figures.get('chunks', '?')} chunks, search_code p50/p95 ms with 1 | {n} clients: "
            + "; ".join(parts) + f" (target socket p95 <= {TARGET_SOCKET_P95_MS:g} with 10)")
    emit("mcp", figures, line)


if __name__ == "__main__":
    main()
