"""Ending the MCP sessions' open notification streams when the daemon stops.

A streamable-HTTP MCP session keeps a GET request open (an SSE stream for server-initiated
messages) for as long as the client lives. uvicorn's graceful shutdown waits for every
request to end, and this one never does: it waited `timeout_graceful_shutdown`, then
cancelled the stream, logging two errors. Closing each session's stream first (the SDK's
`close_standalone_sse_stream`) ends that response normally; requests in flight (tool
calls) are left to finish under uvicorn's bound.
"""

from __future__ import annotations

from typing import Any

from fastmcp.server.http import StreamableHTTPASGIApp

from codequarry.logs import get_logger

log = get_logger(__name__)


def close_notification_streams(app: Any) -> int:
    """End the standalone GET stream of every live session of `app` (what FastMCP's
    `http_app()` returns); the number of sessions. Synchronous: call it after the
    listening socket is closed, so a client's reconnect is refused, not served."""
    sessions = 0
    for route in getattr(app, "routes", []):
        endpoint = getattr(route, "endpoint", None)
        if not isinstance(endpoint, StreamableHTTPASGIApp) or endpoint.session_manager is None:
            continue
        # the SDK lists a manager's sessions only in this private dict (FastMCP's own
        # shutdown reads it too); should it go, the stop falls back to uvicorn's bound
        transports = getattr(endpoint.session_manager, "_server_instances", {})
        for transport in list(transports.values()):
            sessions += 1
            try:
                transport.close_standalone_sse_stream()
            except Exception as exc:  # one session's fault must not keep the others open
                log.warning("mcp_stream_close_failed", error=f"{type(exc).__name__}: {exc}")
    return sessions
