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
