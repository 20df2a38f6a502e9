"""What tools/list costs: every MCP session sends the whole tool list to its model.

The schemas pydantic derives are verbose: a "title" on every field, `anyOf [T, null]` with
`"default": null` for every optional value, and the full shape of every nested object.
`compact_schema` keeps the same meaning in fewer characters (no titles, `"type": [T,
"null"]`), and with `depth` it describes nested objects only down to that level (deeper
ones are just `{"type": "object"}`: still true, so a client that validates structured
content against the output schema accepts every answer). `CompactToolList` applies it to
what tools/list returns; the tools still validate their arguments with the full schema.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mcp_types
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools import Tool

# keywords whose value is a mapping of names to schemas, not a schema
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_NULL = {"type": "null"}


def compact_schema(schema: dict[str, Any], depth: int | None = None) -> dict[str, Any]:
    """`schema` (a JSON Schema object, not modified) without titles, with nullable values
    as `"type": [T, "null"]`, and objects nested deeper than `depth` levels (None: no
    limit) reduced to `{"type": "object"}`. A new dict; accepts what `schema` accepts."""
    return _compact(schema, depth)


def _compact(schema: dict[str, Any], depth: int | None) -> dict[str, Any]:
    options = schema.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and _NULL in options:
        other = next(option for option in options if option != _NULL)
        if isinstance(other.get("type"), str) and "anyOf" not in other:
            merged = {**other, **{k: v for k, v in schema.items() if k not in ("anyOf", "default")}}
            merged["type"] = [other["type"], "null"]
            if schema.get("default") is not None:
                merged["default"] = schema["default"]
            return _compact(merged, depth)
    if depth is not None and depth < 0 and schema.get("type") in ("object", ["object", "null"]):
        return {"type": schema["type"]}
    inner = None if depth is None else depth - 1
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "title" and isinstance(value, str):
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            out[key] = {name: _compact(sub, inner) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, dict):
            out[key] = _compact(value, depth if key == "items" else inner)
        elif key in ("anyOf", "oneOf", "allOf", "prefixItems") and isinstance(value, list):
            out[key] = [_compact(sub, depth) if isinstance(sub, dict) else sub for sub in value]
        else:
            out[key] = value
    return out


class CompactToolList(Middleware):
    """tools/list with compact input schemas and output schemas described to `depth`
    levels of nested objects (per tool name; `default_depth` for the others)."""

    def __init__(self, depths: dict[str, int | None], default_depth: int | None = 1) -> None:
        self.depths = depths
        self.default_depth = default_depth

    async def on_list_tools(self, context: MiddlewareContext[mcp_types.ListToolsRequest],
                            call_next: CallNext[mcp_types.ListToolsRequest, Sequence[Tool]],
                            ) -> Sequence[Tool]:
        tools = await call_next(context)
        return [self.compact(tool) for tool in tools]

    def compact(self, tool: Tool) -> Tool:
        depth = self.depths.get(tool.name, self.default_depth)
        output = compact_schema(tool.output_schema, depth) if tool.output_schema else None
        return tool.model_copy(update={"parameters": compact_schema(tool.parameters),
                                       "output_schema": output})
