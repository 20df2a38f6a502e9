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
                    _HEADING.match(lines[end]) or (not lines[end - 1].strip()
                                                   and not _after_heading(lines, start, end - 1))):
                best_break = end
        if end < len(lines) and best_break is not None:
            end = best_break
        content = "\n".join(lines[start:end])
        if content.strip():
            chunks.append(Chunk(first_line + start, first_line + end - 1, content, language,
                                symbol, kind))
        start = end
    return chunks


def _after_heading(lines: list[str], start: int, index: int) -> bool:
    """Is line `index` (blank) preceded, past other blank lines, by a heading? Ending a
    window there would cut the heading off from its section."""
    while index > start and not lines[index - 1].strip():
        index -= 1
    return index > start and bool(_HEADING.match(lines[index - 1]))
