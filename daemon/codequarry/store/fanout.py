"""Several projects' search reads as one statement each (issue 13, behaviour 5).

Each project has a schema of its own, so a search over N projects ran each of its reads
once per schema, in turn: with 100 projects, 100 times the round trips and the per
statement overhead (Python, driver, planner) of one project. Here a read is the UNION ALL
of the statements each ProjectStore builds for itself (the same SQL and parameters, the
parameters renamed apart), so a search costs the same number of round trips whatever the
number of projects, and each project's rows are exactly those of its own statement. A
search over one project goes through here too: its statement runs as it is, straight on
the driver (no UNION, no SQLAlchemy execution or row objects).
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import anyio
from sqlalchemy import text

from codequarry.faults import is_transient
from codequarry.store.project import (
    COMMON_LEXEMES_SQL,
    SPACES_SQL,
    Filters,
    Hits,
    HitSpan,
    ProjectStore,
    SearchContext,
    UnitText,
    Vector,
    VectorSpace,
    ef_search_sql,
    hit_spans_of,
    semantic_hits,
    unit_chunks_of,
)

_Parsed = TypeVar("_Parsed")
# SQLAlchemy text()'s bind parameter syntax (`:name`, not `::type`)
_BIND = re.compile(r"(?<![:\w\x5c]):(\w+)(?!:)")
# Many projects' parts are split over up to MAX_STATEMENTS statements of at least
# MIN_PARTS parts, run at once on pooled connections: PostgreSQL runs them in parallel
# backends, and no single UNION grows past what its planner handles quickly.
MAX_STATEMENTS = 4
MIN_PARTS = 25


def union_statement(parts: Sequence[tuple[str, dict[str, Any]]]) -> tuple[str, list[Any]]:
    """One statement ($1, $2 ... parameters, and their values) returning every part's
    rows, each with `part_` (its index in `parts`) and `seq_` (its position among that
    part's rows), ordered by both; a single part is returned as it is (no `part_`)."""
    sql, names = _positional(tuple((sql, tuple(own)) for sql, own in parts))
    return sql, [parts[k][1][name] for k, name in names]


@functools.lru_cache(maxsize=256)
def _positional(parts: tuple[tuple[str, tuple[str, ...]], ...]) -> tuple[str, tuple[tuple[int, str], ...]]:
    """The UNION of `parts` (SQL with :name parameters, their names) in asyncpg's $n
    syntax, and (part, name) of each $n. Cached: a search repeats the same statements
    with other values, and building 100 parts' text costs more than running it."""
    names: dict[tuple[int, str], int] = {}

    def number(k: int, own: tuple[str, ...]) -> Callable[[re.Match[str]], str]:
        def rename(match: re.Match[str]) -> str:
            if match.group(1) not in own:
                return match.group(0)
            return f"${names.setdefault((k, match.group(1)), len(names) + 1)}"
        return rename

    if len(parts) == 1:  # one project's read runs as it is, in its own order
        (sql, own), = parts
        return _BIND.sub(number(0, own), sql), tuple(sorted(names, key=names.__getitem__))
    pieces = [f"(SELECT {k} AS part_, row_number() OVER () AS seq_, q.* "
              f"FROM ({_BIND.sub(number(k, own), sql)}) q)" for k, (sql, own) in enumerate(parts)]
    # row_number() over a subquery's own output numbers its rows in its ORDER BY
    return " UNION ALL ".join(pieces) + " ORDER BY part_, seq_", tuple(sorted(names, key=names.__getitem__))


@functools.lru_cache(maxsize=256)
def _row_type(columns: tuple[str, ...]) -> Any:
    """A named tuple of these columns: attribute access to an asyncpg record's values, as
    SQLAlchemy rows give it (a namedtuple's attributes are read in C; a search reads
    ~5,000 of them)."""
    return collections.namedtuple("Row", columns, rename=True)  # an unnamed column becomes _<n>


def _rows(records: Sequence[Any]) -> list[Any]:
    if not records:
        return []
    make = _row_type(tuple(records[0].keys()))
    return [make(*record) for record in records]


async def union_rows(store: ProjectStore, parts: Sequence[tuple[str, dict[str, Any]]],
                     ef_search: int | None = None, iterative: bool = False) -> list[list[Any]]:
    """The rows of each part (statement, parameters), in its order, in one round trip of
    up to MAX_STATEMENTS concurrent statements, on `store`'s engine (every project's). `ef_search`: run in a
    transaction with that hnsw.ef_search (and relaxed iterative scans with `iterative`).

    The statement goes to asyncpg directly: SQLAlchemy's text() would parse hundreds of
    parameters and resolve a type for each on every search (issue 13: most of the cost);
    even for one project's read SQLAlchemy's execution and row objects cost more CPU than
    the driver's own (~0.4 ms per statement).
    """
    out: list[list[Any]] = [[] for _ in parts]
    size = max(MIN_PARTS, -(-len(parts) // MAX_STATEMENTS))

    async def run(first: int) -> None:
        sql, args = union_statement(parts[first : first + size])
        engine = store.reader if ef_search is None else store.engine
        async with engine.connect() as conn:
            try:
                if ef_search is not None:  # SQLAlchemy opens the transaction, the UNION runs in it
                    await conn.execute(text(ef_search_sql(iterative)), {"ef": str(ef_search)})
                raw = await conn.get_raw_connection()
                rows = await raw.driver_connection.fetch(sql, *args)  # type: ignore[union-attr]
                if ef_search is not None:
                    await conn.rollback()  # a read
            except Exception as exc:
                if is_transient(exc):  # what SQLAlchemy does for its own statements: the pool's
                    await conn.invalidate(exc)  # connections all died with the server
                    await store.engine.dispose(close=False)
                raise
        if first + 1 == min(first + size, len(parts)):  # a single part: no part_ column
            out[first].extend(_rows(rows))
            return
        for row in _rows(rows):
            out[first + row.part_].append(row)

    firsts = range(0, len(parts), size)
    if len(firsts) == 1:
        await run(0)
        return out
    try:
        async with anyio.create_task_group() as tasks:
            for first in firsts:
                tasks.start_soon(run, first)
    except ExceptionGroup as group:  # the first failure says it
        raise group.exceptions[0] from None
    return out


async def search_contexts(stores: Sequence[ProjectStore], words: str,
                          names: Sequence[str]) -> dict[str, SearchContext]:
    """ProjectStore.search_context(words, names) of every store, by project id."""
    if not stores:
        return {}
    commons = await _common_lexemes(stores)
    parts = [store.search_context_statement(words, names, common) for store, common in zip(stores, commons,
                                                                                           strict=True)]
    rows = await union_rows(stores[0], parts)
    return {store.project_id: store.search_context_of(found[0], common)
            for store, found, common in zip(stores, rows, commons, strict=True)}


async def lexical(queries: Sequence[tuple[ProjectStore, Sequence[tuple[str, float]],
                                         Sequence[str | tuple[str, ...]]]],
                  filters: Filters, limit: int, spans: bool = True) -> dict[str, Hits]:
    """ProjectStore.lexical(terms, match, filters, limit) of each (store, terms, match), by
    project id, with where each hit lies if `spans` (a store whose `match` is empty gets no
    hits without a read, as there)."""
    asked = [(store, terms, match) for store, terms, match in queries if match]
    lengths = await _average_lengths([store for store, _, _ in asked])
    parts = []
    for (store, terms, match), avglen in zip(asked, lengths, strict=True):
        sql, params = store.lexical_statement(terms, match, filters, limit, avglen)
        parts.append((store.with_spans(sql) if spans else sql, params))
    rows = await union_rows(asked[0][0], parts) if asked else []
    out = {store.project_id: Hits([], {}) for store, _, _ in queries}
    for (store, _, _), found in zip(asked, rows, strict=True):
        out[store.project_id] = Hits([(row.id, float(row.score)) for row in found],
                                     hit_spans_of(found) if spans else {})
    return out


async def semantic(queries: Sequence[tuple[ProjectStore, Vector, VectorSpace]], filters: Filters, limit: int,
                   iterative: bool, spans: bool = True) -> dict[str, Hits]:
    """ProjectStore.semantic(vector, filters, limit, iterative, space) of each (store,
    vector, space), by project id, with where each hit lies if `spans`. Where one of them needs a
    larger hnsw.ef_search than the session's, all run with it (the setting only widens an
    HNSW scan's candidates)."""
    asked = [(store, vector, space) for store, vector, space in queries if space.table is not None]
    statements = [store.semantic_statement(vector, filters, limit, iterative, space)
                  for store, vector, space in asked]
    ef_search = max((ef for _, _, ef in statements if ef is not None), default=None)
    parts = [(store.with_spans(sql) if spans else sql, params)
             for (store, _, _), (sql, params, _) in zip(asked, statements, strict=True)]
    rows = (await union_rows(asked[0][0], parts, ef_search, iterative)) if asked else []
    out = {store.project_id: Hits([], {}) for store, _, _ in queries}
    for (store, _, _), found in zip(asked, rows, strict=True):
        out[store.project_id] = Hits(semantic_hits(found, limit), hit_spans_of(found) if spans else {})
    return out


async def unit_chunks(queries: Sequence[tuple[ProjectStore, Sequence[int]]]
                      ) -> dict[str, dict[int, UnitText]]:
    """ProjectStore.unit_chunks(ids) of each (store, ids), by project id."""
    return await _by_ids(queries, ProjectStore.unit_chunks_statement, unit_chunks_of)


async def hit_spans(queries: Sequence[tuple[ProjectStore, Sequence[int]]]) -> dict[str, dict[int, HitSpan]]:
    """ProjectStore.hit_spans(ids) of each (store, ids), by project id."""
    return await _by_ids(queries, ProjectStore.hit_spans_statement, hit_spans_of)


async def _by_ids(queries: Sequence[tuple[ProjectStore, Sequence[int]]],
                  statement: Callable[[ProjectStore, Sequence[int]], tuple[str, dict[str, Any]]],
                  parse: Callable[[Sequence[Any]], _Parsed]) -> dict[str, _Parsed]:
    """`parse` of the rows of each store's `statement(store, ids)`, by project id; a store
    with no ids gets parse([]) without a read."""
    asked = [(store, ids) for store, ids in queries if ids]
    rows = await union_rows(asked[0][0], [statement(store, ids) for store, ids in asked]) \
        if asked else []
    out = {store.project_id: parse([]) for store, _ in queries}
    for (store, _), found in zip(asked, rows, strict=True):
        out[store.project_id] = parse(found)
    return out


async def spaces(stores: Sequence[ProjectStore]) -> list[VectorSpace]:
    """ProjectStore.space() of every store: the cached ones, the others in one read."""
    stale = [store for store in stores if store.cached_space() is None]
    if stale:
        async with stale[0].reader.connect() as conn:
            rows = {row.id: row for row in await conn.execute(text(SPACES_SQL), {
                "i": stale[0].installation, "ids": [store.project_id for store in stale]})}
        for store in stale:
            if store.project_id in rows:
                store.remember_space(rows[store.project_id])
    # a project whose row vanished meanwhile reads it alone (and fails as space() does)
    return [store.cached_space() or await store.space() for store in stores]


async def _common_lexemes(stores: Sequence[ProjectStore]) -> list[dict[str, float]]:
    stale = [store for store in stores if store.cached_common_lexemes() is None]
    if stale:
        async with stale[0].reader.connect() as conn:
            rows = {row.schemaname: row for row in await conn.execute(text(
                COMMON_LEXEMES_SQL + " AND schemaname = ANY(:s)"), {"s": [store.schema for store in stale]})}
        for store in stale:
            store.remember_common_lexemes(rows.get(store.schema))
    return [store.cached_common_lexemes() or {} for store in stores]


async def _average_lengths(stores: Sequence[ProjectStore]) -> list[float]:
    stale = [store for store in stores if store.cached_average_length() is None]
    if stale:
        rows = await union_rows(stale[0], [(store.average_length_statement(), {}) for store in stale])
        for store, found in zip(stale, rows, strict=True):
            store.remember_average_length(found[0].avglen)
    return [store.cached_average_length() or 1.0 for store in stores]
