"""Hybrid code search: full-text (code-aware words, BM25-shaped scoring) + HNSW vectors, fused.

Fusion is a weighted sum of each side's scores in standard deviations (over the top
FUSION_DEPTH of each side), with a lexical weight that depends on the query: a lone
identifier is mostly a request for that name, so words weigh double; code in a longer
query weighs words as much as vectors; an English question leans on vectors, and when its
two sides point at no common code unit in their top 10, vectors decide. Reciprocal-rank
and min-max fusion scored lower on the tuning sets (bench/tune_fusion.py). A file the
query names (`ls` in "how does npm ls print the tree") then gets a share more of its
fused score.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import posixpath
import re
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import anyio

from codequarry.answer_text import coverage_percent
from codequarry.answers import (
    DEFAULT_MAX_TOKENS,
    Detail,
    RealPaths,
    Unit,
    name_by_match,
    query_words,
    rank_units,
    shape,
    unit_key,
    validate_shape,
)
from codequarry.chunking.languages import known_languages
from codequarry.chunking.words import code_words, identifier_like
from codequarry.config import EmbedderConfig
from codequarry.embedding import Embedder, create_embedder
from codequarry.errors import CodequarryError, UsageError
from codequarry.logs import get_logger
from codequarry.models import Freshness, SearchResponse
from codequarry.store import fanout
from codequarry.store.db import Store, is_transient
from codequarry.store.project import (
    LEXICAL_CANDIDATES,
    Filters,
    HitSpan,
    ProjectStore,
    Remembered,
    SearchContext,
    VectorSpace,
)

Mode = Literal["hybrid", "semantic", "lexical"]
MODES: tuple[Mode, ...] = ("hybrid", "semantic", "lexical")
MAX_LIMIT = 50
ROOTS_SECONDS = 5.0  # how long _project_roots trusts what it read
log = get_logger(__name__)
# Chunks ranked per retriever: fixed for a given limit, so that the pages of one query
# (offset 0, 10, 20 ...) come from one ranking and never repeat or skip a unit.
CANDIDATE_POOL = 100
# The fusion's normalisation sees the top FUSION_DEPTH of each list; deeper candidates rank
# after them, in their own fused order, to fill more units. Over code units (chunker 3),
# depth 30 beat the whole pool on the tuning sets: pooled MRR@10 0.524 vs 0.518, worst
# margin over the better half +0.039 vs +0.023 (bench/tune_fusion.py; bench/README.md).
FUSION_DEPTH = 30
# Up to this many projects, the rankings' statements also say where each candidate lies
# (Searcher._spans_with_rankings)
SPANS_WITH_RANKINGS_UP_TO = 4

# What people type for a language -> its canonical name (detect_language's labels)
LANGUAGE_ALIASES = {
    "py": "python", "python3": "python", "js": "javascript", "node": "javascript",
    "jsx": "javascript", "mjs": "javascript", "cjs": "javascript", "ts": "typescript",
    "golang": "go", "rs": "rust", "c++": "cpp", "cxx": "cpp", "cc": "cpp", "hpp": "cpp",
    "cs": "csharp", "c#": "csharp", "kt": "kotlin", "kts": "kotlin", "rb": "ruby",
    "sh": "bash", "shell": "bash", "zsh": "bash", "md": "markdown", "yml": "yaml",
    "h": "c", "scala3": "scala", "sc": "scala", "ex": "elixir", "hs": "haskell",
}


def normalise_language(name: str) -> str:
    """A language as typed ("Python", "py", "C++") -> its canonical name; UsageError
    listing the known names when there is none."""
    known = known_languages()
    key = name.strip().lower()
    key = LANGUAGE_ALIASES.get(key, key)
    if key not in known:
        raise UsageError(f"unknown language {name!r}; known: {', '.join(sorted(known))}")
    return key


@dataclass(frozen=True, slots=True)
class SearchRequest:
    query: str
    projects: tuple[str, ...] = ()  # empty: every indexed project
    mode: Mode = "hybrid"
    languages: tuple[str, ...] = ()
    path_glob: str | None = None
    limit: int = 10
    detail: Detail = "snippet"
    offset: int = 0
    max_tokens: int | None = None  # None: DEFAULT_MAX_TOKENS

    def validate(self) -> SearchRequest:
        """The request with canonical language names; UsageError if anything is invalid."""
        if not self.query.strip():
            raise UsageError("the query is empty")
        if len(self.query) > 2000:
            raise UsageError("the query is longer than 2000 characters")
        if not 1 <= self.limit <= MAX_LIMIT:
            raise UsageError(f"limit must be between 1 and {MAX_LIMIT}, got {self.limit}")
        if self.mode not in MODES:
            raise UsageError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        validate_shape(self.detail, self.max_tokens, self.offset)
        if self.path_glob:
            glob_to_regex(self.path_glob)
        languages = tuple(dict.fromkeys(normalise_language(name) for name in self.languages))
        return self if languages == self.languages else dataclasses.replace(self, languages=languages)


class _Ranked(NamedTuple):  # a search makes ~500: a named tuple is built in C
    project: str
    chunk_id: int
    score: float


def filters_of(language: str | None, path_glob: str | None) -> Filters:
    """The Filters of one optional language name and one optional path glob. Raises
    UsageError on an unknown language or a malformed glob."""
    return Filters((normalise_language(language),) if language else (),
                   glob_to_regex(path_glob) if path_glob else None)


def glob_to_regex(glob: str) -> str:
    """A path glob as a PostgreSQL regex: `*` stays within a directory, `**` crosses
    them, and a glob without "/" matches the file name at any depth (like .gitignore)."""
    if not glob or len(glob) > 500:
        raise UsageError("path glob must be 1-500 characters")
    pattern = glob.lstrip("/") if "/" in glob.rstrip("/") else "**/" + glob
    if pattern.endswith("/"):
        pattern += "**"
    out, i, braces = [], 0, 0
    while i < len(pattern):
        if pattern[i] == "{":  # *.{ts,tsx}
            out.append("(")
            braces += 1
            i += 1
        elif pattern[i] == "}" and braces:
            out.append(")")
            braces -= 1
            i += 1
        elif pattern[i] == "," and braces:
            out.append("|")
            i += 1
        elif pattern[i] == "[" and "]" not in pattern[i + 2 :]:
            raise UsageError(f"invalid path glob {glob!r}: '[' at {i + 1} is never closed")
        elif pattern.startswith("**/", i):
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
    if braces:
        raise UsageError(f"invalid path glob {glob!r}: a '{{' is never closed")
    regex = "^" + "".join(out) + "$"
    try:
        re.compile(regex)  # close enough to PostgreSQL's syntax to catch e.g. [z-a]
    except re.error as exc:
        raise UsageError(f"invalid path glob {glob!r}: {exc}") from None
    return regex


class Searcher:
    def __init__(self, store: Store, embedder: Embedder | None, combine: bool = True) -> None:
        self.store = store
        self.embedder = embedder
        # each read is one statement over all the projects' schemas, straight to the
        # driver (store/fanout.py); False reads each project in turn through SQLAlchemy
        # (the reference path)
        self.combine = combine
        self._realpaths = RealPaths()
        self._roots = Remembered[dict[str, str]](ROOTS_SECONDS)  # project id -> root
        # embedders of previous models, for projects still searched with their vectors
        # while the new model's fill in (blue/green); built from Store.model_config
        self._previous: dict[str, Embedder | None] = {}

    async def search(self, request: SearchRequest, model_id: str | None) -> SearchResponse:
        """`model_id` is the embedder's id once it is ready, else None (lexical only)."""
        request = request.validate()
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
        fetch = max(request.limit * 3, CANDIDATE_POOL)
        freshness: list[Freshness] = []
        semantic: list[_Ranked] = []
        lexical: list[_Ranked] = []
        contexts: dict[str, SearchContext] = {}
        # where each candidate lies, read with the rankings (project id -> chunk id -> span)
        spans: dict[str, dict[int, HitSpan]] = {}
        wants_lexical = request.mode in ("hybrid", "lexical") or (
            request.mode == "semantic" and model_id is None)
        # only the fusion weighs symbol hits
        names = _symbol_names(request.query) if request.mode == "hybrid" else []

        async def run_semantic() -> None:
            semantic.extend(await self._semantic(request.query, stores, filters, fetch, model_id, notes,
                                                 spans))

        async def run_context_and_lexical() -> None:
            # issue 13: freshness, symbol hits and term statistics in one statement per project
            words = code_words(request.query) if wants_lexical else ""
            if self._combined(stores):
                contexts.update(await fanout.search_contexts(stores, words, names))
            else:
                for store in stores:
                    contexts[store.project_id] = await store.search_context(words, names)
            if wants_lexical:
                lexical.extend(await self._lexical(request.query, stores, filters, fetch, contexts, spans))

        # independent queries on separate pooled connections: PostgreSQL runs them in
        # parallel backends while the embedding (if any) runs in its thread
        try:
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(run_context_and_lexical)
                if request.mode in ("hybrid", "semantic"):
                    tasks.start_soon(run_semantic)
        except ExceptionGroup as group:  # the first failure says it: a broken connection, mostly
            raise group.exceptions[0] from None
        freshness = [context.freshness for context in contexts.values()]
        symbol_hits = set().union(*(context.symbols for context in contexts.values()))
        merged_freshness = _merge_freshness(freshness)
        if not self._spans_with_rankings(stores):  # read after the rankings, as few as they keep
            spans = await self._spans(lexical + semantic, stores)
        if request.mode == "semantic":
            ranked = semantic or lexical
        elif request.mode == "lexical":
            ranked = lexical
        else:
            # the agreement is counted on units, and the answer's units are built from the
            # same spans (fused = both lists' chunks)
            common = agreement(lexical, semantic, unit_of=lambda r: _unit_of(spans, r))
            weight = lexical_weight(request.query, bool(symbol_hits), common)
            fused = fuse_in_depth(lexical, semantic, weight, max(request.limit * 3, FUSION_DEPTH))
            ranked = favour_named_files(fused, request.query, lambda r: _path_of(spans, r))
        if merged_freshness.vector_coverage < 1.0 and request.mode != "lexical":
            notes.append(f"vectors cover {coverage_percent(merged_freshness.vector_coverage)} of chunks; "
                         "semantic results may be missing until embedding finishes")
        return await self._answer(request, ranked, stores, filters, merged_freshness, notes, spans)

    async def _answer(self, request: SearchRequest, ranked: list[_Ranked], stores: list[ProjectStore],
                      filters: Filters, freshness: Freshness, notes: list[str],
                      spans: dict[str, dict[int, HitSpan]]) -> SearchResponse:
        """The page of whole units at `request.offset`, shaped to the detail and budget;
        `spans`: where the ranked chunks lie (_spans() of at least `ranked`)."""
        ranked = sorted(ranked, key=lambda r: (-r.score, r.project, r.chunk_id))  # ties: stable pages
        need = request.offset + request.limit + 1  # one more tells whether a next page exists
        units = await self._hits(ranked, stores, need, spans)
        page = units[request.offset : request.offset + request.limit]
        words = query_words(request.query, shortest=1)  # once for the page
        for unit in page:
            name_by_match(unit, words)
        shared: dict[str, str] = {}
        if len(request.projects) == 1:
            shared["project"] = request.projects[0]
        languages = {unit.language for unit in page}
        if len(request.languages) == 1 or len(languages) == 1:  # said once, not per result
            shared["language"] = request.languages[0] if len(request.languages) == 1 else languages.pop()
        kinds = {unit.kind for unit in page}
        if len(kinds) == 1:  # e.g. ten methods: "kind method" once
            shared["kind"] = kinds.pop()
        if request.path_glob:  # the filter asked, echoed: an answer says what it covers
            shared["path_glob"] = request.path_glob
        if not units and (filters.languages or filters.path_regex):
            if sum([await store.count_files(filters) for store in stores]) == 0:
                asked = [f"language {', '.join(filters.languages)}"] if filters.languages else []
                asked += [f"path glob {request.path_glob!r}"] if request.path_glob else []
                notes.append(f"no indexed file matches {' and '.join(asked)}")
        elif request.offset and not page:
            notes.append(f"no results past offset {request.offset} (there are {len(units)})")
        reserve = 160 + sum(len(note) + 7 for note in notes)
        shaped = shape(page, request.query, request.detail, request.max_tokens or DEFAULT_MAX_TOKENS,
                       shared, reserve)
        notes.extend(shaped.notes)
        shown_to = request.offset + shaped.shown_units
        more = shown_to < len(units)
        return SearchResponse(shaped.hits, freshness, request.mode, notes, request.query,
                              request.detail, request.offset, shown_to if more else None, shared)

    def _combined(self, stores: Sequence[ProjectStore]) -> bool:
        return self.combine and len(stores) > 0

    def _spans_with_rankings(self, stores: Sequence[ProjectStore]) -> bool:
        """Whether the rankings' statements return where their candidates lie (a round trip
        fewer): each project's statement ranks `fetch` rows and the search keeps `fetch` of
        them all, so over many projects most places read would be dropped (at 100 projects,
        20,000 for 200 kept); then they are read after the rankings, for the kept ones."""
        return self._combined(stores) and len(stores) <= SPANS_WITH_RANKINGS_UP_TO

    async def _stores(self, projects: Sequence[str]) -> list[ProjectStore]:
        if projects:
            return [await self.store.project(project) for project in dict.fromkeys(projects)]
        return [await self.store.project(p) for p in await self.store.indexed_projects()]

    async def _semantic(self, query: str, stores: list[ProjectStore], filters: Filters, fetch: int,
                        model_id: str | None, notes: list[str],
                        spans: dict[str, dict[int, HitSpan]]) -> list[_Ranked]:
        """The nearest chunks by vector, best first; a combined read adds where they lie to
        `spans`."""
        if self.embedder is None or model_id is None:
            notes.append("the embedder is not available; showing lexical results")
            return []
        vectors: dict[str, Any] = {}
        ranked: list[_Ranked] = []
        combined = self._combined(stores)
        spaces = await fanout.spaces(stores) if combined else None
        asked: list[tuple[ProjectStore, Any, VectorSpace]] = []
        for k, store in enumerate(stores):
            # one read: the query vector must fit its table
            space = spaces[k] if spaces is not None else await store.space()
            active = space.model_id
            if active is None:
                continue
            if active not in vectors:
                vectors[active] = await self._query_vector(query, active, model_id, notes)
            if vectors[active] is None:
                continue
            if combined:
                asked.append((store, vectors[active], space))
                continue
            hits = await store.semantic(vectors[active], filters, fetch, self.store.iterative_scans, space)
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in hits)
        found = await fanout.semantic(asked, filters, fetch, self.store.iterative_scans,
                                      self._spans_with_rankings(stores)) if asked else {}
        for store, _, _ in asked:
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in found[store.project_id].ranked)
            spans.setdefault(store.project_id, {}).update(found[store.project_id].spans)
        if set(vectors) <= {model_id} and self._previous:  # every switch is done: free them
            await self.aclose()
        return sorted(ranked, key=lambda r: -r.score)[:fetch]

    async def _query_vector(self, query: str, model_id: str, current: str, notes: list[str]) -> Any:
        """The query's vector in `model_id`'s space: from the running embedder, or, for a
        project still served by a previous model, from an embedder rebuilt from its config."""
        embedder = self.embedder if model_id == current else await self._previous_embedder(model_id)
        if embedder is None:
            notes.append(f"vectors of {model_id} cannot be searched (its embedder is not available) "
                         "until re-embedding with the new model finishes; showing lexical results")
            return None
        if model_id != current:
            notes.append(f"searching with the previous model {model_id} while vectors of {current} "
                         "are computed")
        try:
            return (await embedder.embed_query(query))[0]
        except CodequarryError as exc:
            notes.append(f"semantic search unavailable ({exc}); showing lexical results")
            return None

    async def aclose(self) -> None:
        """Release the embedders of previous models (a local model holds ~300 MB)."""
        previous, self._previous = self._previous, {}
        for embedder in previous.values():
            if embedder is not None:
                await embedder.aclose()

    async def _previous_embedder(self, model_id: str) -> Embedder | None:
        if model_id not in self._previous:
            self._previous[model_id] = None
            recorded = await self.store.model_config(model_id)
            if recorded is not None:
                try:
                    embedder = create_embedder(EmbedderConfig.model_validate(recorded))
                    await embedder.start()
                    if embedder.model_id == model_id:
                        self._previous[model_id] = embedder
                except (CodequarryError, ValueError) as exc:
                    log.warning("previous_embedder_unavailable", model=model_id, error=str(exc))
        return self._previous[model_id]

    async def _lexical(self, query: str, stores: list[ProjectStore], filters: Filters, fetch: int,
                       contexts: dict[str, SearchContext],
                       spans: dict[str, dict[int, HitSpan]]) -> list[_Ranked]:
        """The best chunks by words, best first; a combined read adds where they lie to `spans`."""
        words = code_words(query)
        ranked: list[_Ranked] = []
        asked: list[tuple[ProjectStore, list[tuple[str, float]], list[str | tuple[str, ...]]]] = []
        for store in stores:
            context = contexts.get(store.project_id)
            lexemes, total, freqs = ((context.lexemes, context.total, context.freqs) if context
                                     else await store.query_terms(words))
            if not lexemes:
                continue
            terms = [(lex, _idf(freqs.get(lex, 0.0), total)) for lex in lexemes]
            match = _match_terms(lexemes, freqs, total)
            if self._combined(stores):
                asked.append((store, terms, match))
                continue
            hits = await store.lexical(terms, match, filters, fetch)
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in hits)
        found = (await fanout.lexical(asked, filters, fetch, self._spans_with_rankings(stores))
                 if asked else {})
        for store, _, _ in asked:
            ranked.extend(_Ranked(store.project_id, i, score) for i, score in found[store.project_id].ranked)
            spans.setdefault(store.project_id, {}).update(found[store.project_id].spans)
        return sorted(ranked, key=lambda r: -r.score)[:fetch]

    async def _spans(self, ranked: Sequence[_Ranked],
                     stores: list[ProjectStore]) -> dict[str, dict[int, HitSpan]]:
        """Project id -> chunk id -> where that ranked chunk lies (a chunk replaced
        meanwhile is missing), in one read (a read per project on the reference path)."""
        by_id = {store.project_id: store for store in stores}
        wanted = [(by_id[project], list(dict.fromkeys(r.chunk_id for r in ranked if r.project == project)))
                  for project in dict.fromkeys(r.project for r in ranked)]
        if self._combined(stores):
            return await fanout.hit_spans(wanted)
        return {store.project_id: await store.hit_spans(ids) for store, ids in wanted}

    async def _project_roots(self, projects: set[str]) -> dict[str, str]:
        """Project id -> root for unit_key, read again once ROOTS_SECONDS old or when one of
        `projects` is missing (issue 13: a statement per search for what rarely changes; a
        moved root merges results of one file for at most that long, as RealPaths does)."""
        roots = self._roots.get()
        if roots is None or not projects <= roots.keys():
            roots = self._roots.put(await self.store.indexed_projects())
        return roots

    async def _hits(self, ranked: list[_Ranked], stores: list[ProjectStore], need: int,
                    spans: dict[str, dict[int, HitSpan]]) -> list[Unit]:
        """The distinct units the ranked chunks fall in, best first (answers.rank_units):
        chunks of one unit merge into it, and a file reached twice (symlink, nested project)
        counts once. Every ranked chunk is placed, so the order never depends on `need`
        (pages stay stable). `spans`: _spans() of at least `ranked`."""
        roots = await self._project_roots({r.project for r in ranked})
        by_id = {store.project_id: store for store in stores}
        combined = self._combined(stores)
        units: dict[tuple[str, int, int], Unit] = {}
        best: dict[tuple[str, int, int], _Ranked] = {}
        files: dict[tuple[str, str], str] = {}
        for r in ranked:
            span = spans.get(r.project, {}).get(r.chunk_id)
            if span is None:
                continue  # replaced between the two queries
            file = files.get((r.project, span.path))
            if file is None:  # each file resolved once per search, not once per ranked chunk
                file = files[(r.project, span.path)] = unit_key(
                    roots.get(r.project), r.project, span.path, 0, 0, self._realpaths)[0]
            key = (file, span.unit_start, span.unit_end)
            unit = units.get(key)
            if unit is None:
                unit = units[key] = Unit(r.project, span.path, span.unit_start, span.unit_end, span.symbol,
                                         span.kind, span.language, r.score)
                best[key] = r
            elif not unit.has_hit(span.start_line, span.end_line):
                unit.support.append(r.score)
            unit.add_hit(span.start_line, span.end_line)
        keys = {id(unit): key for key, unit in units.items()}
        floor = min((r.score for r in ranked), default=0.0)
        order = [keys[id(unit)] for unit in rank_units(list(units.values()), floor)]
        # the text of the units shown only (issue 13: reading every ranked unit's chunks
        # was most of a search's CPU), through the chunk that placed each one
        shown = [best[key] for key in order[:need]]
        wanted = [(by_id[project], [r.chunk_id for r in shown if r.project == project])
                  for project in dict.fromkeys(r.project for r in shown)]
        runs = await fanout.unit_chunks(wanted) if combined else {
            store.project_id: await store.unit_chunks(ids) for store, ids in wanted}
        out = []
        for key in order[:need]:
            found = runs[best[key].project].get(best[key].chunk_id)
            if found is not None:  # else replaced meanwhile
                units[key].add_chunks(found.pieces)
                units[key].definitions = found.definitions
                out.append(units[key])
        return out


