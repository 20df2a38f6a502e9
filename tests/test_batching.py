"""QueryBatcher: queries that arrive while a model call runs go together in the next one."""

from __future__ import annotations

import anyio
import numpy as np
import pytest

from codequarry.embedding.base import Vectors
from codequarry.embedding.batching import QueryBatcher


class Model:
    """Vector i is [len(text), i-th call]; the first call is held until released."""

    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[list[str]] = []
        self.release = anyio.Event()
        self.fail_on = fail_on

    async def embed_many(self, texts: list[str]) -> Vectors:
        self.calls.append(texts)
        if len(self.calls) == 1:
            await self.release.wait()
        if self.fail_on in texts:
            raise RuntimeError("model broke")
        return np.array([[len(t), len(self.calls)] for t in texts], dtype=np.float32)


async def test_queries_waiting_behind_a_call_are_embedded_together_each_getting_its_own_row() -> None:
    model = Model()
    batcher = QueryBatcher(model.embed_many)
    results: dict[str, Vectors] = {}

    async def ask(text: str) -> None:
        results[text] = await batcher.embed(text)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ask, "a")
        await anyio.wait_all_tasks_blocked()
        for text in ("bb", "ccc", "dddd"):
            tasks.start_soon(ask, text)
        await anyio.wait_all_tasks_blocked()
        model.release.set()
    assert model.calls == [["a"], ["bb", "ccc", "dddd"]]
    assert {t: v.tolist() for t, v in results.items()} == {
        "a": [[1, 1]], "bb": [[2, 2]], "ccc": [[3, 2]], "dddd": [[4, 2]]}


async def test_a_failing_call_fails_every_query_in_it_and_the_next_query_works() -> None:
    model = Model(fail_on="bad")
    batcher = QueryBatcher(model.embed_many)
    errors: list[str] = []

    async def ask(text: str) -> None:
        try:
            await batcher.embed(text)
        except RuntimeError as exc:
            errors.append(f"{text}: {exc}")

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ask, "first")
        await anyio.wait_all_tasks_blocked()
        tasks.start_soon(ask, "bad")
        tasks.start_soon(ask, "innocent")
        await anyio.wait_all_tasks_blocked()
        model.release.set()
    assert sorted(errors) == ["bad: model broke", "innocent: model broke"]
    assert (await batcher.embed("later")).tolist() == [[5, 3]]
    with pytest.raises(RuntimeError):
        await batcher.embed("bad")
