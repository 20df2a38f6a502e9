"""A textbook Okapi BM25 over a project's indexed chunks, as the yardstick for the
lexical half of search (issue 14: "the lexical half is at least BM25").

Units: the same chunks codequarry ranks. Words: each chunk's symbol and content through
`codequarry.chunking.words.code_words` (identifiers joined and split, as the index does),
then PostgreSQL's `english` text search configuration (Snowball stemmer and stop list),
the same normaliser the index uses. The path is left out. Queries go through the same
two steps. Score: sum over the query's distinct lexemes of
idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * dl / avgdl)), with
idf = ln(1 + (N - n + 0.5) / (n + 0.5)), k1 = 1.2, b = 0.75, dl = the chunk's token
count after stop words, avgdl its mean. Everything runs in Python in the bench process.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict
from dataclasses import dataclass

from sqlalchemy import text

from codequarry.chunking.words import code_words
from codequarry.store.project import ProjectStore

K1 = 1.2
B = 0.75
BATCH = 500


@dataclass
class Hit:
    chunk_id: int
    path: str
    start_line: int
    end_line: int

    def to_json(self) -> dict[str, object]:
        return {"path": self.path, "start_line": self.start_line, "end_line": self.end_line}


class BM25:
    def __init__(self, store: ProjectStore) -> None:
        self.store = store
        self.postings: dict[str, list[tuple[int, int]]] = defaultdict(list)  # lexeme -> (doc, tf)
        self.lengths: list[int] = []
        self.spans: list[Hit] = []
        self.average = 1.0

    async def load(self) -> BM25:
        """Read every chunk and build the inverted index (a few seconds for 10k chunks)."""
        async with self.store.reader.connect() as conn:
            rows = (await conn.execute(text(
                f"SELECT id, path, start_line, end_line, coalesce(symbol, '') AS symbol, content "
                f"FROM {self.store.s}.chunks ORDER BY id"))).all()
            for first in range(0, len(rows), BATCH):
                batch = rows[first:first + BATCH]
                words = [code_words(r.symbol) + " " + code_words(r.content) for r in batch]
                lexemes = (await conn.execute(text(
                    "SELECT t.ord, l.lexeme, coalesce(array_length(l.positions, 1), 1) AS tf "
                    "FROM unnest(CAST(:w AS text[])) WITH ORDINALITY AS t(words, ord), "
                    "unnest(to_tsvector('english', t.words)) AS l"), {"w": words})).all()
                lengths = [0] * len(batch)
                for ordinal, lexeme, tf in lexemes:
                    doc = first + int(ordinal) - 1
                    self.postings[lexeme].append((doc, int(tf)))
                    lengths[int(ordinal) - 1] += int(tf)
                self.lengths.extend(lengths)
                self.spans.extend(Hit(r.id, r.path, r.start_line, r.end_line) for r in batch)
        self.average = sum(self.lengths) / max(1, len(self.lengths))
        return self

    async def query_lexemes(self, query: str) -> list[str]:
        async with self.store.reader.connect() as conn:
            rows = await conn.execute(text("SELECT lexeme FROM unnest(to_tsvector('english', :q))"),
                                      {"q": code_words(query)})
            return [row.lexeme for row in rows]

    async def search(self, query: str, limit: int = 10) -> list[Hit]:
        total = len(self.lengths)
        scores: dict[int, float] = defaultdict(float)
        for lexeme in await self.query_lexemes(query):
            postings = self.postings.get(lexeme, [])
            idf = math.log(1 + (total - len(postings) + 0.5) / (len(postings) + 0.5))
            for doc, tf in postings:
                norm = K1 * (1 - B + B * self.lengths[doc] / self.average)
                scores[doc] += idf * tf * (K1 + 1) / (tf + norm)
        best = heapq.nlargest(limit, scores.items(), key=lambda kv: kv[1])
        return [self.spans[doc] for doc, _ in best]
