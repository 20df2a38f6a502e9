"""The one protocol every embedder speaks, and the retry policy remote ones share."""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, TypeVar

import anyio
import numpy as np
import numpy.typing as npt

from codequarry.errors import EmbedderMismatch, EmbedderUnavailable
from codequarry.logs import get_logger

Vectors = npt.NDArray[np.float32]
T = TypeVar("T")
log = get_logger(__name__)


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of `dims` dimensions.

    `model_id` names model, version and dims: it is part of the embedding cache key, so
    two embedders with the same id must give the same vectors for the same text.
    """

    model_id: str
    model_name: str
    model_version: str
    dims: int
    max_batch: int
    max_tokens: int  # the model's context window in tokens; chunks are sized below it

    async def start(self) -> None:
        """Load or probe the model; raise EmbedderUnavailable / ModelFileError on failure."""

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        """Vectors for indexed chunks, in input order."""

    async def embed_query(self, text: str) -> Vectors:
        """A (1, dims) vector for a search query."""

    def token_counts(self, texts: Sequence[str]) -> list[int]:
        """Length of each text in model tokens (or an estimate): batching texts of similar
        length wastes little compute on padding."""

    async def aclose(self) -> None: ...


def normalise(vectors: Vectors) -> Vectors:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    normalised: Vectors = (vectors / norms).astype(np.float32)
    return normalised


def check_shape(vectors: Vectors, count: int, dims: int, model: str) -> Vectors:
    if vectors.ndim != 2 or vectors.shape[0] != count:
        raise EmbedderMismatch(f"{model}: asked for {count} vectors, got shape {vectors.shape}")
    if vectors.shape[1] != dims:
        raise EmbedderMismatch(
            f"{model}: returned {vectors.shape[1]}-dimensional vectors, expected {dims} "
            f"(set [embedder] dims to match the model)"
        )
    return vectors


async def with_retries(
    call: Callable[[], Awaitable[T]],
    *,
    what: str,
    retries: int,
    is_transient: Callable[[BaseException], bool],
    base_delay: float = 0.5,
    max_delay: float = 30.0,
) -> T:
    """Run `call`, retrying transient failures with jittered exponential backoff."""
    attempt = 0
    while True:
        try:
            return await call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            if attempt >= retries:
                raise EmbedderUnavailable(f"{what}: {describe(exc)}") from exc
            delay = min(base_delay * 2**attempt, max_delay) * (0.5 + random.random())
            log.warning("embedder_retry", what=what, attempt=attempt + 1, delay=round(delay, 2),
                        error=describe(exc))
            attempt += 1
            await anyio.sleep(delay)


def describe(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
