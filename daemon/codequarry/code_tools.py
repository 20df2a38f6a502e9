"""Follow-up tools after a search: find a definition, read code from disk, find references.

Each tool returns a JSON-able dict (the structured answer) and has a renderer for the
compact text an agent reads. read_code reads the file as it is on disk now (the index may
lag a second behind) and only inside registered trees, after resolving symlinks, never a
file the project's ignore rules exclude or that looks like a secret.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from codequarry.answer_text import read_hint
from codequarry.answers import CHARS_PER_TOKEN
from codequarry.chunking.words import code_words
from codequarry.config import ProjectConfig
from codequarry.errors import UsageError
from codequarry.ignore import IgnoreRules
from codequarry.models import DefinitionHit, definition_match_rank
from codequarry.store.db import Store
from codequarry.store.project import Filters, ProjectStore

MAX_SYMBOLS = 50
MAX_READ_LINES = 2000
DEFAULT_READ_TOKENS = 4000
MAX_READ_TOKENS = 50_000
MAX_READ_BYTES = 4_000_000
DEFAULT_REFERENCES = 100
MAX_REFERENCES = 500
REFERENCE_CANDIDATES = 2000
LINE_CHARS = 240
KINDS = ("function", "method", "class", "interface", "struct", "enum", "trait", "impl", "module",
         "namespace", "object", "type")
# Names that hold credentials; never read even when the ignore rules let them through
_SECRET_NAME = re.compile(
    r"^(\.env(\..*)?|.*\.(pem|key|p12|pfx|jks|keystore)|id_(rsa|dsa|ecdsa|ed25519)(\.pub)?|"
    r"\.netrc|\.pgpass|\.npmrc|\.pypirc|credentials(\.json)?|secrets?\.(json|ya?ml|toml))$",
    re.IGNORECASE)
_DEFINITION_WORDS = ("def", "class", "function", "func", "fn", "interface", "struct", "enum",
                     "trait", "type", "object", "module", "record")


@dataclass(frozen=True, slots=True)
class _Located:
    project: ProjectConfig
    rel_path: str  # relative to the project root, "/"-separated, symlinks resolved
    real: Path


class CodeTools:
    """The three tools over one store and the registered projects (roots, ignore rules)."""

    def __init__(self, store: Store, projects: Sequence[ProjectConfig]) -> None:
        self.store = store
        self.projects = list(projects)

    # ---- find_symbol -------------------------------------------------------------------

    async def find_symbol(self, name: str, kind: str | None = None, projects: Sequence[str] = (),
                          limit: int = 10) -> dict[str, Any]:
        """Definitions by name or qualified name ("parse", "Color.parse"): exact matches
        first (case-sensitive, then not), then prefixes, then close spellings.
        Returns {"name", "definitions": [{project, path, name, qualified_name, kind,
        language, start_line, end_line, signature}], "notes"}."""
        name = name.strip()
        if not name or len(name) > 200:
            raise UsageError("the symbol name must be 1-200 characters")
        if kind is not None and kind not in KINDS:
            raise UsageError(f"unknown kind {kind!r}; known: {', '.join(KINDS)}")
        if not 1 <= limit <= MAX_SYMBOLS:
            raise UsageError(f"limit must be between 1 and {MAX_SYMBOLS}, got {limit}")
        hits: list[DefinitionHit] = []
        for store in await self._stores(projects):
            hits.extend(_definition_hit(store.project_id, found)
                        for found in await store.find_definitions(name, kind, limit))
        hits.sort(key=lambda h: (definition_match_rank(name, h), len(h.qualified_name), h.project,
                                 h.path, h.start_line))
        notes = []
        if not hits:
            notes.append(f"no definition named {name!r}" + (f" of kind {kind}" if kind else ""))
        elif definition_match_rank(name, hits[0]) > 1:
            notes.append(f"no exact match for {name!r}; showing similar names")
        return {"name": name, "definitions": [
            hit.to_json() | {"signature": self._signature(hit)} for hit in hits[:limit]],
            "notes": notes}

    def _signature(self, hit: DefinitionHit) -> str:
        """The definition's first code line from disk (decorators and comments skipped)."""
        try:
            located = self._locate(hit.path, hit.project)
            lines = _read_lines(located.real)
        except UsageError:
            return ""
        span = [line.strip() for line in lines[hit.start_line - 1 : min(hit.end_line, hit.start_line + 30)]]
        named = re.compile(rf"(?<![\w$]){re.escape(hit.name)}(?![\w$])")
        code = [line for line in span if line and not line.startswith(("@", "#", "//", "/*", "*"))]
        # the line that names the definition; a span may start with merged neighbours
        return _clip(next((line for line in code if named.search(line)), code[0] if code else ""))

    # ---- read_code ---------------------------------------------------------------------

    async def read_code(self, path: str | None = None, start_line: int | None = None,
                        end_line: int | None = None, symbol: str | None = None,
                        project: str | None = None, max_tokens: int | None = None) -> dict[str, Any]:
        """Lines of a file as they are on disk now, bounded by `max_tokens` (characters/4,
        default 4000). `path` may carry the lines as answers print them
        (`path:START-END`, `path:LINE`, `path:START-`) when no line argument is given. With
        `symbol`, the lines of that definition (restricted to `path` when given). Returns
        {"project", "path", "start_line", "end_line", "total_lines", "content",
        "next_start_line" (None at the end), "notes"}."""
        if path and start_line is None and end_line is None:
            path, start_line, end_line = parse_location(path)
        budget = (max_tokens or DEFAULT_READ_TOKENS)
        if not 100 <= budget <= MAX_READ_TOKENS:
            raise UsageError(f"max_tokens must be between 100 and {MAX_READ_TOKENS}, got {budget}")
        notes: list[str] = []
        if symbol:
            found = await self.find_symbol(symbol, None, [project] if project else [], MAX_SYMBOLS)
            wanted = path.removeprefix("./") if path else None
            exact = [d for d in found["definitions"]
                     if definition_match_rank(symbol, _as_hit(d)) <= 1
                     and (wanted is None or d["path"] == wanted or wanted.endswith("/" + d["path"]))]
            if not exact:
                raise UsageError(f"no definition named {symbol!r}" + (f" in {path}" if path else ""))
            chosen = exact[0]
            if len(exact) > 1:
                others = ", ".join(f"{d['path']}:{d['start_line']}" for d in exact[1:6])
                notes.append(f"{symbol} is also defined at {others}")
            path, project = chosen["path"], chosen["project"]
            start_line = start_line or chosen["start_line"]
            end_line = end_line or chosen["end_line"]
        if not path:
            raise UsageError("give a path or a symbol")
        located = self._locate(path, project)
        lines = _read_lines(located.real)
        total = len(lines)
        start = max(1, start_line or 1)
        if start > max(total, 1):
            raise UsageError(f"{located.rel_path} has {total} lines; start_line {start} is past its end")
        end = min(total, end_line or total, start + MAX_READ_LINES - 1)
        if end < start:
            raise UsageError(f"end_line {end_line} is before start_line {start}")
        chars = budget * CHARS_PER_TOKEN - 200
        shown: list[str] = []
        for number in range(start, end + 1):
            line = lines[number - 1]
            chars -= len(line) + len(str(number)) + 2
            if chars < 0 and shown:
                break
            shown.append(line)
        last = start + len(shown) - 1
        following = last + 1 if last < total and (end_line is None or last < end_line) else None
        if last < end:
            notes.append(f"stopped at line {last} (max_tokens {budget})")
        return {"project": located.project.id, "path": located.rel_path, "start_line": start,
                "end_line": last, "total_lines": total, "content": "\n".join(shown),
                "next_start_line": following, "notes": notes}

    def _locate(self, path: str, project: str | None) -> _Located:
        """Resolve `path` (absolute, or relative to a project root) to a readable file of a
        registered project; UsageError when it is outside them, excluded or unreadable."""
        if not path.strip():
            raise UsageError("the path is empty")
        candidates: list[tuple[ProjectConfig, Path]] = []
        if os.path.isabs(os.path.expanduser(path)):
            candidates = [(p, Path(os.path.abspath(os.path.expanduser(path)))) for p in self.projects]
        else:
            chosen = [self._project(project)] if project else self.projects
            candidates = [(p, p.path / path) for p in chosen if (p.path / path).exists()]
            if not candidates:
                where = f"project {project}" if project else "any registered project"
                raise UsageError(f"{path} does not exist in {where}")
        for config, candidate in candidates:
            # the path as given must not be excluded (a symlink must not launder .env)
            given = _relative(candidate, config.path)
            reason = _exclusion(config, given) if given is not None else None
            if reason is not None:
                raise UsageError(f"{given} {reason}; codequarry does not read it")
        reals = {os.path.realpath(candidate) for _, candidate in candidates}
        if len(reals) > 1:
            names = ", ".join(config.id for config, _ in candidates)
            raise UsageError(f"{path} exists in several projects ({names}); say which with project")
        real = Path(reals.pop())
        owners = [(p, _relative(real, Path(os.path.realpath(p.path)))) for p in self.projects]
        inside = [(p, rel) for p, rel in owners if rel is not None]
        if not inside:
            raise UsageError(f"{path} is outside every registered project (after resolving symlinks)")
        config, rel = max(inside, key=lambda item: len(item[0].path.parts))  # nested: the deepest
        assert rel is not None
        reason = _exclusion(config, rel)
        if reason is not None:
            raise UsageError(f"{rel} {reason}; codequarry does not read it")
        if not real.is_file():
            raise UsageError(f"{rel} is not a regular file")
        return _Located(config, rel, real)

    def _project(self, project_id: str) -> ProjectConfig:
        for config in self.projects:
            if config.id == project_id:
                return config
        known = ", ".join(p.id for p in self.projects) or "none registered"
        raise UsageError(f"unknown project {project_id!r} (known: {known})")

    # ---- find_references ---------------------------------------------------------------

    async def find_references(self, name: str, projects: Sequence[str] = (), filters: Filters | None = None,
                              limit: int = DEFAULT_REFERENCES) -> dict[str, Any]:
        """Lines where the identifier `name` occurs as a whole identifier (not inside a
        longer one), from the index, grouped by file. Returns {"name", "total", "files":
        [{"project", "path", "lines": [{"line", "text", "definition"}]}], "notes"}."""
        identifier = name.strip().replace("::", ".").rsplit(".", 1)[-1]
        if not re.fullmatch(r"[A-Za-z_$][\w$]*", identifier):
            raise UsageError(f"find_references needs an identifier, got {name!r}")
        if not 1 <= limit <= MAX_REFERENCES:
            raise UsageError(f"limit must be between 1 and {MAX_REFERENCES}, got {limit}")
        pattern = re.compile(rf"(?<![\w$]){re.escape(identifier)}(?![\w$])")
        definition = re.compile(
            rf"\b({'|'.join(_DEFINITION_WORDS)})\s+{re.escape(identifier)}(?![\w$])")
        found: dict[tuple[str, str], dict[int, str]] = {}
        words = code_words(identifier)
        for store in await self._stores(projects):
            for row in await store.chunks_with_words(words, filters or Filters(), REFERENCE_CANDIDATES):
                if _secret(row.path):
                    continue  # read_code would refuse it: do not quote it either
                for number, line in enumerate(row.chunk.content.split("\n"), row.chunk.start_line):
                    if pattern.search(line):
                        found.setdefault((store.project_id, row.path), {})[number] = line
        total = sum(len(lines) for lines in found.values())
        files, shown = [], 0
        for (project, path), lines in sorted(found.items()):
            if shown >= limit:
                break
            entries = []
            for number in sorted(lines)[: limit - shown]:
                text = lines[number].strip()
                entries.append({"line": number, "text": _clip(text),
                                "definition": bool(definition.search(text))})
            shown += len(entries)
            files.append({"project": project, "path": path, "count": len(lines), "lines": entries})
        notes = []
        if not total:
            notes.append(f"no occurrence of the identifier {identifier!r} in the index")
        elif shown < total:
            notes.append(f"showing {shown} of {total} occurrences; narrow with path_glob or language")
        return {"name": identifier, "total": total, "file_count": len(found), "files": files,
                "notes": notes}

    async def _stores(self, projects: Sequence[str]) -> list[ProjectStore]:
        if projects:
            return [await self.store.project(p) for p in dict.fromkeys(projects)]
        return [await self.store.project(p) for p in await self.store.indexed_projects()]


