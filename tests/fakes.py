"""Deterministic stand-ins for tests whose subject is not the embedding itself."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from codequarry.embedding.base import Vectors, normalise


class HashEmbedder:
    """Bag-of-words vectors from hashed words: texts sharing words are close. Counts calls."""

    model_name = "hash-test"
    model_version = "1"
    max_batch = 64
    max_tokens = 256

    def __init__(self, dims: int = 64, model_id: str = "hash:test:64") -> None:
        self.dims = dims
        self.model_id = model_id
        self.embedded_texts: list[str] = []
        self.calls = 0
        self.fail_with: Exception | None = None

    async def start(self) -> None:
        if self.fail_with is not None:
            raise self.fail_with

    def vectors(self, texts: Sequence[str]) -> Vectors:
        out = np.zeros((len(texts), self.dims), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z0-9]+", text.lower()):
                digest = hashlib.blake2b(word.encode(), digest_size=4).digest()
                out[row, int.from_bytes(digest, "little") % self.dims] += 1.0
            out[row, 0] += 1e-3  # never the zero vector
        return normalise(out)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        if self.fail_with is not None:
            raise self.fail_with
        self.calls += 1
        self.embedded_texts.extend(texts)
        return self.vectors(texts)

    async def embed_query(self, text: str) -> Vectors:
        if self.fail_with is not None:
            raise self.fail_with
        return self.vectors([text])

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        return [len(t) // 4 + 1 for t in texts]

    async def aclose(self) -> None:
        return None
