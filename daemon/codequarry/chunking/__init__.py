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
from codequarry.models import Chunk, SearchText

__all__ = ["Budget", "Chunker", "detect_language", "embedding_text", "search_text"]

# Bump when embedding_text changes: every hash changes with it, so nothing stale is reused.
EMBEDDING_TEXT_VERSION = 1


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


class Chunker:
    def __init__(self, budget: Budget | None = None) -> None:
        self.budget = budget or Budget()
        self._tree = TreeChunker(self.budget)

    def chunk_file(self, path: str, text: str) -> tuple[str, list[Chunk]]:
        """(language, chunks with content hashes) for the file at repo-relative `path`."""
        first_line = text[:200].split("\n", 1)[0]
        language = detect_language(path, first_line)
        if language in AST_LANGUAGES:
            chunks = self._tree.chunk(text, language)
        else:
            chunks = line_windows(text.split("\n"), language, self.budget)
        return language, [dataclasses.replace(c, content_hash=chunk_hash(c)) for c in chunks]