def _definition_hit(project: str, found: Any) -> DefinitionHit:
    """A store answer as a DefinitionHit: already one, or the store layout v2's
    (path, language, SymbolDefinition) tuple."""
    if isinstance(found, DefinitionHit):
        return found
    path, language, definition = found
    return DefinitionHit(project, path, definition.name, definition.qualified_name, definition.kind,
                         language, definition.start_line, definition.end_line)


def _as_hit(data: dict[str, Any]) -> DefinitionHit:
    return DefinitionHit(data["project"], data["path"], data["name"], data["qualified_name"],
                         data["kind"], data["language"], data["start_line"], data["end_line"])


def _relative(path: Path, root: Path) -> str | None:
    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    text = rel.as_posix()
    return None if text in ("", ".") or text.startswith("..") else text


def _secret(rel_path: str) -> bool:
    return any(_SECRET_NAME.match(part) for part in rel_path.split("/"))


def _exclusion(config: ProjectConfig, rel_path: str) -> str | None:
    """Why `rel_path` of `config` is never read (None: it may be read)."""
    if _secret(rel_path):
        return "looks like a secret (credentials, keys)"
    if IgnoreRules(config.path, config.exclude, config.include).is_ignored(rel_path):
        return f"is excluded by the ignore rules of {config.id}"
    return None


