"""The compact text of a search answer (what an agent's model reads, and what the CLI
prints), built from the answer's JSON alone. Standard library only: the CLI's fast path
prints it without importing the search machinery."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

FULL_LINE_CHARS = 240
UNNAMED_KINDS = ("block", "text")  # kinds the text does not name (no definition to speak of)


def read_hint(path: str, start: int, end: int | None, cli: bool) -> str:
    """How the reader asks for lines `start`-`end` (None: to the end) of `path`: the
    read_code tool for an agent, `codequarry show` for a person at the CLI."""
    location = f"{path}:{start}-{'' if end is None else end}"
    return f"codequarry show {location}" if cli else f"read_code {location}"


def clip(line: str, chars: int) -> str:
    return line if len(line) <= chars else line[: chars - 1] + "…"


def _block_text(numbers: Sequence[int], lines: dict[int, str], line_chars: int) -> list[str]:
    """Numbered code lines, dedented together, "…" where lines are skipped."""
    if not numbers:
        return []
    body = textwrap.dedent("\n".join(lines.get(n, "") for n in numbers)).split("\n")
    width = len(str(numbers[-1]))
    out: list[str] = []
    previous = None
    for number, line in zip(numbers, body, strict=True):
        if previous is not None and number != previous + 1:
            out.append("…")
        out.append(f"{number:>{width}} {clip(line.rstrip(), line_chars)}".rstrip())
        previous = number
    return out


def header_line(hit: dict[str, Any], shared: dict[str, str]) -> str:
    """`path:start-end symbol (kind) score`, plus the project/language when they vary and
    the matching spans when they are narrower than the unit (a kind shared by every result
    is said once, in the answer's first line)."""
    where = f"{hit['path']}:{hit['start_line']}-{hit['end_line']}"
    if "project" not in shared and "project" in hit:
        where = f"{hit['project']}:{where}"
    parts = [where]
    if hit.get("symbol"):
        parts.append(str(hit["symbol"]))
    kind = hit.get("kind")
    if kind and kind not in UNNAMED_KINDS and "kind" not in shared:
        parts.append(f"({kind})")
    if "language" not in shared and "language" in hit:
        parts.append(str(hit["language"]))
    parts.append(f"{hit['score']:.2f}")
    if hit.get("hits"):
        parts.append("hit " + ",".join(f"{s}-{e}" if s != e else str(s) for s, e in hit["hits"]))
    return " ".join(parts)


def result_text(hit: dict[str, Any], shared: dict[str, str], cli: bool = False) -> list[str]:
    """The lines of one result in the text answer, from its JSON form (`cli`: follow-ups
    named as CLI commands, see `read_hint`)."""
    out = [header_line(hit, shared)]
    snippet = hit.get("snippet") or ""
    ranges = hit.get("snippet_ranges") or []
    if snippet and ranges:
        numbers = [n for start, end in ranges for n in range(start, end + 1)]
        text_lines = snippet.split("\n")
        lines = dict(zip(numbers, text_lines, strict=False))
        out.extend(" " + line for line in _block_text(numbers, lines, FULL_LINE_CHARS))
        shown_to = numbers[-1] if numbers else hit["end_line"]
        if hit.get("truncated"):
            out.append(f" … {hit['end_line'] - shown_to} more lines: "
                       + read_hint(hit["path"], shown_to + 1, hit["end_line"], cli))
    return out


def render_text(answer: dict[str, Any], cli: bool = False) -> str:
    """The compact text an agent reads: one header line, then per result its location
    line and numbered code lines, then notes. Built from the JSON answer only. `cli`
    names the next page and the rest of a unit as the CLI's options and commands
    (`--offset N`, `codequarry show PATH:A-B`) instead of the MCP tools' arguments."""
    shared = {k: str(answer[k]) for k in ("project", "language", "kind", "path_glob") if answer.get(k)}
    results = answer.get("results", [])
    offset = int(answer.get("offset", 0))
    head = [f"{len(results)} result{'s' if len(results) != 1 else ''}"]
    if results and offset:
        head.append(f"#{offset + 1}-{offset + len(results)}")
    head.append(str(answer.get("mode", "hybrid")))
    head.extend(f"{k} {v}" for k, v in shared.items() if not (k == "kind" and v in UNNAMED_KINDS))
    if answer.get("next_offset") is not None:
        head.append(f"more: --offset {answer['next_offset']}" if cli
                    else f"more: offset={answer['next_offset']}")
    lines = [" · ".join(head)]
    for hit in results:
        lines.extend(result_text(hit, shared, cli))
    fresh = answer.get("freshness") or {}
    if fresh.get("pending_files") or fresh.get("vector_coverage", 1.0) < 1.0:
        lines.append(f"index: {fresh.get('pending_files', 0)} files pending, vectors cover "
                     f"{coverage_percent(fresh.get('vector_coverage', 1.0))}")
    lines.extend(f"note: {note}" for note in answer.get("notes", []))
    return "\n".join(lines)


def coverage_percent(fraction: float) -> str:
    """A vector coverage (0.0-1.0) as a percentage that reads 100% only when it is whole:
    0.42 -> "42%", 0.9991 and 0.99999 -> "99.9%" (a few missing vectors must not read as
    complete beside a note that vectors are missing)."""
    if fraction >= 1.0:
        return "100%"
    return f"{min(fraction, 0.999):.1%}" if fraction >= 0.995 else f"{fraction:.0%}"
