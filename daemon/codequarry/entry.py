"""The `codequarry` executable: `codequarry mcp` goes straight to the stdio bridge (standard
library only, so an MCP client gets its `initialize` answer fast); `search`, `status` and
`index` ask a running daemon through codequarry.fastcli; everything else goes to the full
command line (codequarry.cli)."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path


def bridge_arguments(argv: Sequence[str]) -> Path | bool | None:
    """For `mcp [--config FILE] [--log-level L]` (options before or after `mcp`): the config
    path given (None: the default); False for anything else (the full CLI parses it)."""
    config: Path | None = None
    seen_mcp = False
    items = list(argv)
    while items:
        item = items.pop(0)
        if item == "mcp" and not seen_mcp:
            seen_mcp = True
        elif item in ("--config", "--log-level") and items:
            value = items.pop(0)
            config = Path(value) if item == "--config" else config
        elif item.startswith("--config="):
            config = Path(item.partition("=")[2])
        elif item.startswith("--log-level="):
            continue
        else:
            return False
    return config if seen_mcp else False


def main() -> None:
    target = bridge_arguments(sys.argv[1:])
    if target is False:  # read commands ask a running daemon without the full CLI's imports
        from codequarry.fastcli import main as fast_main

        fast_main()
        return
    from codequarry.bridge import load_target, run_bridge
    from codequarry.errors import CodequarryError

    try:
        code = run_bridge(load_target(target if isinstance(target, Path) else None))
    except CodequarryError as exc:
        print(f"codequarry: error: {exc}", file=sys.stderr)
        code = exc.exit_code
    except KeyboardInterrupt:
        code = 130
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)  # forwarding threads may still wait on the daemon: do not wait for them
