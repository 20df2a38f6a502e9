"""The daemon's log is one format: JSON lines off a terminal, for our own events and for
the libraries that log through stdlib logging (uvicorn, fastmcp), never on stdout."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from codequarry.logs import configure_logging, get_logger, quiet_fastmcp_logging


@pytest.fixture
def restored_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    fastmcp = logging.getLogger("fastmcp")
    fastmcp_state = (fastmcp.handlers[:], fastmcp.propagate, fastmcp.filters[:], fastmcp.level)
    config = structlog.get_config()
    yield
    root.handlers[:], root.level = handlers, level
    fastmcp.handlers[:], fastmcp.propagate, fastmcp.filters[:], fastmcp.level = (
        fastmcp_state[0], fastmcp_state[1], fastmcp_state[2], fastmcp_state[3])
    structlog.configure(**config)


def test_our_events_and_library_records_are_json_lines_and_a_tool_error_is_one_line(
        tmp_path: Path, restored_logging: None, capsys: pytest.CaptureFixture[str]) -> None:
    import logging.config

    import fastmcp  # noqa: F401  (installs its own rich handlers, as in the daemon)
    import uvicorn.config

    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)  # as a uvicorn server run before does
    log_file = tmp_path / "daemon.log"
    configure_logging("info", log_file, json=True)
    quiet_fastmcp_logging()
    get_logger("codequarry.test").warning("project_retrying", project="demo")
    logging.getLogger("uvicorn.error").warning("socket closed")
    try:
        raise ValueError("unknown language 'klingon'")
    except ValueError:
        logging.getLogger("fastmcp.server.server").exception("Error calling tool 'search_code'")
    for handler in logging.getLogger().handlers:
        handler.flush()
    lines = log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is JSON
    assert [r["event"] for r in records] == [
        "project_retrying", "socket closed",
        "Error calling tool 'search_code': ValueError: unknown language 'klingon'"]
    assert records[2]["level"] == "error"
    assert "Traceback" not in log_file.read_text()
    assert capsys.readouterr().out == ""  # stdout carries MCP frames
