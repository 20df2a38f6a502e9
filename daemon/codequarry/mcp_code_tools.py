"""MCP tools that follow a search: find_symbol, read_code, find_references.

Each answers with compact text for the model and the same answer as structured content.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastmcp import FastMCP
from fastmcp.server.dependencies import get_http_headers
from fastmcp.tools import ToolResult
from mcp_types import ToolAnnotations
from pydantic import Field, TypeAdapter

from codequarry.api import DaemonApi
from codequarry.client import CWD_HEADER
from codequarry.code_tools import render_code, render_references, render_symbols
from codequarry.mcp_errors import tool_error
from codequarry.mcp_schemas import CodeAnswer, ReferencesAnswer, SymbolAnswer

PROJECT_HELP = "Default: the client's project, else all."


async def _answer(what: str, operation: Awaitable[dict[str, Any]],
                  render: Callable[[dict[str, Any]], str]) -> ToolResult:
    try:
        answer = await operation
    except Exception as exc:
        raise tool_error(what, exc) from None
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
        name: Annotated[str, Field(description="'parse' or 'Color.parse'.")],
        kind: Annotated[str | None, Field(description="function, method, class, interface, "
                                          "struct, enum, trait, type ...")] = None,
        project: Annotated[str | None, Field(description=PROJECT_HELP)] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
    ) -> ToolResult:
        """Where a function, method, class or type is defined (exact names, then prefixes,
        close spellings): path, line span, kind, signature."""
        return await _answer("find_symbol", api.find_symbol(name, kind, project, limit, _cwd()),
                             render_symbols)

    @mcp.tool(annotations=read_only, output_schema=schema(CodeAnswer))
    async def read_code(
        path: Annotated[str | None, Field(description="As answers show it (may end :START-END), "
                                          "or absolute.")] = None,
        start_line: Annotated[int | None, Field(ge=1)] = None,
        end_line: Annotated[int | None, Field(ge=1, description="Inclusive.")] = None,
        symbol: Annotated[str | None, Field(description="A definition to read instead, "
                                            "e.g. 'Color.parse'.")] = None,
        project: Annotated[str | None, Field(description="When a relative path is "
                                             "ambiguous.")] = None,
        max_tokens: Annotated[int | None, Field(ge=100, le=50000, description="Default "
                                                "4000.")] = None,
    ) -> ToolResult:
        """The current disk text of an indexed file, numbered: a line range or a whole
        definition; a cut read says where to continue."""
        return await _answer("read_code", api.read_code(path, start_line, end_line, symbol, project,
                                                        max_tokens, _cwd()), render_code)

    @mcp.tool(annotations=read_only, output_schema=schema(ReferencesAnswer))
    async def find_references(
        name: Annotated[str, Field(description="An identifier.")],
        project: Annotated[str | None, Field(description=PROJECT_HELP)] = None,
        language: str | None = None,
        path_glob: str | None = None,
        limit: Annotated[int, Field(ge=1, le=500, description="Most lines.")] = 100,
    ) -> ToolResult:
        """Every line where an identifier occurs as a whole word, by file; definitions
        marked *."""
        return await _answer("find_references", api.find_references(
            name, project, language, path_glob, limit, _cwd()), render_references)
