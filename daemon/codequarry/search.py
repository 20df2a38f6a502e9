"""Hybrid code search: full-text (code-aware words, BM25-shaped scoring) + HNSW vectors, fused.

Fusion is a weighted sum of each side's scores in standard deviations, with a lexical
weight that depends on the query: a lone identifier is mostly a request for that name,
so words weigh double; code in a longer query weighs words as much as vectors; an
English question leans on vectors, and when its two sides share nothing in their top
10, vectors decide. Reciprocal-rank and min-max fusion scored lower on the tuning sets
(bench/tune_fusion.py).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import anyio

from codequarry.chunking.words import code_words, identifier_like
from codequarry.embedding import Embedder
from codequarry.errors import CodequarryError, UsageError
from codequarry.models import Freshness, SearchHit, SearchResponse
from codequarry.store.db import Store, is_transient
from codequarry.store.project import LEXICAL_CANDIDATES, ChunkRow, Filters, ProjectStore

Mode = Literal["hybrid", "semantic", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "lexical")
MAX_LIMIT = 50
SNIPPET_LINES = 40
SNIPPET_CHARS = 2400


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    projects: tuple[str, ...] = ()  # empty: every indexed project
    mode: Mode = "hybrid"
    languages: tuple[str, ...] = ()
    path_glob: str | None = None
    limit: int = 10

    def validate(self) -> SearchRequest:
        if not self.query.strip():
            raise UsageError("the query is empty")
        if len(self.query) > 2000:
            raise UsageError("the query is longer than 2000 characters")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        return self


@dataclass(frozen=True, slots=True)
class _Ranked:
    project: str
    chunk_id: int
    score: float


def glob_to_regex(glob: str) -> str:
    """A path glob as a PostgreSQL regex: `*` stays within a directory, `**` crosses
    them, and a glob without "/" matches the file name at any depth (like .gitignore)."""
    if not glob or len(glob) > 500:
        raise UsageError("path glob must be 1-500 characters")
    pattern = glob.lstrip("/") if "/" in glob.rstrip("/") else "**/" + glob
    if pattern.endswith("/"):
        pattern += "**"
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end].replace("\\", "\\\\")
            out.append("[" + ("^/" + body[1:] if body[:1] in "!^" else body) + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    regex = "^" + "".join(out) + "$"
    try:
        re.compile(regex)  # close enough to PostgreSQL's syntax to catch e.g. [z-a]
    except re.error as exc:
        raise UsageError(f"invalid path glob {glob!r}: {exc}") from None
    return regex


class Searcher:
    def __init__(self, store: Store, embedder: Embedder | None) -> None:
        self.store = store
        self.embedder = embedder

    async def search(self, request: SearchRequest, model_id: str | None) -> SearchResponse:
        """`model_id` is the embedder's id once it is ready, else None (lexical only)."""
        request.validate()
        try:
            return await self._search(request, model_id)
        except Exception as exc:
            if not is_transient(exc):
                raise
            # pooled connections die with a database restart, and the pool drops them all
            # on the first failure: one retry runs on fresh connections
            return await self._search(request, model_id)

    async def _search(self, request: SearchRequest, model_id: str | None) -> SearchResponse:
        stores = await self._stores(request.projects)
        filters = Filters(tuple(request.languages),
                          glob_to_regex(request.path_glob) if request.path_glob else None)
        notes: list[str] = []
        fetch = max(request.limit * 3, 30)
        freshness: list[Freshness] = []
        semantic: list[_Ranked] = []
        lexical: list[_Ranked] = []
        symbol_hits: set[str] = set()

        async def read_freshness() -> None:
            freshness.extend([await store.freshness() for store in stores])

        async def run_semantic() -> None:
            semantic.extend(await self._semantic(request.query, stores, filters, fetch, model_id, notes))

        async def run_lexical() -> None:
            lexical.extend(await self._lexical(request.query, stores, filters, fetch))

        async def run_symbols() -> None:
            symbol_hits.update(await self._symbol_hits(request.query, stores))

        # independent queries on separate pooled connections: PostgreSQL runs them in
        # parallel backends while the embedding (if any) runs in its thread
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(read_freshness)
                if request.mode in ("hybrid", "semantic"):
                    tasks.start_soon(run_semantic)
                if request.mode in ("hybrid", "lexical") or (request.mode == "semantic" and model_id is None):
                    tasks.start_soon(run_lexical)
                if request.mode == "hybrid":  # only the fusion weighs symbol hits
                    tasks.start_soon(run_symbols)
        except ExceptionGroup as group:  # the first failure says it: a broken connection, mostly
            raise group.exceptions[0] from None
        merged_freshness = _merge_freshness(freshness)
        if request.mode == "semantic":
            ranked = semantic or lexical
        elif request.mode == "lexical":
            ranked = lexical
        else:
            weight = lexical_weight(request.query, bool(symbol_hits), agreement(lexical, semantic))
            ranked = fuse(lexical, semantic, weight)
        if merged_freshness.vector_coverage < 1.0 and request.mode != "lexical":
            notes.append(f"vectors cover {merged_freshness.vector_coverage:.0%} of chunks; "
                         "semantic results may be missing until embedding finishes")
        hits = await self._hits(ranked[: request.limit], stores)
        return SearchResponse(hits, merged_freshness, request.mode, notes)

    async def _stores(self, projects: Sequence[str]) -> list[ProjectStore]:
        if projects:
            return [await self.store.project(project) for project in dict.fromkeys(projects)]
        return [await self.store.project(p) for p in await self.store.indexed_projects()]

    async def _semantic(self, query: str, stores: list[ProjectStore], filters: Filters, fetch: int,
                        model_id: str | None, notes: list[str]) -> list[_Ranked]:
        if self.embedder is None or model_id is None:
            notes.append("the embedder is not available; showing lexical results")
            return []
        try:
            vector = (await self.embedder.embed_query(query))[0]
        except CodequarryError as exc:
            notes.append(f"semantic search unavailable ({exc}); showing lexical results")
            return []
        ranked: list[_Ranked] = []
        for store in stores:
            if (await store.model())[0] != model_id:
                continue
            hits = await store.semantic(vector, filters, fetch, self.store.iterative_scans)
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in hits)
        return sorted(ranked, key=lambda r: -r.score)[:fetch]

    async def _lexical(self, query: str, stores: list[ProjectStore], filters: Filters,
                       fetch: int) -> list[_Ranked]:
        words = code_words(query)
        ranked: list[_Ranked] = []
        for store in stores:
            lexemes, total, freqs = await store.query_terms(words)
            if not lexemes:
                continue
            terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
            match = _match_terms(lexemes, freqs, total)
            hits = await store.lexical(terms, match, filters, fetch)
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in hits)
        return sorted(ranked, key=lambda r: -r.score)[:fetch]

    async def _symbol_hits(self, query: str, stores: list[ProjectStore]) -> set[str]:
        """The query's identifiers that name some chunk: evidence for trusting words."""
        names = sorted({token.lower() for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)
                        if len(token) > 2})
        hits: set[str] = set()
        for store in stores if names else ():
            hits |= await store.symbols_matching(names)
        return hits

    async def _hits(self, ranked: list[_Ranked], stores: list[ProjectStore]) -> list[SearchHit]:
        by_project: dict[str, dict[int, ChunkRow]] = {}
        for store in stores:
            ids = [r.chunk_id for r in ranked if r.project == store.project_id]
            if ids:
                by_project[store.project_id] = await store.chunk_rows(ids)
        hits = []
        for r in ranked:
            row = by_project.get(r.project, {}).get(r.chunk_id)
            if row is None:
                continue  # replaced between the two queries
            chunk = row.chunk
            hits.append(SearchHit(r.project, row.path, chunk.start_line, chunk.end_line, chunk.symbol,
                                  chunk.kind, chunk.language, round(r.score, 6), _snippet(chunk.content)))
        return hits