def _read_lines(path: Path) -> list[str]:
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_READ_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {path.name}: {exc.strerror}") from None
    if len(data) > MAX_READ_BYTES:
        raise UsageError(f"{path.name} is larger than {MAX_READ_BYTES} bytes")
    if b"\0" in data[:8192]:
        raise UsageError(f"{path.name} is a binary file")
    lines = data.decode("utf-8", errors="replace").split("\n")
    if len(lines) > 1 and not lines[-1]:
        lines.pop()  # the newline ending the last line starts no line of its own (as `wc -l`)
    return lines


def _clip(text: str, chars: int = LINE_CHARS) -> str:
    return text if len(text) <= chars else text[: chars - 1] + "…"


# ---- the compact text of each answer ---------------------------------------------------


def render_symbols(answer: dict[str, Any]) -> str:
    """`N definitions of NAME`, then `path:start-end qualified_name (kind) language` and the
    signature line for each."""
    definitions = answer["definitions"]
    lines = [f"{len(definitions)} definition{'s' if len(definitions) != 1 else ''} of {answer['name']}"]
    projects = {d["project"] for d in definitions}
    for d in definitions:
        where = f"{d['path']}:{d['start_line']}-{d['end_line']}"
        if len(projects) > 1:
            where = f"{d['project']}:{where}"
        lines.append(f"{where} {d['qualified_name']} ({d['kind']}) {d['language']}")
        if d.get("signature"):
            lines.append(f"  {d['start_line']} {d['signature']}")
    lines.extend(f"note: {note}" for note in answer.get("notes", []))
    return "\n".join(lines)


