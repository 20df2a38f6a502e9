"""tools/list cost: what every MCP session sends its model before the first call.

A real `codequarry daemon` (a private home with no project) and the official MCP SDK
client, over the unix socket and through the `codequarry mcp` stdio bridge: the tools
array of tools/list as compact JSON (what goes on the wire), in characters and ~tokens
(characters / 4, as agent_bench.py counts), per tool split into description, input schema
and output schema. Both transports must list the same bytes.

    .venv/bin/python bench/tools_bench.py [--results tools]
    PYTHONPATH=<other checkout>/daemon .venv/bin/python bench/tools_bench.py --results tools-before
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import anyio

sys.path.insert(0, str(Path(__file__).resolve().parent))

from codequarry.config import load_settings
from codequarry.logs import configure_logging
from common import codequarry_home, emit
from mcp_bench import bridge_session, running_daemon, socket_session


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def measure(tools: list[dict[str, Any]]) -> dict[str, Any]:
    listing = compact(tools)
    per_tool = {tool["name"]: {"chars": len(compact(tool)),
                               "description": len(tool.get("description", "")),
                               "input_schema": len(compact(tool.get("inputSchema", {}))),
                               "output_schema": len(compact(tool.get("outputSchema", {})))}
                for tool in tools}
    return {"tools": len(tools), "chars": len(listing), "tokens": round(len(listing) / 4),
            "per_tool": per_tool, "listing": listing}


async def listings(settings: Any, errlog: Any) -> dict[str, list[dict[str, Any]]]:
    out = {}
    async with socket_session(settings.socket_path) as session:
        out["socket"] = (await session.list_tools()).model_dump(by_alias=True, exclude_none=True,
                                                                 mode="json")["tools"]
    async with bridge_session(settings, errlog) as session:
        out["bridge"] = (await session.list_tools()).model_dump(by_alias=True, exclude_none=True,
                                                                 mode="json")["tools"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default="tools", help="write bench/results/<this>.json")
    parser.add_argument("--home", default="tools", help="bench home under $CQ_BENCH_DIR/homes (fresh)")
    args = parser.parse_args()
    configure_logging("warning")
    with codequarry_home(args.home) as home:
        settings = load_settings()
        with (home / "bridge.stderr").open("w") as errlog, running_daemon(settings, home, 300):
            found = anyio.run(listings, settings, errlog)
    socket, bridge = measure(found["socket"]), measure(found["bridge"])
    if socket.pop("listing") != bridge.pop("listing"):
        raise SystemExit("the socket and the bridge list different tools")
    figures = {"tools_list": socket}
    emit(args.results, figures, f"tools/list[{args.results}]: {socket['tools']} tools, "
         f"{socket['chars']:,} characters (~{socket['tokens']:,} tokens), same through the bridge")


if __name__ == "__main__":
    main()
