"""The daemon's MCP server (FastMCP, streamable HTTP) and its JSON routes for the CLI.

Tools reach the daemon through the server's lifespan context, never module globals.
Every failure a caller can cause comes back as a tool error with one clear sentence.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any, Literal, cast
from urllib.parse import unquote, urlsplit

os.environ.setdefault("FASTMCP_SHOW_SERVER_BANNER", "false")
os.environ.setdefault("FASTMCP_CHECK_FOR_UPDATES", "off")
# no OpenTelemetry SDK is ever configured here, yet "native" mode opens a (no-op) span at
# every request's seam and tool call: CPU per call for nothing
os.environ.setdefault("FASTMCP_TELEMETRY_MODE", "off")

import anyio
import mcp_types
from fastmcp import Context, FastMCP
from fastmcp.exceptions import ValidationError as FastMCPValidationError
from fastmcp.server.dependencies import get_http_headers
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import ToolResult
from mcp.shared.message import ServerMessageMetadata
from mcp_types import ToolAnnotations
from pydantic import Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError
from starlette.datastructures import Headers
from starlette.middleware import Middleware as AsgiMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from codequarry import __version__
from codequarry.answer_text import render_text
from codequarry.api import DaemonApi
from codequarry.client import CWD_HEADER
from codequarry.errors import CodequarryError, UsageError
from codequarry.logs import get_logger
from codequarry.mcp_code_tools import register_code_tools
from codequarry.mcp_errors import refused, tool_error
from codequarry.mcp_listing import CompactToolList
from codequarry.mcp_schemas import (
    ChangesAnswer,
    IndexAnswer,
    ProjectsAnswer,
    SearchAnswer,
    StatusAnswer,
)

log = get_logger(__name__)
ROOTS_SECONDS = 5.0

# search_code returns a ToolResult (compact text + structured content), so its schema is
# given rather than derived from a return annotation
SEARCH_SCHEMA = TypeAdapter(SearchAnswer).json_schema()

INSTRUCTIONS = (
    "codequarry searches the user's locally indexed repositories. The index follows the "
    "working tree within about a second, so results reflect unsaved-to-git edits. Use "
    "search_code before grepping or reading many files; call get_status if results look stale. "
    "list_projects shows what is indexed; index_repository adds a repository."
)
READ_ONLY = ToolAnnotations(read_only_hint=True, idempotent_hint=True, open_world_hint=False)
WAIT_HELP = 'Return at once ("none"), when searchable by words ("lexical") or also by meaning.'


def _api(ctx: Context) -> DaemonApi:
    api = ctx.lifespan_context["api"]
    assert isinstance(api, DaemonApi)
    return api


async def _call(what: str, operation: Awaitable[Any]) -> Any:
    """Run a tool body; its failure becomes a tool error (codequarry.mcp_errors)."""
    try:
        return await operation
    except Exception as exc:
        raise tool_error(what, exc) from None


def client_cwd() -> str | None:
    """The working directory the stdio bridge reports for its client (percent-encoded)."""
    value = get_http_headers(include={CWD_HEADER}).get(CWD_HEADER)
    return unquote(value) if value else None


async def client_roots(ctx: Context) -> list[str]:
    """The directories of the roots the client offers ([] when it offers none). Asked on
    the request's own stream, so a client without a standalone stream still answers."""
    try:
        session = ctx.session
        capabilities = session.client_capabilities
        if capabilities is None or capabilities.roots is None or ctx.request_context is None:
            return []
        with anyio.fail_after(ROOTS_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            answer = await session.send_request(
                mcp_types.ListRootsRequest(), mcp_types.ListRootsResult,
                metadata=ServerMessageMetadata(related_request_id=ctx.request_context.request_id))
    except Exception as exc:  # a client that offers roots but cannot list them: no roots
        log.info("roots_unavailable", error=f"{type(exc).__name__}: {exc}")
        return []
    found = []
    for root in answer.roots:
        parts = urlsplit(str(root.uri))
        if parts.scheme == "file" and parts.path:
            found.append(unquote(parts.path))
    return found


class OneLineArgumentErrors(Middleware):
    """Argument errors as one sentence ("limit must be between 1 and 50, got 0"), not a
    pydantic report with a URL."""

    def __init__(self, server: FastMCP) -> None:
        self.server = server

    async def on_call_tool(self, context: MiddlewareContext[Any], call_next: CallNext[Any, Any]) -> Any:
        try:
            return await call_next(context)
        except FastMCPValidationError as exc:
            cause = exc.__cause__
            name = context.message.name
            if not isinstance(cause, PydanticValidationError):
                raise refused(name, str(exc).splitlines()[0]) from None
            tool = await self.server.get_tool(name)
            schema = tool.parameters if tool is not None else {}
            raise refused(name, argument_error(cause, schema)) from None


def argument_error(error: PydanticValidationError, schema: dict[str, Any]) -> str:
    """The first problem of a failed argument validation, as one sentence."""
    problem = error.errors(include_url=False)[0]
    location = [str(part) for part in problem.get("loc", ()) if not isinstance(part, int)]
    field = location[0] if location else "arguments"
    prop = schema.get("properties", {}).get(field, {})
    given = problem.get("input")
    kind = problem.get("type", "")
    if kind == "missing":
        return f"{field} is required"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than") and \
            "minimum" in prop and "maximum" in prop:
        return f"{field} must be between {prop['minimum']} and {prop['maximum']}, got {given!r}"
    if kind == "literal_error" or "enum" in prop:
        choices = prop.get("enum") or [c for c in (problem.get("ctx") or {}).get("expected", "").split()]
        return f"{field} must be one of {', '.join(map(str, choices))}, got {given!r}"
    if kind == "unexpected_keyword_argument" or kind == "extra_forbidden":
        return f"unknown argument {field!r}"
    message = str(problem.get("msg", "is invalid")).rstrip(".")
    return f"{field}: {message[:1].lower() + message[1:]}, got {given!r}"


def build_server(api: DaemonApi) -> FastMCP:
    @asynccontextmanager
    async def lifespan(server: FastMCP) -> AsyncIterator[dict[str, Any]]:
        yield {"api": api}

    mcp = FastMCP("codequarry", instructions=INSTRUCTIONS, lifespan=lifespan, version=__version__)
    mcp.add_middleware(OneLineArgumentErrors(mcp))
    # results are described field by field (clients may use them); other answers are read
    # as text, so their top-level keys are enough
    mcp.add_middleware(CompactToolList({"search_code": None}, default_depth=0))

    @mcp.tool(annotations=READ_ONLY, output_schema=SEARCH_SCHEMA)
    async def search_code(
        query: Annotated[str, Field(description="A question in words or an identifier.")],
        ctx: Context,
        project: Annotated[str | None, Field(description="Project id or a path in one "
                                             "(default: the client's roots or cwd, else "
                                             "all).")] = None,
        projects: Annotated[list[str] | None, Field(description="Several project ids.")] = None,
        language: Annotated[str | None, Field(description="e.g. python, ts, go.")] = None,
        path_glob: Annotated[str | None, Field(description="e.g. 'src/**', '*.ts'.")] = None,
        limit: Annotated[int, Field(ge=1, le=50)] = 10,
        mode: Annotated[Literal["hybrid", "semantic", "lexical"],
                        Field(description="lexical for exact identifiers, semantic for "
                              "concepts.")] = "hybrid",
        detail: Annotated[Literal["paths", "snippet", "full"],
                          Field(description="snippet: the most relevant lines; full: whole "
                                "units.")] = "snippet",
        offset: Annotated[int, Field(ge=0, le=200, description="A page's next_offset.")] = 0,
        max_tokens: Annotated[int | None, Field(ge=100, le=50000, description="Answer budget "
                                                "(default 2000).")] = None,
    ) -> ToolResult:
        """Search indexed code by meaning and words before grepping or opening files: whole
        units (function, method, class) as `path:start-end symbol (kind) score` with their
        most relevant numbered lines."""
        chosen = [*([project] if project else []), *(projects or [])]
        daemon_api = _api(ctx)
        if not chosen:
            roots = await client_roots(ctx)
            chosen = sorted({found for root in roots for found in daemon_api.projects_for_root(root)})
        answer = await _call("search_code", daemon_api.search(
            query, chosen, mode, [language] if language else None, path_glob, limit, client_cwd(),
            detail, offset, max_tokens))
        return ToolResult(content=render_text(answer), structured_content=answer)

    @mcp.tool(annotations=ToolAnnotations(read_only_hint=False, destructive_hint=False,
                                          idempotent_hint=True, open_world_hint=False))
    async def index_repository(
        path: Annotated[str, Field(description="Absolute, or relative to the client's root "
                                   "or working directory.")],
        ctx: Context,
        project: Annotated[str | None, Field(description="Default: from the directory "
                                             "name.")] = None,
        wait: Annotated[Literal["none", "lexical", "complete"], Field(description=WAIT_HELP)] = "none",
    ) -> IndexAnswer:
        """Register a repository to index and keep fresh: its project id, files to index
        and a rough duration."""
        daemon_api = _api(ctx)
        roots = await client_roots(ctx)
        base = roots[0] if roots else client_cwd()

        async def progress(done: float, total: float | None, message: str) -> None:
            await ctx.report_progress(done, total, message)

        allowed = daemon_api.daemon.settings.config.mcp.allowed()
        answer = await _call("index_repository", daemon_api.index(
            path, project, base=base, allowed_roots=allowed, wait=wait, on_progress=progress))
        return cast(IndexAnswer, answer)

    @mcp.tool(annotations=READ_ONLY)
    async def list_projects(ctx: Context) -> ProjectsAnswer:
        """List indexed and registered projects: id, path, state and freshness."""
        return cast(ProjectsAnswer, await _call("list_projects", _api(ctx).list_projects()))

    @mcp.tool(annotations=READ_ONLY)
    async def get_status(
        ctx: Context,
        project: Annotated[str | None, Field(description="Default: all.")] = None,
    ) -> StatusAnswer:
        """Each project's files, chunks, vector coverage, pending changes and errors, and
        the daemon's."""
        return cast(StatusAnswer, await _call("get_status", _api(ctx).status(project)))

    @mcp.tool(annotations=READ_ONLY)
    async def recent_changes(
        ctx: Context,
        project: Annotated[str | None, Field(description="Default: all.")] = None,
        limit: Annotated[int, Field(ge=1, le=200)] = 20,
    ) -> ChangesAnswer:
        """The latest file changes (path, kind, time), newest first."""
        return cast(ChangesAnswer, await _call("recent_changes", _api(ctx).recent_changes(project, limit)))

    @mcp.resource("codequarry://projects", mime_type="application/json",
                  description="Every project with its path, state and freshness (as list_projects).")
    async def projects_resource(ctx: Context) -> str:
        return json.dumps(await _call("projects", _api(ctx).list_projects()))

    @mcp.resource("codequarry://projects/{project}/status", mime_type="application/json",
                  description="One project's index status (as get_status).")
    async def project_status_resource(project: str, ctx: Context) -> str:
        return json.dumps(await _call("status", _api(ctx).status(project)))

    _drop_unserved_capabilities(mcp)
    register_code_tools(mcp, api, READ_ONLY)
    _add_json_routes(mcp, api)
    return mcp


def _drop_unserved_capabilities(mcp: FastMCP) -> None:
    """No prompts are served, so none are advertised: without the handlers the SDK leaves
    `prompts` out of the capabilities."""
    handlers = getattr(mcp._mcp_server, "_request_handlers", None)
    if isinstance(handlers, dict):
        for method in ("prompts/list", "prompts/get"):
            handlers.pop(method, None)


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

    async def projects(body: dict[str, Any]) -> Any:
        return await api.list_projects()

    async def verify(body: dict[str, Any]) -> Any:
        return await api.verify(str(body.get("project", "")))

    async def purge(body: dict[str, Any]) -> Any:
        return await api.purge(str(body.get("project", "")), bool(body.get("unregister")))

    async def evaluate(body: dict[str, Any]) -> Any:
        return await api.evaluate(list(body.get("queries") or []), list(body.get("projects") or []),
                                  list(body.get("modes") or []))

    route("/api/verify", "POST")(verify)
    route("/api/purge", "POST")(purge)
    route("/api/eval", "POST")(evaluate)
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
    route("/api/projects", "GET")(projects)


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
    return mcp.http_app(path="/mcp", middleware=[AsgiMiddleware(TokenGuard, token=token)])