# Tuned with bench/tune_fusion.py on the tuning sets only (bench/data/README.md): z-score
# fusion with these weights had the best mean MRR@10 over the four tuning sets (within
# 0.002 of the best variant) while staying above the better single mode on each of them.
# An English question leans on vectors; a query with code in it (an identifier, a dotted
# name, an error class) weighs words as much as vectors; a lone identifier even more.
ENGLISH_WEIGHT = 0.8
CODE_WEIGHT = 1.0
SINGLE_IDENTIFIER_WEIGHT = 2.0
# An English query whose lexical and semantic top results share no code unit: the words
# matched something other than what was meant, so the vectors decide (weight * this factor).
# Counted on units, not chunks: two windows of one long function are one answer (issue 12).
DISAGREEMENT_FACTOR = 0.5
AGREEMENT_DEPTH = 10
# A query word that is a file's name (ls in "npm ls", cache in "how does the cache expire")
# raises that file's chunks by this share of their fused score: evidence, not a verdict (a
# question names the module it is about, but also incidental ones). bench/README.md, issue 12
# third pass: no loss on any quality set, agent questions hit@3 +1.
NAMED_FILE_BOOST = 0.2


def code_like(token: str) -> bool:
    """A query token that only code contains: an identifier (snake_case, camelCase, dotted,
    call), or a word glued to code punctuation (`--help`, `x-www-form`, `a::b`)."""
    return identifier_like(token) or bool(re.search(r"\w(::|->|=)\w|^--?\w|\w-\w+-\w", token))


