"""Unit tests for sidecar.queue.astore: group commit of `enqueue` calls, on a real database."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import EnqueueResult, StorageUnavailable, Store


@pytest.fixture
def group_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls in each `Store.enqueue_many` transaction, in commit order."""
    sizes: list[int] = []
    real = Store.enqueue_many

    def counting(
        self: Store, calls: Sequence[tuple[str, Sequence[str]]], **kw: object
    ) -> list[EnqueueResult]:
        sizes.append(len(calls))
        return real(self, calls, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(Store, "enqueue_many", counting)
    return sizes


async def test_calls_that_wait_for_a_commit_share_the_next_one(
    tmp_path: Path, group_sizes: list[int]
) -> None:
    """While one commit is under way, the calls that come wait and then commit together, in
    the order they came; each gets its own result, and `joined` runs before the commit."""
    store = AsyncStore(tmp_path / "q.db")
    await store.open()
    gate = threading.Event()
    results: dict[int, EnqueueResult] = {}
    joined: list[int] = []

    async def enqueue(n: int) -> None:
        results[n] = await store.enqueue(
            "k", [f"e{n}"], max_queue=100, joined=lambda: joined.append(n)
        )

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_occupy_store_thread, store, gate)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(4):
            nursery.start_soon(enqueue, n)
            await trio.testing.wait_all_tasks_blocked()
        assert joined == [0, 1, 2, 3] and results == {}
        gate.set()
    assert group_sizes == [1, 3]
    assert [results[n].queued for n in range(4)] == [1, 2, 3, 4]
    rows = await store.run(
        lambda s: s._db.execute("SELECT body FROM ph_event_queue ORDER BY id").fetchall()
    )
    assert [r[0] for r in rows] == ["e0", "e1", "e2", "e3"]
    await store.aclose()


async def test_every_call_of_a_group_that_cannot_be_stored_fails(
    tmp_path: Path, group_sizes: list[int]
) -> None:
    """A storage failure answers each call with StorageUnavailable, the calls that waited
    together included, and the next call commits once the disk takes writes again."""
    blocker = tmp_path / "data"
    blocker.write_text("a file where the data folder should be")
    store = AsyncStore(blocker / "q.db")
    failures: list[int] = []
    gate = threading.Event()

    async def enqueue(n: int) -> None:
        try:
            await store.enqueue("k", [f"e{n}"], max_queue=100)
        except StorageUnavailable:
            failures.append(n)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(_occupy_store_thread, store, gate)
        await trio.testing.wait_all_tasks_blocked()
        for n in range(3):
            nursery.start_soon(enqueue, n)
            await trio.testing.wait_all_tasks_blocked()
        gate.set()
    assert sorted(failures) == [0, 1, 2]
    blocker.unlink()
    result = await store.enqueue("k", ["later"], max_queue=100)
    assert (result.accepted, result.queued) == (1, 1)
    await store.aclose()


async def _occupy_store_thread(store: AsyncStore, gate: threading.Event) -> None:
    """Hold the store's one worker slot until `gate` opens, as a long commit would."""
    await trio.to_thread.run_sync(gate.wait, limiter=store._limiter)
