"""Sizes of chunks, in estimated embedder tokens.

Estimating from characters keeps chunk boundaries cheap to compute and identical for
every embedder; code averages about three characters per WordPiece token.
"""

from __future__ import annotations

from dataclasses import dataclass

CHARS_PER_TOKEN = 3.0


def estimate_tokens(text: str) -> int:
    return int(len(text) / CHARS_PER_TOKEN) + 1


@dataclass(frozen=True, slots=True)
class Budget:
    max_tokens: int = 256  # a chunk above this is split
    min_tokens: int = 48  # adjacent chunks below this are merged

    def fits(self, text: str) -> bool:
        return estimate_tokens(text) <= self.max_tokens

    def small(self, text: str) -> bool:
        return estimate_tokens(text) < self.min_tokens