def agreement(lexical: Sequence[_Ranked], semantic: Sequence[_Ranked], depth: int = AGREEMENT_DEPTH,
              unit_of: Callable[[_Ranked], Hashable | None] | None = None) -> int:
    """How many of the semantic top `depth` lie in a unit of the lexical top `depth`.
    `unit_of`: a ranked chunk's unit (None: unknown, never shared); default each chunk is
    its own unit."""
    identity = unit_of or (lambda r: (r.project, r.chunk_id))
    words = {identity(r) for r in lexical[:depth]} - {None}
    return sum(1 for r in semantic[:depth] if identity(r) in words)


def lexical_weight(query: str, symbol_hit: bool, shared: int | None = None) -> float:
    """How much to trust word matches for this query, relative to vectors (1.0).

    `symbol_hit`: a query word is the exact name of some chunk's symbol; `shared`: how many
    of the semantic top 10 lie in a unit of the lexical top 10 (agreement(); None: unknown).
    A lone identifier or symbol name leans on words; a query with code-like tokens weighs
    them a little under vectors; an English question leans on vectors, and entirely so when
    the sides disagree.
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
    and unlike min-max, one outlier does not squash the rest of a side's list. Each side
    is measured over the candidates it is given (fuse_in_depth gives the top FUSION_DEPTH)."""
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


