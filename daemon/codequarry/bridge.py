"""`codequarry mcp`: an MCP server on stdio that forwards everything to the daemon.

MCP clients start it with a minimal environment, so it finds the daemon's socket from
the same defaults as the daemon (HOME, uid). stdout carries protocol frames only;
everything else goes to stderr. The client's working directory travels in a header, so
search_code can default to the project the client is working in.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from codequarry.client import CWD_HEADER, DaemonClient
from codequarry.config import Settings
from codequarry.errors import DaemonNotRunning

AUTOSTART_SECONDS = 60.0


def run_bridge(settings: Settings) -> int:
    path = settings.socket_path
    if not DaemonClient(path).running():
        if not settings.config.mcp.autostart:
            raise DaemonNotRunning(
                f"no codequarry daemon answers on {path}; start one with `codequarry daemon` "
                "(or `codequarry service install` to start it at login, or set "
                "[mcp] autostart = true)")
        start_daemon(settings)
    import anyio

    anyio.run(_forward, str(path))
    return 0


async def _forward(socket_path: str) -> None:
    """Pass MCP messages through unchanged: stdin -> daemon, daemon -> stdout. The SDK's
    transports handle framing, the session id and server-sent events on each side."""
    import anyio
    import httpx2
    from mcp.client.streamable_http import streamable_http_client
    from mcp.server.stdio import stdio_server

    http = httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=socket_path),
                              headers={CWD_HEADER: os.getcwd()},
                              timeout=httpx2.Timeout(30.0, read=300.0))
    async with (http, stdio_server() as (from_client, to_client),
                streamable_http_client("http://localhost/mcp", http_client=http) as (from_daemon, to_daemon)):

        async def pump(source: Any, sink: Any) -> None:
            async for message in source:
                if isinstance(message, Exception):
                    print(f"codequarry mcp: {message}", file=sys.stderr)
                    continue
                await sink.send(message)
            tasks.cancel_scope.cancel()  # one side closed: the session is over

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(pump, from_client, to_daemon)
            tasks.start_soon(pump, from_daemon, to_client)


def start_daemon(settings: Settings) -> None:
    """Start `codequarry daemon` in the background (its log in the data dir) and wait
    until it answers; used when [mcp] autostart = true."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    log_file = settings.data_dir / "daemon.log"
    executable = Path(sys.executable).with_name("codequarry")
    command = [str(executable) if executable.exists() else "codequarry", "daemon",
               "--config", str(settings.config_path), "--log-file", str(log_file)]
    subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                     stderr=subprocess.DEVNULL, start_new_session=True)
    print(f"codequarry mcp: started a daemon (log: {log_file})", file=sys.stderr)
    client = DaemonClient(settings.socket_path)
    deadline = time.monotonic() + AUTOSTART_SECONDS
    while not client.running():
        if time.monotonic() > deadline:
            raise DaemonNotRunning(f"the daemon did not start within {AUTOSTART_SECONDS:.0f} s; "
                                   f"see {log_file}")
        time.sleep(0.2)
