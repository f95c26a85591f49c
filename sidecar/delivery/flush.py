"""When the sender tries next, and what a `ph_flush` waits on.

`FlushState` is shared by the sender task, which records its claims, deliveries and waits, and
the `ph_flush` calls, which cut an offline wait short (never a server's backoff or Retry-After)
and wait until their attempt has been made. Times are trio times, passed in by the caller.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import trio

from sidecar.process.waits import cancel_when_set


class WaitReason(enum.Enum):
    """Why the sender is not sending right now."""

    BACKOFF = "backoff"  # a server error or timeout; never cut short
    OFFLINE = "offline"  # no connection; `ph_flush` may cut it short
    STORAGE = "storage"  # the queue could not be read; new events end it


class FlushState:
    """The sender's schedule and progress, as a `ph_flush` sees them."""

    def __init__(self) -> None:
        """Idle: no claim made, nothing delivered, no wait scheduled."""
        # Events this process delivered. Invariant: never decreases.
        self.delivered = 0
        # The number of the latest claim (one try to lease a batch). Invariant: never decreases.
        self.claims = 0
        # The number of the latest claim that found nothing deliverable, -1 before one.
        # Invariant: idle_after <= claims.
        self.idle_after = -1
        # Claims numbered up to this were in flight when a flush came: if one fails offline, the
        # flush has not had its attempt yet, so the retry is not put off.
        # Invariant: cut_short_through <= claims.
        self.cut_short_through = 0
        # When the sender tries next (trio time), or None when it is not waiting to.
        # Invariant: next_attempt_at is None exactly when wait_reason is None.
        self.next_attempt_at: float | None = None
        self.wait_reason: WaitReason | None = None
        # Set, then replaced, whenever something a waiting flush checks has changed (a claim
        # found nothing, a wait was scheduled, a key was held).
        # Invariant: the current event is unset (`notify` sets it and puts a fresh one here).
        self._changed = trio.Event()
        # Set by a flush to end an offline wait now. Invariant: replaced whenever a wait ends,
        # so a flush cuts short only the wait it found.
        self._cut_short = trio.Event()

    # ---- the sender's side -----------------------------------------------------------------------

    def begin_claim(self) -> int:
        """Number a new claim (its number tells whether a flush came while it was on the wire)."""
        self.claims += 1
        return self.claims

    def found_nothing(self, claim: int) -> None:
        """Claim `claim` found nothing deliverable: the flushes before it are settled."""
        self.idle_after = claim
        self.notify()

    def schedule(self, reason: WaitReason, at: float) -> None:
        """Wait until `at` before the next attempt, for `reason`."""
        self.wait_reason = reason
        self.next_attempt_at = at
        self.notify()

    def retry_at_once(self, claim: int) -> bool:
        """Whether an offline failure of claim `claim` is retried now: a flush came while it
        was on the wire and has not had an attempt of its own."""
        return claim <= self.cut_short_through

    def notify(self) -> None:
        """Wake the waiting flushes to look at the state again."""
        self._changed.set()
        self._changed = trio.Event()

    async def wait_for_turn(self, wake: trio.Event) -> None:
        """Sleep out the scheduled wait, if any: an offline wait ends early at a flush, a
        storage wait when `wake` is set (a call reached the disk), a backoff never early."""
        if self.next_attempt_at is None:
            return
        with trio.move_on_at(self.next_attempt_at):
            if self.wait_reason is WaitReason.OFFLINE:
                await self._cut_short.wait()
            elif self.wait_reason is WaitReason.STORAGE:
                await wake.wait()
            else:
                await trio.sleep_forever()
        self._cut_short = trio.Event()
        self.next_attempt_at = None
        self.wait_reason = None

    # ---- the flush's side ------------------------------------------------------------------------

    def begin_flush(self, now: float) -> int:
        """Cut an offline wait short (or the one after an attempt in flight); returns the claim
        number the flush is settled after."""
        if self.wait_reason is WaitReason.OFFLINE:
            # The next attempt is now: the old time must not make the flush look settled
            # (an offline wait past the deadline would return before the attempt is made).
            self.next_attempt_at = now
            self._cut_short.set()
        else:
            # An attempt may be failing offline right now: the wait after it is cut short too.
            self.cut_short_through = max(self.cut_short_through, self.claims)
        return self.claims

    def settled(self, claims_before: int, deadline: float) -> bool:
        """Whether a flush begun at claim `claims_before` is done: a later claim found nothing
        to send, or the next attempt falls after `deadline`."""
        if self.idle_after > claims_before:
            return True
        return self.next_attempt_at is not None and self.next_attempt_at > deadline

    async def flush(
        self, deadline: float, now: float, stopping: trio.Event, wake: Callable[[], None]
    ) -> int:
        """Cut short what may be cut short, `wake` the sender, and wait until settled, past
        `deadline` or `stopping`; returns the events delivered meanwhile."""
        delivered_before = self.delivered
        claims_before = self.begin_flush(now)
        wake()
        with trio.move_on_at(deadline):
            while not (stopping.is_set() or self.settled(claims_before, deadline)):
                async with trio.open_nursery() as waiters:
                    waiters.start_soon(cancel_when_set, self._changed, waiters.cancel_scope)
                    waiters.start_soon(cancel_when_set, stopping, waiters.cancel_scope)
        return self.delivered - delivered_before