def fuse_in_depth(lexical: list[_Ranked], semantic: list[_Ranked], weight: float,
                  depth: int) -> list[_Ranked]:
    """`fuse` over the top `depth` of both lists, then the rest of the candidates below."""
    head = fuse(lexical[:depth], semantic[:depth], weight)
    if not head:
        return fuse(lexical, semantic, weight)
    seen = {(r.project, r.chunk_id) for r in head}
    floor = min(r.score for r in head)
    tail = [r for r in fuse(lexical, semantic, weight) if (r.project, r.chunk_id) not in seen]
    top = max((r.score for r in tail), default=0.0)
    # below the head whatever their own scores: the head's order is the tuned ranking
    scale = floor / (top + 1e-9) * 0.999 if top > 0 else 0.0
    return head + [_Ranked(r.project, r.chunk_id, r.score * scale) for r in tail]


def favour_named_files(ranked: Sequence[_Ranked], query: str,
                       path_of: Callable[[_Ranked], str | None]) -> list[_Ranked]:
    """`ranked` with the fused score of each chunk in a file whose name (without its
    extension) is a word of the query raised by NAMED_FILE_BOOST, best first. "how does
    npm ls print the tree" names ls.js; the words' side already counts the path, but as
    one body-like word among many, and the vectors never see it. `path_of`: a chunk's
    path, None when unknown."""
    words = query_words(query)
    if not words:
        return list(ranked)
    boosted = [_Ranked(r.project, r.chunk_id, r.score * (1 + NAMED_FILE_BOOST))
               if (path := path_of(r)) is not None and file_stem(path) in words else r
               for r in ranked]
    return sorted(boosted, key=lambda r: -r.score)