# Tuned with bench/tune_fusion.py on the tuning sets only (bench/data/README.md): z-score
# fusion with these weights had the best mean MRR@10 over the four tuning sets (within
# 0.002 of the best variant) while staying above the better single mode on each of them.
# An English question leans on vectors; a query with code in it (an identifier, a dotted
# name, an error class) weighs words as much as vectors; a lone identifier even more.
ENGLISH_WEIGHT = 0.8
CODE_WEIGHT = 1.0
SINGLE_IDENTIFIER_WEIGHT = 2.0
# An English query whose lexical and semantic top results share nothing: the words matched
# something other than what was meant, so the vectors decide (weight * this factor).
DISAGREEMENT_FACTOR = 0.5
AGREEMENT_DEPTH = 10


def code_like(token: str) -> bool:
    """A query token that only code contains: an identifier (snake_case, camelCase, dotted,
    call), or a word glued to code punctuation (`--help`, `x-www-form`, `a::b`)."""
    return identifier_like(token) or bool(re.search(r"\w(::|->|=)\w|^--?\w|\w-\w+-\w", token))


def agreement(lexical: Sequence[_Ranked], semantic: Sequence[_Ranked], depth: int = AGREEMENT_DEPTH) -> int:
    """How many chunks both sides rank in their top `depth`."""
    words = {(r.project, r.chunk_id) for r in lexical[:depth]}
    return sum(1 for r in semantic[:depth] if (r.project, r.chunk_id) in words)


