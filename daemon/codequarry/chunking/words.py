"""Code-aware words for full-text search.

PostgreSQL's parser would keep `parseConfig` as one word and split `parse_config` in
two, so neither form finds the other. Every identifier is expanded here into its joined
lowercase form plus its parts: `parseConfig`, `parse_config` and `ParseConfig` all give
"parseconfig parse config". Queries go through the same function.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*|[0-9]+")
# boundaries inside an identifier: lower->Upper, ACRONYMWord, letter<->digit
_PARTS = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")


def split_identifier(identifier: str) -> list[str]:
    """`HTTPServerError2` -> ["http", "server", "error", "2"]; `__init__` -> ["init"]."""
    return [part.lower() for part in _PARTS.findall(identifier)]


def code_words(text: str, limit: int = 20_000) -> str:
    """Space-separated words of `text` with every identifier expanded (see module doc)."""
    out: list[str] = []
    for match in _IDENTIFIER.finditer(text[:limit * 8]):
        token = match.group()
        parts = split_identifier(token)
        joined = "".join(parts)
        if len(parts) > 1:
            out.append(joined)
        out.extend(parts)
        if len(out) >= limit:
            break
    return " ".join(out)


def identifier_like(token: str) -> bool:
    """Does a query token look like code rather than English (snake_case, camelCase, dotted)?"""
    pascal = token[:1].isupper() and any(c.islower() for c in token) and any(
        c.isupper() for c in token[1:])  # HTTPServer, ParseConfig; not an acronym like HTTP
    return bool(re.search(r"[a-z][A-Z]|_|\.[A-Za-z]|\(\)|::|->", token)) or pascal
