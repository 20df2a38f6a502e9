"""Turn a source file into chunks: tree-sitter for code, line windows for other text.

Each chunk's `content_hash` hashes exactly the text sent to the embedder (plus the
language), so the embedding cache is keyed by what determines the vector and nothing
else: renaming or copying a file reuses every vector.
"""

from __future__ import annotations

import dataclasses
import hashlib

from codequarry.chunking.budget import Budget
from codequarry.chunking.languages import AST_LANGUAGES, detect_language
from codequarry.chunking.lines import line_windows
from codequarry.chunking.tree import TreeChunker
from codequarry.chunking.words import code_words, split_identifier
from codequarry.models import Chunk, SearchText, SymbolDefinition

__all__ = ["CHUNKER_VERSION", "Budget", "ChunkedFile", "Chunker", "detect_language", "embedding_text",
           "search_text"]

# Bump when embedding_text changes: every hash changes with it, so nothing stale is reused.
EMBEDDING_TEXT_VERSION = 1
# Bump when chunk boundaries, unit spans or definitions change: files indexed by an older
# chunker are re-chunked in the background (their vectors come from the embedding cache).
CHUNKER_VERSION = 3


def embedding_text(chunk: Chunk) -> str:
    """What the embedder sees: the symbol in words (models read words, not identifiers)
    and the code. The path stays out, so a rename costs no new embedding."""
    if chunk.symbol:
        words = " ".join(split_identifier(chunk.symbol))
        return f"{chunk.kind} {chunk.symbol} ({words})\n{chunk.content}"
    return chunk.content


def chunk_hash(chunk: Chunk) -> str:
    data = f"{EMBEDDING_TEXT_VERSION}\0{chunk.language}\0{embedding_text(chunk)}".encode()
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def search_text(path: str, chunk: Chunk) -> SearchText:
    return SearchText(code_words(chunk.symbol or ""), code_words(path), code_words(chunk.content))


@dataclasses.dataclass(frozen=True, slots=True)
class ChunkedFile:
    language: str
    chunks: list[Chunk]
    definitions: list[SymbolDefinition]


class Chunker:
    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self._tree = TreeChunker(self.budget)

    def chunk_file(self, path: str, text: str) -> tuple[str, list[Chunk]]:
        """(language, chunks with content hashes) for the file at repo-relative `path`."""
        analysed = self.analyse(path, text)
        return analysed.language, analysed.chunks

    def analyse(self, path: str, text: str) -> ChunkedFile:
        """Chunks with content hashes and unit spans, plus the file's named definitions."""
        first_line = text[:200].split("\n", 1)[0]
        language = detect_language(path, first_line)
        definitions: list[SymbolDefinition] = []
        if language in AST_LANGUAGES:
            chunks, definitions = self._tree.chunk(text, language)
        else:
            chunks = line_windows(text.split("\n"), language, self.budget)
        return ChunkedFile(language, [dataclasses.replace(c, content_hash=chunk_hash(c)) for c in chunks],
                           definitions)
