"""A Searcher that remembers recent answers until the index changes, and lets concurrent
identical searches share one run.

The index generation counts committed write transactions on the store's engine (a
SQLAlchemy "commit" event): every change a search can see -- chunks, vectors, change
events that make up the freshness counters, a dropped project -- is written in one, so
an answer cached at generation g is exact for as long as the generation stays g.
Searches themselves read in autocommit mode and commit nothing.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import anyio
from sqlalchemy import event

from codequarry.embedding import Embedder
from codequarry.models import SearchResponse
from codequarry.search import Searcher, SearchRequest
from codequarry.store.db import Store

DEFAULT_ENTRIES = 512

_Key = tuple[SearchRequest, str | None]


class _Flight:
    """One search in progress that identical requests wait for."""

    def __init__(self, generation: int) -> None:
        self.generation = generation
        self.done = anyio.Event()
        self.response: SearchResponse | None = None


class CachedSearcher(Searcher):
    """Searcher.search with a result cache keyed by (request, model id, index generation)
    and single flight for identical concurrent requests. `stats()` gives the counters."""

    def __init__(self, store: Store, embedder: Embedder | None, entries: int = DEFAULT_ENTRIES) -> None:
        super().__init__(store, embedder)
        self.entries = entries
        self.generation = 0
        self._answers: OrderedDict[_Key, tuple[int, SearchResponse]] = OrderedDict()
        self._flights: dict[_Key, _Flight] = {}
        self.hits = self.misses = self.shared = 0
        event.listen(store.engine.sync_engine, "commit", self._index_changed)

    def _index_changed(self, _connection: Any) -> None:
        self.generation += 1
        self._answers.clear()

    async def search(self, request: SearchRequest, model_id: str | None) -> SearchResponse:
        request.validate()
        key = (request, model_id)
        generation = self.generation
        cached = self._answers.get(key)
        if cached is not None and cached[0] == generation:
            self.hits += 1
            self._answers.move_to_end(key)
            return cached[1]
        flight = self._flights.get(key)
        if flight is not None and flight.generation == generation:
            await flight.done.wait()
            if flight.response is not None:
                self.shared += 1
                return flight.response
        return await self._run(key, request, model_id, generation)

    async def _run(self, key: _Key, request: SearchRequest, model_id: str | None,
                   generation: int) -> SearchResponse:
        self.misses += 1
        flight = _Flight(generation)
        self._flights[key] = flight
        try:
            response = await super().search(request, model_id)
            flight.response = response
        finally:  # waiters of a failed or cancelled run search by themselves
            flight.done.set()
            if self._flights.get(key) is flight:
                del self._flights[key]
        # notes say something was unavailable or incomplete: such an answer is not kept
        if not response.notes and self.generation == generation:
            self._answers[key] = (generation, response)
            while len(self._answers) > self.entries:
                self._answers.popitem(last=False)
        return response

    def stats(self) -> dict[str, Any]:
        """Counters since start: hits (answered from the cache), shared (waited for an
        identical search in flight), misses (searched), and the entries held."""
        asked = self.hits + self.shared + self.misses
        return {"hits": self.hits, "shared": self.shared, "misses": self.misses,
                "hit_rate": round((self.hits + self.shared) / asked, 4) if asked else 0.0,
                "entries": len(self._answers), "generation": self.generation}