def parse_location(location: str) -> tuple[str, int | None, int | None]:
    """`PATH`, `PATH:LINE`, `PATH:START-END` or `PATH:START-` (to the end, within the
    budget) -> (path, start, end); end None: no end given."""
    match = re.fullmatch(r"(.+?):(\d+)(?:(-)(\d*))?", location)
    if match is None:
        return location, None, None
    start = int(match.group(2))
    if match.group(3) and not match.group(4):
        return match.group(1), start, None
    end = int(match.group(4)) if match.group(4) else start
    if end < start:
        raise UsageError(f"{location}: the range ends before it starts")
    return match.group(1), start, end


def render_code(answer: dict[str, Any], cli: bool = False) -> str:
    """`path:start-end of N lines`, then the numbered lines, the notes, and where to
    continue when the file goes on past a cut (as read_code's argument, or with `cli` as
    a `codequarry show` command)."""
    start, end = answer["start_line"], answer["end_line"]
    lines = [f"{answer['project']}:{answer['path']}:{start}-{end} of {answer['total_lines']} lines"]
    width = len(str(end))
    for number, line in enumerate(answer["content"].split("\n"), start):
        lines.append(f"{number:>{width}} {line}".rstrip())
    lines.extend(f"note: {note}" for note in answer.get("notes", []))
    following = answer.get("next_start_line")
    if following is not None:
        lines.append("note: continue with " + (read_hint(answer["path"], following, None, cli=True)
                                                 if cli else f"start_line={following}"))
    return "\n".join(lines)


def render_references(answer: dict[str, Any]) -> str:
    """`N reference(s) to NAME in M file(s)`, then per file its path and numbered lines ("*"
    after the number marks a line that defines the name: a word would read as code, as in
    Python's `def`)."""
    defines = any(ref["definition"] for entry in answer["files"] for ref in entry["lines"])
    total, files = answer["total"], answer["file_count"]
    lines = [f"{total} reference{'s' if total != 1 else ''} to {answer['name']} in {files} "
             f"file{'s' if files != 1 else ''}"
             + (" (* = definition)" if defines else "")]
    projects = {f["project"] for f in answer["files"]}
    for entry in answer["files"]:
        where = f"{entry['project']}:{entry['path']}" if len(projects) > 1 else entry["path"]
        lines.append(f"{where} ({entry['count']})")
        for ref in entry["lines"]:
            mark = "*" if ref["definition"] else ""
            lines.append(f"  {ref['line']}{mark} {ref['text']}")
    lines.extend(f"note: {note}" for note in answer.get("notes", []))
    return "\n".join(lines)
