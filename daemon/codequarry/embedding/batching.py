"""Concurrent search queries embedded together: ten clients asking at once cost one
model run, not ten runs fighting over the same two cores."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio
import numpy as np
from anyio.lowlevel import RunVar

from codequarry.embedding.base import Vectors
from codequarry.errors import EmbedderUnavailable


@dataclass
class _Request:
    text: str
    vector: Vectors | None = None
    error: BaseException | None = None


@dataclass
class _State:
    lock: anyio.Lock
    pending: list[_Request]


class QueryBatcher:
    """`embed(text)` waits for the run in progress, then the first waiter embeds every
    query that arrived meanwhile in one call of `embed_many`."""

    def __init__(self, embed_many: Callable[[list[str]], Awaitable[Vectors]]) -> None:
        self._embed_many = embed_many
        # per event loop: an embedder outlives a loop in tests and one-shot CLI runs
        self._state: RunVar[_State] = RunVar(f"query-batcher-{id(self)}")

    async def embed(self, text: str) -> Vectors:
        try:
            state = self._state.get()
        except LookupError:
            state = _State(anyio.Lock(), [])
            self._state.set(state)
        request = _Request(text)
        state.pending.append(request)
        async with state.lock:
            if request.vector is None and request.error is None:  # nobody took it yet
                batch, state.pending = state.pending, []
                try:
                    vectors = await self._embed_many([r.text for r in batch])
                except BaseException as exc:  # every waiter in the batch gets an answer
                    for r in batch:
                        r.error = exc if isinstance(exc, Exception) else EmbedderUnavailable(
                            "the query embedding was interrupted; try again")
                    if not isinstance(exc, Exception):
                        raise  # cancellation of the task that ran the batch
                else:
                    for r, vector in zip(batch, vectors, strict=True):
                        r.vector = vector
        if request.error is not None:
            raise request.error
        assert request.vector is not None
        return np.asarray(request.vector, dtype=np.float32)[None, :]
