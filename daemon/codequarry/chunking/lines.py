"""Line windows for text without a grammar (Markdown, YAML, TOML, SQL, ...).

Windows fill up to the token budget and prefer to end at a blank line or just before a
heading, so paragraphs and sections stay together. Windows never overlap.
"""

from __future__ import annotations

import re

from codequarry.chunking.budget import Budget, estimate_tokens
from codequarry.models import Chunk

_HEADING = re.compile(r"^(#{1,6}\s|\[[^\]]+\]\s*$|---\s*$)")


def line_windows(lines: list[str], language: str, budget: Budget, first_line: int = 1,
                 symbol: str | None = None, kind: str = "text") -> list[Chunk]:
    """Split `lines` (first one numbered `first_line`) into consecutive windows."""
    chunks: list[Chunk] = []
    start = 0
    while start < len(lines):
        end = start
        used = 0
        best_break = None
        while end < len(lines):
            cost = estimate_tokens(lines[end]) + 1
            if used + cost > budget.max_tokens and end > start:
                break
            used += cost
            end += 1
            if end < len(lines) and used >= budget.max_tokens // 2 and (
                    not lines[end - 1].strip() or _HEADING.match(lines[end])):
                best_break = end
        if end < len(lines) and best_break is not None:
            end = best_break
        content = "\n".join(lines[start:end])
        if content.strip():
            chunks.append(Chunk(first_line + start, first_line + end - 1, content, language,
                                symbol, kind))
        start = end
    return chunks

