"""The trio side of the store: every call runs in a worker thread, one at a time.

A started call always runs to its end (trio does not abandon it on cancellation), so a
transaction is never cut in half. If the database could not be opened, each call tries again,
so the queue comes back by itself once the disk or folder allows it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

import trio

from sidecar.queue.store import StorageUnavailable, Store, open_store

log = logging.getLogger(__name__)
T = TypeVar("T")


class AsyncStore:
    """Runs `Store` operations from trio through one `CapacityLimiter(1)`."""

    def __init__(self, path: Path) -> None:
        """Nothing is opened until `open` or the first call."""
        self.path = path
        self.quarantined: Path | None = None
        self._store: Store | None = None
        self._limiter = trio.CapacityLimiter(1)

    def _ensure_open(self) -> Store:
        if self._store is None:
            self._store, aside = open_store(self.path)
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

    async def aclose(self) -> None:
        """Checkpoint and close the database, if it was open. Idempotent."""
        store, self._store = self._store, None
        if store is not None:
            await trio.to_thread.run_sync(store.close, limiter=self._limiter)
