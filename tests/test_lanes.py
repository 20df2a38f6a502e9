"""The two-lane coalescing work queue (codequarry.lanes.WorkQueue)."""

from __future__ import annotations

import anyio

from codequarry.lanes import WorkQueue
from codequarry.models import ChangeKind, Lane

CREATED, MODIFIED, DELETED = ChangeKind.CREATED, ChangeKind.MODIFIED, ChangeKind.DELETED


async def test_changes_to_one_path_coalesce_and_the_last_kind_wins() -> None:
    queue = WorkQueue()
    for kind in (CREATED, MODIFIED, DELETED):
        assert queue.offer("p", "a.py", kind, Lane.BACKLOG)
    queue.offer("p", "b.py", MODIFIED, Lane.BACKLOG)
    queue.offer("p", "a.py", MODIFIED, Lane.BACKLOG)
    assert len(queue) == 2
    assert await queue.take(10) == (Lane.BACKLOG, "p", [("b.py", MODIFIED), ("a.py", MODIFIED)])
    assert len(queue) == 0


async def test_same_path_in_two_projects_is_two_entries() -> None:
    queue = WorkQueue()
    queue.offer("one", "a.py", MODIFIED, Lane.LIVE)
    queue.offer("two", "a.py", MODIFIED, Lane.LIVE)
    assert len(queue) == 2


async def test_live_work_is_taken_before_the_backlog() -> None:
    queue = WorkQueue()
    queue.offer("p", "old.py", CREATED, Lane.BACKLOG)
    queue.offer("p", "new.py", MODIFIED, Lane.LIVE)
    assert queue.has_live_work()
    assert await queue.take(10) == (Lane.LIVE, "p", [("new.py", MODIFIED)])
    assert not queue.has_live_work()
    assert await queue.take(10) == (Lane.BACKLOG, "p", [("old.py", CREATED)])


async def test_backlog_path_moves_to_the_live_lane_on_a_live_event() -> None:
    queue = WorkQueue()
    queue.offer("p", "a.py", CREATED, Lane.BACKLOG)
    queue.offer("p", "b.py", CREATED, Lane.BACKLOG)
    queue.offer("p", "a.py", MODIFIED, Lane.LIVE)
    assert len(queue) == 2
    assert await queue.take(10) == (Lane.LIVE, "p", [("a.py", MODIFIED)])
    assert await queue.take(10) == (Lane.BACKLOG, "p", [("b.py", CREATED)])


async def test_backlog_offer_for_a_live_path_updates_it_in_the_live_lane() -> None:
    queue = WorkQueue()
    queue.offer("p", "a.py", MODIFIED, Lane.LIVE)
    assert queue.offer("p", "a.py", DELETED, Lane.BACKLOG)
    assert len(queue) == 1
    assert await queue.take(10) == (Lane.LIVE, "p", [("a.py", DELETED)])


async def test_offer_at_capacity_returns_false_without_growing() -> None:
    queue = WorkQueue(capacity=2)
    assert queue.offer("p", "a.py", CREATED, Lane.LIVE)
    assert queue.offer("p", "b.py", CREATED, Lane.LIVE)
    assert not queue.offer("p", "c.py", CREATED, Lane.LIVE)
    assert len(queue) == 2
    assert queue.offer("p", "a.py", DELETED, Lane.LIVE)  # coalescing needs no room
    assert len(queue) == 2
    assert await queue.take(10) == (Lane.LIVE, "p", [("b.py", CREATED), ("a.py", DELETED)])


async def test_a_full_backlog_does_not_block_live_offers() -> None:
    queue = WorkQueue(capacity=1)
    assert queue.offer("p", "a.py", CREATED, Lane.BACKLOG)
    assert not queue.offer("p", "b.py", CREATED, Lane.BACKLOG)
    assert queue.offer("p", "c.py", MODIFIED, Lane.LIVE)


async def test_refused_promotion_leaves_the_path_in_the_backlog() -> None:
    queue = WorkQueue(capacity=1)
    queue.offer("p", "live.py", MODIFIED, Lane.LIVE)
    queue.offer("p", "a.py", CREATED, Lane.BACKLOG)
    assert not queue.offer("p", "a.py", MODIFIED, Lane.LIVE)
    assert len(queue) == 2
    assert queue.pending("p") == 2


async def test_put_waits_for_room_until_take_frees_it() -> None:
    queue = WorkQueue(capacity=1)
    await queue.put("p", "a.py", CREATED, Lane.BACKLOG)
    done = anyio.Event()

    async def producer() -> None:
        await queue.put("p", "b.py", CREATED, Lane.BACKLOG)
        done.set()

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(producer)
        with anyio.move_on_after(0.2) as waited:
            await done.wait()
        assert waited.cancelled_caught, "put did not wait for room"
        assert len(queue) == 1
        assert await queue.take(10) == (Lane.BACKLOG, "p", [("a.py", CREATED)])
        with anyio.fail_after(5):
            await done.wait()
    assert await queue.take(10) == (Lane.BACKLOG, "p", [("b.py", CREATED)])


async def test_take_waits_for_work() -> None:
    queue = WorkQueue()
    taken: list[tuple[Lane, str, list[tuple[str, ChangeKind]]]] = []

    async def consumer() -> None:
        taken.append(await queue.take(10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(consumer)
            await anyio.wait_all_tasks_blocked()
            assert taken == []
            queue.offer("p", "a.py", CREATED, Lane.BACKLOG)
    assert taken == [(Lane.BACKLOG, "p", [("a.py", CREATED)])]


async def test_take_batches_one_project_and_at_most_max_items() -> None:
    queue = WorkQueue()
    for project, path in [("p1", "a"), ("p2", "b"), ("p1", "c"), ("p1", "d"), ("p2", "e")]:
        queue.offer(project, path, MODIFIED, Lane.BACKLOG)
    assert await queue.take(2) == (Lane.BACKLOG, "p1", [("a", MODIFIED), ("c", MODIFIED)])
    assert await queue.take(10) == (Lane.BACKLOG, "p2", [("b", MODIFIED), ("e", MODIFIED)])
    assert await queue.take(10) == (Lane.BACKLOG, "p1", [("d", MODIFIED)])
    assert len(queue) == 0


async def test_drop_project_removes_its_paths_from_both_lanes() -> None:
    queue = WorkQueue()
    queue.offer("gone", "a", MODIFIED, Lane.LIVE)
    queue.offer("gone", "b", MODIFIED, Lane.BACKLOG)
    queue.offer("kept", "c", MODIFIED, Lane.BACKLOG)
    queue.drop_project("gone")
    assert len(queue) == 1
    assert queue.pending("gone") == 0
    assert not queue.has_live_work()
    assert await queue.take(10) == (Lane.BACKLOG, "kept", [("c", MODIFIED)])


async def test_pending_counts_one_project_across_both_lanes() -> None:
    queue = WorkQueue()
    queue.offer("p", "a", MODIFIED, Lane.LIVE)
    queue.offer("p", "b", MODIFIED, Lane.BACKLOG)
    queue.offer("p", "b", DELETED, Lane.BACKLOG)
    queue.offer("q", "a", MODIFIED, Lane.BACKLOG)
    assert queue.pending("p") == 2
    assert queue.pending("q") == 1
    assert queue.pending("none") == 0
