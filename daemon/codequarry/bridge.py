"""`codequarry mcp`: an MCP server on stdio that forwards everything to the daemon.

MCP clients start it with a minimal environment, so it finds the daemon's socket from
the same defaults as the daemon (HOME, uid). stdout carries protocol frames only;
everything else goes to stderr. The client's working directory travels in a header, so
search_code can default to the project the client is working in.
"""

from __future__ import annotations

import os
import sys
from typing import Any

from codequarry.config import Settings
from codequarry.errors import DaemonNotRunning
from codequarry.client import CWD_HEADER, DaemonClient


def run_bridge(settings: Settings) -> int:
    path = settings.socket_path
    if not DaemonClient(path).running():
        raise DaemonNotRunning(
            f"no codequarry daemon answers on {path}; start one with `codequarry daemon` "
            "(or `codequarry service install` to start it at login)")
    import anyio
    import httpx2
    from fastmcp.client.transports import StreamableHttpTransport
    from fastmcp.server import create_proxy

    def over_socket(headers: dict[str, str] | None = None, timeout: Any = None, auth: Any = None,
                    **kwargs: Any) -> httpx2.AsyncClient:
        return httpx2.AsyncClient(transport=httpx2.AsyncHTTPTransport(uds=str(path)), headers=headers,
                                  auth=auth, timeout=timeout or httpx2.Timeout(30.0, read=300.0), **kwargs)

    transport = StreamableHttpTransport("http://localhost/mcp", httpx_client_factory=over_socket,
                                        headers={CWD_HEADER: os.getcwd()})
    proxy = create_proxy(transport, name="codequarry")
    from codequarry.logs import quiet_fastmcp_logging

    quiet_fastmcp_logging()
    sys.stdout.flush()
    anyio.run(lambda: proxy.run_stdio_async(show_banner=False))
    return 0
