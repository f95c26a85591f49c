"""Hand-over between processes: follow the sidecars that hold rows of our queue, and take the
rows over the moment they let go.

Rows leased by another live sidecar on the same data folder (an app relaunching while the old
process finishes its stop, a second window) are not ours to send. The idle sender follows their
holders and goes back to claiming as soon as one of them lets go:

- it ends (a clean stop that could not hand back, a crash, a kill): on Linux a pidfd of each
  holder, which trio waits on like a socket, says so at once; its leases are then taken back;
- it hands the rows back while it lives on (its request failed, it stopped sending): a look at
  the queue every `RECHECK_S` seconds finds them free. The look runs only while another process
  holds rows, so a sender with nothing foreign to follow never wakes for it. Where there is no
  pidfd (macOS, Windows, Linux before 5.3) the same look notices holders that ended.

A holder counts as ended once its process is gone or a zombie (`LeaseOwner.is_alive`), or once
its oldest lease is older than `STALE_LEASE_S` (a hang); `Store.recover_leases` takes back the
leases of both.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Collection

import trio

from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import STALE_LEASE_S, Holdings, LeaseOwner, StorageUnavailable, Store

log = logging.getLogger(__name__)

__all__ = ["RECHECK_S", "Handover", "look"]

# While another process holds rows, look this often whether it handed them back.
RECHECK_S = 0.25


def look(store: Store, exclude_keys: Collection[str]) -> Holdings:
    """The queue's holdings (see `Store.holdings`) after taking back the leases of holders that
    ended or hang. Runs in the store's thread."""
    holdings = store.holdings(exclude_keys)
    stale_before = time.time() - STALE_LEASE_S
    ended = [
        token for token, oldest in holdings.holders.items()
        if oldest < stale_before or not LeaseOwner.is_alive(token)
    ]
    if not ended:
        return holdings
    freed = store.recover_leases()
    if freed:
        log.info("took back %d events leased by a process that is gone", freed)
    return store.holdings(exclude_keys)


def _open_pidfd(token: str) -> int | None:
    """A pidfd of the process behind lease owner `token`, or None when there is none to wait
    on (no pidfd support, or the process is already gone)."""
    try:
        return os.pidfd_open(int(token.partition(":")[0]))
    except (AttributeError, ValueError, OSError):
        return None


class Handover:
    """Follows the other processes holding rows of the queue, for the idle sender."""

    def __init__(
        self, store: AsyncStore, *, recheck_s: float = RECHECK_S, use_pidfd: bool | None = None
    ) -> None:
        """Follow holders through `store`; `use_pidfd` defaults to whether this is Linux."""
        self._store = store
        self._recheck_s = recheck_s
        self._use_pidfd = sys.platform.startswith("linux") if use_pidfd is None else use_pidfd

    async def look(self, exclude_keys: Collection[str]) -> Holdings:
        """Take back the leases of holders that ended; then whether rows are free to lease
        (keys in `exclude_keys` aside) and which live processes hold the others. Raises
        StorageUnavailable."""
        keys = list(exclude_keys)
        return await self._store.run(lambda store: look(store, keys))

    async def wait_for_let_go(
        self, holders: Collection[str], exclude_keys: Collection[str]
    ) -> None:
        """Return once one of `holders` (lease owner tokens) has let go of rows: it ended (its
        leases are taken back before this returns) or rows are free to lease; or once the set
        of holders has changed, so the caller looks again. Never returns while nothing changes,
        and wakes only every `RECHECK_S` (plus at once when a holder ends, where pidfds exist).
        """
        following = frozenset(holders)
        keys = list(exclude_keys)
        async with trio.open_nursery() as race:
            if self._use_pidfd:
                for token in following:
                    race.start_soon(self._wait_for_exit, token, keys, race.cancel_scope)
            race.start_soon(self._recheck, following, keys, race.cancel_scope)

    async def _wait_for_exit(
        self, token: str, exclude_keys: list[str], done: trio.CancelScope
    ) -> None:
        """Once the process behind `token` has ended, take back its leases and cancel `done`;
        without a pidfd for it, leave that to the re-check."""
        pidfd = _open_pidfd(token)
        if pidfd is None:
            return
        try:
            # The pidfd is held before checking that it names the holder (same start time),
            # so it cannot name a later process that reused the pid.
            if LeaseOwner.is_alive(token):
                await trio.lowlevel.wait_readable(pidfd)
        finally:
            os.close(pidfd)
        # The next claim finds its rows free; a disk that refuses is that claim's to report.
        with contextlib.suppress(StorageUnavailable):
            await self.look(exclude_keys)
        done.cancel()

    async def _recheck(
        self, following: frozenset[str], exclude_keys: list[str], done: trio.CancelScope
    ) -> None:
        """Cancel `done` once a look (which takes back the leases of holders that ended) finds
        rows free or other holders than `following`."""
        while True:
            await trio.sleep(self._recheck_s)
            try:
                holdings = await self.look(exclude_keys)
            except StorageUnavailable:
                break  # the next claim reports it and waits for the disk
            if holdings.free or frozenset(holdings.holders) != following:
                break
        done.cancel()
