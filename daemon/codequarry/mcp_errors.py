"""How a failed MCP tool call reaches its client and the daemon's log.

A user's mistake (a CodequarryError: an unknown project, an argument value out of range, a
path outside every project) is for the client to fix: it is logged as one warning with
its reason, never as an error. Anything else is a fault of ours: logged at error. fastmcp
logs every ToolError again at the error's `log_level`, without the reason: debug here.
"""

from __future__ import annotations

import logging

from fastmcp.exceptions import ToolError

from codequarry.errors import CodequarryError
from codequarry.logs import get_logger

log = get_logger(__name__)


def tool_error(what: str, exc: Exception) -> ToolError:
    """The ToolError to raise for `exc` from tool (or resource) `what`, logged once."""
    if isinstance(exc, CodequarryError):
        return refused(what, str(exc))
    log.error("tool_failed", tool=what, error=f"{type(exc).__name__}: {exc}")
    return ToolError(f"{what} failed: {type(exc).__name__}: {exc}", log_level=logging.DEBUG)


def refused(what: str, reason: str) -> ToolError:
    """The ToolError of a call the client got wrong, logged as a warning with `reason`."""
    log.warning("tool_refused", tool=what, reason=reason)
    return ToolError(reason, log_level=logging.DEBUG)