def lexical_weight(query: str, symbol_hit: bool, shared: int | None = None) -> float:
    """How much to trust word matches for this query, relative to vectors (1.0).

    `symbol_hit`: a query word is the exact name of some chunk's symbol; `shared`: how many
    chunks the two sides share in their top 10 (None: unknown). A lone identifier or
    symbol name leans on words; a query with code-like tokens weighs them a little under
    vectors; an English question leans on vectors, and entirely so when the sides disagree.
    """
    tokens = query.split()
    code = any(code_like(t) for t in tokens)
    if len(tokens) == 1 and (code or symbol_hit):
        return SINGLE_IDENTIFIER_WEIGHT
    if code:
        return CODE_WEIGHT
    if shared == 0:
        return ENGLISH_WEIGHT * DISAGREEMENT_FACTOR
    return ENGLISH_WEIGHT


def fuse(lexical: list[_Ranked], semantic: list[_Ranked], lexical_weight: float) -> list[_Ranked]:
    """Weighted sum of each side's scores in standard deviations above that side's lowest
    fetched score (a chunk one side did not fetch gets 0 from it): unlike rank fusion, a
    chunk the vectors place far ahead keeps its lead unless the words strongly disagree,
    and unlike min-max, one outlier does not squash the rest of a side's list."""
    scores: dict[tuple[str, int], float] = {}
    for weight, ranked in ((lexical_weight, lexical), (1.0, semantic)):
        if not ranked:
            continue
        values = [item.score for item in ranked]
        bottom = min(values)
        mean = sum(values) / len(values)
        spread = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        for item in ranked:
            key = (item.project, item.chunk_id)
            normalised = (item.score - bottom) / spread if spread > 0 else 1.0
            scores[key] = scores.get(key, 0.0) + weight * normalised
    return [_Ranked(p, i, s) for (p, i), s in sorted(scores.items(), key=lambda kv: -kv[1])]


def _match_terms(lexemes: list[str], freqs: dict[str, float], total: int,
                 budget: int = LEXICAL_CANDIDATES) -> list[str]:
    """The rarest query terms whose matches together fit the ranked candidate set, so
    that every chunk containing them is ranked (not an arbitrary subset); chunks that
    only contain commoner terms would rank below them anyway."""
    chosen: list[str] = []
    expected = 0.0
    for lexeme in sorted(lexemes, key=lambda lex: freqs.get(lex, 0.0)):
        rows = freqs.get(lexeme, 0.0) * total
        if chosen and expected + rows > budget:
            break
        chosen.append(lexeme)
        expected += rows
    return chosen


def _idf(fraction: float, total: int) -> float:
    n = fraction * total
    return math.log((total - n + 0.5) / (n + 0.5) + 1.0)


def _merge_freshness(parts: list[Freshness]) -> Freshness:
    if not parts:
        return Freshness(0, 1.0, None)
    coverage = min(part.vector_coverage for part in parts)
    latest = max((p.last_indexed_change for p in parts if p.last_indexed_change), default=None)
    return Freshness(sum(part.pending_files for part in parts), coverage, latest)


def _snippet(content: str) -> str:
    lines = content.split("\n")[:SNIPPET_LINES]
    return "\n".join(lines)[:SNIPPET_CHARS]