@functools.lru_cache(maxsize=16384)  # a search asks for ~150 ranked chunks' paths, mostly the same few
def file_stem(path: str) -> str:
    """A path's file name without its extension, lowercased: lib/commands/ls.js -> ls."""
    return posixpath.splitext(posixpath.basename(path))[0].lower()


def _path_of(spans: dict[str, dict[int, HitSpan]], ranked: _Ranked) -> str | None:
    span = spans.get(ranked.project, {}).get(ranked.chunk_id)
    return None if span is None else span.path


def _unit_of(spans: dict[str, dict[int, HitSpan]], ranked: _Ranked) -> tuple[str, str, int, int] | None:
    """The unit a ranked chunk lies in (project, path, unit span), None when it is gone."""
    span = spans.get(ranked.project, {}).get(ranked.chunk_id)
    return None if span is None else (ranked.project, span.path, span.unit_start, span.unit_end)


def _symbol_names(query: str) -> list[str]:
    """The query's identifiers worth looking up as symbols (lowercased, sorted)."""
    return sorted({token.lower() for token in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query) if len(token) > 2})


def _match_terms(lexemes: list[str], freqs: dict[str, float], total: int,
                 budget: int = LEXICAL_CANDIDATES) -> list[str | tuple[str, ...]]:
    """The candidate clauses of a lexical query (see ProjectStore.lexical), within `budget`
    expected rows: first the rarest lexemes alone, while their matches fit half the
    budget; then pairs of the other lexemes, both required, smallest expected overlap
    first (independence estimate), in the other half.

    The rare lexemes alone would leave out, on a large index, every chunk holding several
    of a long question's commoner words but none of its rarest (often an incidental word
    like "actually"); a chunk holding two of them is worth ranking, one holding a single
    common word rarely is. With half the rows each, the pairs recovered most of what the
    unbounded candidate set scores (bench/tune_lexical.py at a budget scaled to 100k chunks).
    """
    clauses: list[str | tuple[str, ...]] = []
    expected = 0.0
    ordered = sorted(lexemes, key=lambda lex: freqs.get(lex, 0.0))
    for lexeme in ordered:
        rows = freqs.get(lexeme, 0.0) * total
        if clauses and expected + rows > budget / 2:
            break
        clauses.append(lexeme)
        expected += rows
    rest = ordered[len(clauses):]  # every clause so far is a single lexeme
    pairs = sorted((freqs.get(a, 0.0) * freqs.get(b, 0.0) * total, a, b)
                   for i, a in enumerate(rest) for b in rest[i + 1:])
    expected = 0.0
    for rows, a, b in pairs:
        if expected + rows > budget / 2:
            break
        clauses.append((a, b))
        expected += rows
    return clauses


def _idf(fraction: float, total: int) -> float:
    n = fraction * total
    return math.log((total - n + 0.5) / (n + 0.5) + 1.0)


def _merge_freshness(parts: list[Freshness]) -> Freshness:
    if not parts:
        return Freshness(0, 1.0, None)
    coverage = min(part.vector_coverage for part in parts)
    latest = max((p.last_indexed_change for p in parts if p.last_indexed_change), default=None)
    return Freshness(sum(part.pending_files for part in parts), coverage, latest)
