"""The daemon's MCP server (FastMCP, streamable HTTP) and its JSON routes for the CLI.

Tools reach the daemon through the server's lifespan context, never module globals.
Every failure a caller can cause comes back as a tool error with one clear sentence.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")

from fastmcp import Context, FastMCP
from fastmcp.exceptions import ToolError
from fastmcp.server.dependencies import get_http_headers
from fastmcp.tools import ToolResult
from pydantic import Field
from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from codequarry.answers import render_text
from codequarry.api import DaemonApi
from codequarry.client import CWD_HEADER
from codequarry.errors import CodequarryError, UsageError
from codequarry.logs import get_logger
from codequarry.mcp_code_tools import register_code_tools

log = get_logger(__name__)

INSTRUCTIONS = (
    "codequarry searches the user's locally indexed repositories. The index follows the "
    "working tree within about a second, so results reflect unsaved-to-git edits. Use "
    "search_code before grepping or reading many files; call get_status if results look stale."
)


def _api(ctx: Context) -> DaemonApi:
    api = ctx.lifespan_context["api"]
    assert isinstance(api, DaemonApi)
    return api


async def _call(what: str, operation: Awaitable[dict[str, Any]]) -> dict[str, Any]:
    """Run a tool body; user-caused problems become tool errors, bugs are logged once."""
    try:
        return await operation
    except CodequarryError as exc:
        raise ToolError(str(exc)) from None
    except Exception as exc:
        log.error("tool_failed", tool=what, error=f"{type(exc).__name__}: {exc}")
        raise ToolError(f"{what} failed: {type(exc).__name__}: {exc}") from None


def build_server(api: DaemonApi) -> FastMCP:
    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        yield {"api": api}

    mcp = FastMCP("codequarry", instructions=INSTRUCTIONS, lifespan=lifespan)

    @mcp.tool
    async def search_code(
        query: Annotated[str, Field(description="What to find: a question in words "
                                    "('where are retries configured') or an identifier.")],
        ctx: Context,
        project: Annotated[str | None, Field(description="Project id (or a path inside one). "
                                             "Default: the project containing the client's "
                                             "working directory, else all projects.")] = None,
        projects: Annotated[list[str] | None, Field(description="Several project ids.")] = None,
        language: Annotated[str | None, Field(description="Only this language, e.g. 'python'.")] = None,
        path_glob: Annotated[str | None, Field(description="Only paths matching this glob, "
                                               "e.g. 'src/**' or '*.ts'.")] = None,
        limit: Annotated[int, Field(ge=1, le=50, description="Number of results (1-50).")] = 10,
        mode: Annotated[Literal["hybrid", "semantic", "lexical"],
                        Field(description="hybrid (default) mixes meaning and words; lexical "
                              "for exact identifiers; semantic for concepts.")] = "hybrid",
        detail: Annotated[Literal["paths", "snippet", "full"],
                          Field(description="paths: locations only; snippet (default): each "
                                "unit's most relevant lines; full: whole units.")] = "snippet",
        offset: Annotated[int, Field(ge=0, le=200, description="Skip this many results "
                                     "(the answer's next offset gives the next page).")] = 0,
        max_tokens: Annotated[int | None, Field(ge=100, le=50000, description="Budget for the "
                                                "answer's text (default 2000).")] = None,
    ) -> ToolResult:
        """Search indexed source code by meaning and by words. Use it to find where something
        is implemented, defined or used before reading files. Returns whole code units
        (function, method, class) as `path:start-end symbol (kind) score` with their most
        relevant numbered lines; follow up with read_code, find_symbol or find_references."""
        chosen = [*([project] if project else []), *(projects or [])]
        cwd = get_http_headers(include={CWD_HEADER}).get(CWD_HEADER)
        answer = await _call("search_code", _api(ctx).search(
            query, chosen, mode, [language] if language else None, path_glob, limit, cwd,
            detail, offset, max_tokens))
        return ToolResult(content=render_text(answer), structured_content=answer)

    @mcp.tool
    async def index_repository(
        path: Annotated[str, Field(description="Absolute path of the repository directory.")],
        ctx: Context,
        project: Annotated[str | None, Field(description="Project id: lowercase letters, digits "
                                             "and single hyphens (default: from the directory "
                                             "name).")] = None,
    ) -> dict[str, Any]:
        """Register a repository so the daemon indexes it and keeps it fresh. Returns at once
        with its status; indexing continues in the background (watch get_status)."""
        return await _call("index_repository", _api(ctx).index(path, project))

    @mcp.tool
    async def get_status(
        ctx: Context,
        project: Annotated[str | None, Field(description="Project id; default all.")] = None,
    ) -> dict[str, Any]:
        """Show each project's files, chunks, vector coverage, pending changes and errors.
        Use it when results look stale or after index_repository."""
        return await _call("get_status", _api(ctx).status(project))

    @mcp.tool
    async def recent_changes(
        ctx: Context,
        project: Annotated[str | None, Field(description="Project id; default all.")] = None,
        limit: Annotated[int, Field(ge=1, le=200, description="Number of changes (1-200).")] = 20,
    ) -> dict[str, Any]:
        """List the latest file changes the daemon saw (path, kind, time), newest first, to see
        what moved in the code since you last looked."""
        return await _call("recent_changes", _api(ctx).recent_changes(project, limit))

    register_code_tools(mcp, api)
    _add_json_routes(mcp, api)
    return mcp


def _add_json_routes(mcp: FastMCP, api: DaemonApi) -> None:
    """Plain JSON over the same socket, for the CLI (it starts faster than an MCP client)."""

    def route(path: str, method: str) -> Callable[[Callable[[dict[str, Any]], Awaitable[Any]]], None]:
        def register(handler: Callable[[dict[str, Any]], Awaitable[Any]]) -> None:
            async def endpoint(request: Request) -> JSONResponse:
                try:
                    body = dict(request.query_params)
                    if method == "POST":
                        body = json.loads(await request.body() or b"{}")
                    if not isinstance(body, dict):
                        raise UsageError("the request body must be a JSON object")
                    return JSONResponse(await handler(body))
                except (CodequarryError, ValueError, TypeError) as exc:
                    code = 400 if isinstance(exc, UsageError | ValueError | TypeError) else 500
                    return JSONResponse({"error": str(exc)}, status_code=code)
                except Exception as exc:
                    log.error("api_failed", path=path, error=f"{type(exc).__name__}: {exc}")
                    return JSONResponse({"error": f"{type(exc).__name__}: {exc}"}, status_code=500)

            mcp.custom_route(path, methods=[method])(endpoint)

        return register

    async def health(body: dict[str, Any]) -> Any:
        return api.health()

    async def search(body: dict[str, Any]) -> Any:
        return await api.search(str(body.get("query", "")), list(body.get("projects") or []),
                                str(body.get("mode", "hybrid")), list(body.get("languages") or []),
                                body.get("path_glob"), int(body.get("limit", 10)), None,
                                str(body.get("detail", "snippet")), int(body.get("offset", 0)),
                                int(body["max_tokens"]) if body.get("max_tokens") else None)

    async def status(body: dict[str, Any]) -> Any:
        return await api.status(body.get("project"))

    async def index(body: dict[str, Any]) -> Any:
        return await api.index(str(body.get("path", "")), body.get("project"))

    async def changes(body: dict[str, Any]) -> Any:
        return await api.recent_changes(body.get("project"), int(body.get("limit", 20)))

    async def symbol(body: dict[str, Any]) -> Any:
        return await api.find_symbol(str(body.get("name", "")), body.get("kind"), body.get("project"),
                                     int(body.get("limit", 10)), body.get("cwd"))

    async def read(body: dict[str, Any]) -> Any:
        return await api.read_code(body.get("path"), body.get("start_line"), body.get("end_line"),
                                   body.get("symbol"), body.get("project"), body.get("max_tokens"),
                                   body.get("cwd"))

    async def references(body: dict[str, Any]) -> Any:
        return await api.find_references(str(body.get("name", "")), body.get("project"),
                                         body.get("language"), body.get("path_glob"),
                                         int(body.get("limit", 100)), body.get("cwd"))

    route("/api/health", "GET")(health)
    route("/api/symbol", "POST")(symbol)
    route("/api/read", "POST")(read)
    route("/api/references", "POST")(references)
    route("/api/search", "POST")(search)
    route("/api/status", "GET")(status)
    route("/api/index", "POST")(index)
    route("/api/changes", "GET")(changes)


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})


def load_or_create_token(path: Path) -> str:
    """The bearer token of the TCP listener: generated once, readable by the user only."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(token + "\n")
    return token


class TokenGuard:
    """ASGI middleware for the loopback TCP listener: a bearer token is required, and a Host
    or Origin that is not loopback is refused (DNS-rebinding protection)."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        host = urlsplit("//" + headers.get("host", "")).hostname
        origin = headers.get("origin")
        problem: tuple[int, str] | None = None
        if host not in LOOPBACK_HOSTS:
            problem = (421, "Host must be a loopback address")
        elif origin and urlsplit(origin).hostname not in LOOPBACK_HOSTS:
            problem = (403, "Origin must be a loopback address")
        elif not hmac.compare_digest(headers.get("authorization", ""), f"Bearer {self.token}"):
            problem = (401, "a valid bearer token is required")
        if problem:
            response = JSONResponse({"error": problem[1]}, status_code=problem[0],
                                    headers={"WWW-Authenticate": "Bearer"} if problem[0] == 401 else None)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


def tcp_app(mcp: FastMCP, token_path: Path) -> ASGIApp:
    token = load_or_create_token(token_path)
    return mcp.http_app(path="/mcp", middleware=[Middleware(TokenGuard, token=token)])
