"""MCP tools that follow a search: find_symbol, read_code, find_references.

Each answers with compact text for the model and the same answer as structured content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastmcp import FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_headers
from fastmcp.tools import ToolResult
from mcp_types import ToolAnnotations
from pydantic import Field, TypeAdapter

from codequarry.api import DaemonApi
from codequarry.client import CWD_HEADER
from codequarry.code_tools import render_code, render_references, render_symbols
from codequarry.errors import CodequarryError
from codequarry.logs import get_logger
from codequarry.mcp_schemas import CodeAnswer, ReferencesAnswer, SymbolAnswer

log = get_logger(__name__)


async def _answer(what: str, operation: Awaitable[dict[str, Any]],
                  render: Callable[[dict[str, Any]], str]) -> ToolResult:
    try:
        answer = await operation
    except CodequarryError as exc:
        raise ToolError(str(exc)) from None
    except Exception as exc:
        log.error("tool_failed", tool=what, error=f"{type(exc).__name__}: {exc}")
        raise ToolError(f"{what} failed: {type(exc).__name__}: {exc}") from None
    return ToolResult(content=render(answer), structured_content=answer)


def _cwd() -> str | None:
    return get_http_headers(include={CWD_HEADER}).get(CWD_HEADER)


def register_code_tools(mcp: FastMCP, api: DaemonApi, read_only: ToolAnnotations) -> None:
    """Add find_symbol, read_code and find_references to `mcp` (each returns a ToolResult,
    so its output schema is given, not derived)."""

    def schema(shape: Any) -> dict[str, Any]:
        return TypeAdapter(shape).json_schema()

    @mcp.tool(annotations=read_only, output_schema=schema(SymbolAnswer))
    async def find_symbol(
        name: Annotated[str, Field(description="A name ('parse') or qualified name "
                                   "('Color.parse'); exact matches first, then prefix and "
                                   "similar spellings.")],
        kind: Annotated[str | None, Field(description="Only this kind: function, method, class, "
                                          "interface, struct, enum, trait, type ...")] = None,
        project: Annotated[str | None, Field(description="Project id (default: the project of "
                                             "the working directory, else all).")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="Number of definitions.")] = 10,
    ) -> ToolResult:
        """Find where a function, method, class or type is defined: returns each
        definition's path, full line span, kind and signature line. Then read it with
        read_code(path, start_line, end_line) or read_code(symbol=...)."""
        return await _answer("find_symbol", api.find_symbol(name, kind, project, limit, _cwd()),
                             render_symbols)

    @mcp.tool(annotations=read_only, output_schema=schema(CodeAnswer))
    async def read_code(
        path: Annotated[str | None, Field(description="File path, relative to the project "
                                          "root (as search results show it) or absolute.")] = None,
        start_line: Annotated[int | None, Field(ge=1, description="First line (1-based).")] = None,
        end_line: Annotated[int | None, Field(ge=1, description="Last line, inclusive.")] = None,
        symbol: Annotated[str | None, Field(description="Read this definition instead of a "
                                            "line range, e.g. 'Color.parse'.")] = None,
        project: Annotated[str | None, Field(description="Project id, when the path is "
                                             "relative and ambiguous.")] = None,
        max_tokens: Annotated[int | None, Field(ge=100, le=50000, description="Budget for the "
                                                "answer (default 4000).")] = None,
    ) -> ToolResult:
        """Read code as it is on disk now, with line numbers: a line range of a file or a
        whole definition (symbol). Only files of indexed projects; ignored and secret files
        are refused. Long reads stop at max_tokens and say where to continue."""
        return await _answer("read_code", api.read_code(path, start_line, end_line, symbol, project,
                                                        max_tokens, _cwd()), render_code)

    @mcp.tool(annotations=read_only, output_schema=schema(ReferencesAnswer))
    async def find_references(
        name: Annotated[str, Field(description="An identifier, e.g. 'parse_color'.")],
        project: Annotated[str | None, Field(description="Project id (default: the project of "
                                             "the working directory, else all).")] = None,
        language: Annotated[str | None, Field(description="Only this language.")] = None,
        path_glob: Annotated[str | None, Field(description="Only paths matching this glob.")] = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Most lines to list.")] = 100,
    ) -> ToolResult:
        """Find where an identifier is used: every line where it occurs as a whole
        identifier, grouped by file; definitions are marked 'def'."""
        return await _answer("find_references", api.find_references(
            name, project, language, path_glob, limit, _cwd()), render_references)
