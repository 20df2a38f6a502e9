"""codequarry.warmup: the daemon imports its MCP server module in a background thread."""

from __future__ import annotations

import subprocess
import sys

import pytest

from codequarry.warmup import import_in_background


def test_a_module_imported_in_the_background_is_loaded_once_the_thread_ends() -> None:
    code = ("import sys; from codequarry.warmup import import_in_background; "
            "t = import_in_background('json.tool'); t.join(30); print('json.tool' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          check=True)
    assert done.stdout.strip() == "True"


def test_the_warmup_can_be_turned_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CODEQUARRY_IMPORT_WARMUP", "0")
    assert import_in_background("json.tool") is None


def test_after_the_daemons_warmup_the_first_tool_call_imports_nothing_of_the_servers() -> None:
    # FastMCP imports its session-state store (key_value) and result post-processing at the
    # first tool call: ~0.2 s of the first agent's first search unless the warm-up did it
    code = """
import asyncio, importlib, sys
import codequarry.mcp_server
from codequarry.service import FASTMCP_FIRST_CALL_IMPORTS
from fastmcp import Client, FastMCP
for module in FASTMCP_FIRST_CALL_IMPORTS:
    importlib.import_module(module)
server = FastMCP("probe")

@server.tool
def echo(x: int) -> int:
    return x

async def first_call() -> set[str]:
    async with Client(server) as client:
        before = set(sys.modules)
        await client.call_tool("echo", {"x": 1})
        server._state_store  # what a session's first call over HTTP reads
        return set(sys.modules) - before

new = asyncio.run(first_call())
print(sorted(m for m in new if m.split(".")[0] in ("fastmcp", "mcp", "key_value", "beartype")))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          check=True)
    assert done.stdout.strip() == "[]", done.stdout
