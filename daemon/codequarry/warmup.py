"""Import modules in a background thread while the main thread waits on something else.

The daemon's socket needs FastMCP and the MCP SDK, whose import is the largest part of a
daemon start; the embedded PostgreSQL start before it is mostly waiting on a subprocess.
Importing the server module meanwhile makes a restart answer (and catch up) sooner.
Python's import locks make this safe: the main thread's own import of the same module
waits for the thread's to finish. CODEQUARRY_IMPORT_WARMUP=0 turns it off (benchmarks
compare both in one run).
"""

from __future__ import annotations

import importlib
import os
import threading


def import_in_background(*modules: str) -> threading.Thread | None:
    """Start importing `modules` in a daemon thread; None when turned off."""
    if os.environ.get("CODEQUARRY_IMPORT_WARMUP") == "0":
        return None

    def run() -> None:
        for module in modules:
            try:
                importlib.import_module(module)
            except Exception:  # the main thread's own import reports it
                return

    thread = threading.Thread(target=run, name="codequarry-import-warmup", daemon=True)
    thread.start()
    return thread
