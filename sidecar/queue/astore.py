"""The trio side of the store: every call runs in a worker thread, one at a time.

A started call always runs to its end (trio does not abandon it on cancellation), so a
transaction is never cut in half. If the database could not be opened, each call tries again,
so the queue comes back by itself once the disk or folder allows it.

`enqueue` commits in groups: the calls that come while a commit is under way wait for it, then
go into the queue together, in the order they came, in one transaction and so one sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from sidecar.queue.durability import Durability
from sidecar.queue.store import EnqueueResult, StorageUnavailable, Store, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


class _CommitGroup:
    """Calls of `enqueue` that go into the queue in one transaction."""

    __slots__ = ("calls", "committed", "failure", "results")

    def __init__(self) -> None:
        self.calls: list[tuple[str, Sequence[str]]] = []
        # Invariant: `results` (one per call, in order) or `failure` is filled before this is set.
        self.committed = trio.Event()
        self.results: list[EnqueueResult] = []
        self.failure: Exception | None = None


class AsyncStore:
    """Runs `Store` operations from trio through one `CapacityLimiter(1)`."""

    def __init__(self, path: Path, durability: Durability = Durability.FULL) -> None:
        """Nothing is opened until `open` or the first call."""
        self.path = path
        self.durability = durability
        self.quarantined: Path | None = None
        self._store: Store | None = None
        self._limiter = trio.CapacityLimiter(1)
        # Invariant: the group that new `enqueue` calls join; None while none is open. Its
        # first call leads it: it commits the group once the group before it has committed.
        self._open_group: _CommitGroup | None = None
        # Held by a leader from closing its group until its commit is done.
        self._committing = trio.Lock()

    def _ensure_open(self) -> Store:
        if self._store is None:
            self._store, aside = open_store(self.path, self.durability)
            if aside is not None:
                self.quarantined = aside
        return self._store

    def _call(self, operation: Callable[[Store], T]) -> T:
        return operation(self._ensure_open())

    async def open(self) -> None:
        """Open now, so start-up problems are logged at start; failure is not fatal."""
        try:
            await self.run(lambda store: None)
        except StorageUnavailable as exc:
            log.error("queue unavailable: %s (will retry on each call)", exc)

    async def run(self, operation: Callable[[Store], T]) -> T:
        """Run `operation(store)` in the store's thread; raises StorageUnavailable."""
        return await trio.to_thread.run_sync(
            partial(self._call, operation), limiter=self._limiter
        )

    async def enqueue(
        self,
        api_key: str,
        bodies: Sequence[str],
        *,
        max_queue: int,
        joined: Callable[[], None] = lambda: None,
    ) -> EnqueueResult:
        """`Store.enqueue`, committed together with the calls that wait beside it.

        `joined` is called once this call's place in the queue's order is fixed, before the
        commit; later calls may then join. Returns after the commit; raises
        StorageUnavailable when the group could not be stored (nothing of it was).
        """
        group = self._open_group
        leads = group is None
        if group is None:
            group = self._open_group = _CommitGroup()
        index = len(group.calls)
        group.calls.append((api_key, bodies))
        joined()
        if leads:
            # The group's calls wait on this commit; it completes even during a stop.
            with trio.CancelScope(shield=True):
                await self._commit(group, max_queue)
        else:
            await group.committed.wait()
        if group.failure is not None:
            if isinstance(group.failure, StorageUnavailable):
                raise StorageUnavailable(str(group.failure)) from group.failure
            raise RuntimeError("the commit of this call's group failed") from group.failure
        return group.results[index]

    async def _commit(self, group: _CommitGroup, max_queue: int) -> None:
        async with self._committing:
            if self._open_group is group:
                self._open_group = None
            try:
                group.results = await self.run(
                    lambda store: store.enqueue_many(group.calls, max_queue=max_queue)
                )
            except Exception as exc:  # every waiting call answers for it
                group.failure = exc
            finally:
                group.committed.set()

    async def aclose(self) -> None:
        """Checkpoint and close the database, if it was open. Idempotent."""
        store, self._store = self._store, None
        if store is not None:
            await trio.to_thread.run_sync(store.close, limiter=self._limiter)
