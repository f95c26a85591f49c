"""The sender: one task that takes leased batches from the queue and POSTs them to capture.

It waits for work (woken at once by new events), sends one request at a time, and applies the
delivery rules: delete on 2xx, back off on server errors and timeouts (counted against
--max-retries), back off without counting while offline, split on 413 and 400, hold a key's
events after 401/403.
"""

from __future__ import annotations

import enum
import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import trio

from sidecar.delivery.capture import Backoff, BodyDraft, Outcome, Verdict
from sidecar.process.config import Config, mask_key
from sidecar.process.waits import cancel_when_set
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import Claim, DropReason, QueuedEvent, StorageUnavailable, Store

if TYPE_CHECKING:
    import httpx

    from sidecar.delivery.httpclient import Endpoint

log = logging.getLogger(__name__)

# How long to wait before trying a queue that would not open or write again.
STORAGE_RETRY_S = 5.0
# Grace for handing leases back when the task is cancelled mid-request.
RELEASE_GRACE_S = 1.0
# While another process holds leases, look this often whether it died (and take them back).
FOREIGN_LEASE_CHECK_S = 30.0


class WaitReason(enum.Enum):
    """Why the sender is not sending right now."""

    BACKOFF = "backoff"  # a server error or timeout; never cut short
    OFFLINE = "offline"  # no connection; `ph_flush` may cut it short
    STORAGE = "storage"  # the queue could not be read


@dataclass(frozen=True, slots=True)
class Batch:
    """Leased events ready to send: the claim, its body compressed up to `sent_at`, and the
    claim's number (which tells whether a flush came while it was on the wire)."""

    claim: Claim
    draft: BodyDraft
    number: int

    @classmethod
    def prepare(cls, claim: Claim, number: int) -> Batch:
        """Compress the claim's events (runs in the store's thread)."""
        bodies = [event.body for event in claim.events]
        return cls(claim, BodyDraft(claim.api_key, bodies), number)


class Sender:
    """Delivers the queue. `run` is the task; `wake` and `flush` are called by the methods."""

    def __init__(
        self,
        config: Config,
        store: AsyncStore,
        make_transport: Callable[[], httpx.AsyncBaseTransport],
        *,
        rng: random.Random | None = None,
    ) -> None:
        """Set up an idle sender; nothing runs until `run` is started in a nursery."""
        self._config = config
        self._store = store
        self._make_transport = make_transport
        self._endpoint: Endpoint | None = None
        self._url = f"{config.host}/batch/"
        self._backoff = Backoff(config.backoff_base_s, config.backoff_max_s,
                                config.retry_after_max_s)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._wake = trio.Event()
        self._cut_short = trio.Event()
        self._changed = trio.Event()
        self._held_until: dict[str, float] = {}
        self._lease_check_at = math.inf
        self._failures = 0
        self._claims = 0
        self._idle_after_claim = -1
        # Claims up to this number were in flight when a flush came: if one fails offline,
        # the flush has not had its attempt yet, so the retry is not put off.
        self._cut_short_through = 0
        self.next_attempt_at: float | None = None
        self.wait_reason: WaitReason | None = None
        self.delivered = 0  # by this process, for ph_flush
        # Rows still leased to us because the disk refused to record an attempt's outcome;
        # handed back before the next claim, once the queue takes writes again.
        self._unsettled: list[int] = []
        self._stopping = False
        self._sending = False
        self._send_finished = trio.Event()

    # ---- called from the methods --------------------------------------------------------------

    def wake(self) -> None:
        """New events are queued: stop waiting for work (a backoff still runs its course)."""
        self._wake.set()

    def next_attempt_in(self) -> float | None:
        """Seconds until the sender will try again, or None when nothing is waiting."""
        now = trio.current_time()
        if self.next_attempt_at is not None:
            return max(0.0, self.next_attempt_at - now)
        holds = [until for until in self._held_until.values() if until > now]
        return max(0.0, min(holds) - now) if holds else None

    async def flush_until(self, deadline: float, stopping: trio.Event) -> int:
        """Deliver what can be delivered by `deadline` (trio time); returns events delivered.

        Cuts short an offline wait, never a server's backoff or Retry-After, and leaves held
        events held. Returns early once the queue has nothing deliverable, the next attempt
        falls after the deadline, or the process is stopping.
        """
        delivered_before = self.delivered
        claims_before = self._claims
        if self.wait_reason is WaitReason.OFFLINE:
            # The next attempt is now: the old time must not make the flush look settled
            # (an offline wait past the deadline would return before the attempt is made).
            self.next_attempt_at = trio.current_time()
            self._cut_short.set()
        else:
            # An attempt may be failing offline right now: the wait after it is cut short too.
            self._cut_short_through = max(self._cut_short_through, self._claims)
        self.wake()
        with trio.move_on_at(deadline):
            while not (stopping.is_set() or self._settled(claims_before, deadline)):
                async with trio.open_nursery() as waiters:
                    waiters.start_soon(cancel_when_set, self._changed, waiters.cancel_scope)
                    waiters.start_soon(cancel_when_set, stopping, waiters.cancel_scope)
        return self.delivered - delivered_before

    async def finish_in_flight(self) -> None:
        """Start no new request, and return once the one on the wire (if any) is answered.

        Called on shutdown under a deadline, so a request the server is handling gets its
        answer and its rows are deleted instead of being sent again at the next start.
        """
        self._stopping = True
        while self._sending:
            await self._send_finished.wait()

    def _settled(self, claims_before: int, deadline: float) -> bool:
        if self._idle_after_claim > claims_before:
            return True
        return self.next_attempt_at is not None and self.next_attempt_at > deadline

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    # ---- the task -------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver forever; cancel the surrounding scope to stop."""
        task_status.started()
        while True:
            await self._wait_for_turn()
            if self._stopping:
                await trio.sleep_forever()
            self._wake = trio.Event()
            try:
                batch = await self._claim()
            except StorageUnavailable as exc:
                log.warning("cannot read the queue: %s", exc)
                self._schedule(WaitReason.STORAGE, STORAGE_RETRY_S)
                continue
            if batch is None:
                self._idle_after_claim = self._claims
                self._notify()
                await self._plan_lease_check()
                await self._compact()
                await self._wait_for_work()
                continue
            self._sending = True
            try:
                await self._deliver(batch)
            except StorageUnavailable as exc:
                # Disk full or read-only mid-delivery: the rows stay on disk, leased to us, and
                # are sent again (at least once) after they are handed back.
                log.warning("cannot record the outcome of a delivery: %s", exc)
                self._schedule(WaitReason.STORAGE, STORAGE_RETRY_S)
            finally:
                self._sending = False
                self._send_finished.set()
                self._send_finished = trio.Event()

    async def _plan_lease_check(self) -> None:
        """Idle with rows leased by another process: look again later whether it still runs."""
        try:
            foreign = await self._store.run(lambda store: store.has_foreign_leases())
        except StorageUnavailable:
            foreign = False
        self._lease_check_at = (
            trio.current_time() + FOREIGN_LEASE_CHECK_S if foreign else math.inf
        )

    async def _compact(self) -> None:
        """Nothing to send: give the space of sent and dropped events back to the disk."""
        try:
            await self._store.run(lambda store: store.compact())
        except StorageUnavailable as exc:
            log.debug("no compaction: %s", exc)

    async def _claim(self) -> Batch | None:
        """Lease the next batch (of a key not held) with its body compressed, or None."""
        if self._unsettled:
            await self._release(self._unsettled, count_retry=False)
            self._unsettled = []
        return await self._take_next(None)

    async def _take_next(self, delivered: Batch | None) -> Batch | None:
        """Delete a delivered batch (if any) and lease the next one: one transaction, one trip
        to the store's thread, where the next body is compressed too."""
        now = trio.current_time()
        if now >= self._lease_check_at:
            self._lease_check_at = math.inf
            freed = await self._store.run(lambda store: store.recover_leases())
            if freed:
                log.info("took back %d events leased by a process that is gone", freed)
        for key in [k for k, until in self._held_until.items() if until <= now]:
            del self._held_until[key]
        done = delivered.claim.ids if delivered else []
        held = list(self._held_until)
        size, max_bytes = self._config.batch_size, self._config.max_batch_bytes
        self._claims += 1
        number = self._claims

        def settle_and_lease(store: Store) -> tuple[int, Batch | None]:
            completed, claim = store.complete_and_claim(
                done, size, max_bytes=max_bytes, exclude_keys=held
            )
            return completed, Batch.prepare(claim, number) if claim else None

        try:
            completed, batch = await self._store.run(settle_and_lease)
        except StorageUnavailable:
            # Delivered but not deleted: hand the rows back once the disk takes writes again;
            # they go out a second time, which at-least-once allows.
            self._unsettled.extend(done)
            raise
        if delivered is not None:
            self.delivered += completed
            log.debug("delivered %d events", completed)
        return batch

    async def _wait_for_turn(self) -> None:
        if self.next_attempt_at is None:
            return
        with trio.move_on_at(self.next_attempt_at):
            if self.wait_reason is WaitReason.OFFLINE:
                await self._cut_short.wait()
            elif self.wait_reason is WaitReason.STORAGE:
                await self._wake.wait()  # a call that reached the disk shows it is back
            else:
                await trio.sleep_forever()
        self._cut_short = trio.Event()
        self.next_attempt_at = None
        self.wait_reason = None

    async def _wait_for_work(self) -> None:
        wake_at = min(self._held_until.values(), default=self._lease_check_at)
        wake_at = min(wake_at, self._lease_check_at)
        with trio.move_on_at(wake_at):
            await self._wake.wait()

    def _schedule(self, reason: WaitReason, delay: float) -> None:
        self.wait_reason = reason
        self.next_attempt_at = trio.current_time() + delay
        self._notify()

    async def _deliver(self, batch: Batch) -> None:
        """Send batches back to back while the server takes them; any other answer ends the
        streak with the delivery rules applied to the batch in hand. Every lease ends released
        or settled, and a batch is deleted before the next is sent, so a crash resends at most
        one batch.

        (Leasing the next batch while a request is on the wire was tried: on two cores shared
        with the server it cost more CPU than it hid, and drained slower.)
        """
        in_hand: Batch | None = batch
        try:
            while in_hand is not None and not self._stopping:
                claim = in_hand.claim
                verdict = await self._attempt(claim.api_key, claim.events, in_hand.draft)
                if verdict.outcome is not Outcome.DELIVERED:
                    resolving, in_hand = in_hand, None
                    await self._resolve(resolving, verdict)
                    return
                self._failures = 0
                delivered, in_hand = in_hand, None
                in_hand = await self._take_next(delivered)
        finally:
            if in_hand is not None:  # cancelled mid-request, or stopping: hand it back
                await self._hand_back(in_hand.claim.ids)

    async def _resolve(self, batch: Batch, verdict: Verdict) -> None:
        """Apply the rules to a batch the server did not take whole, splitting it as asked."""
        api_key = batch.claim.api_key
        pending: deque[tuple[QueuedEvent, ...]] = deque()
        in_hand: tuple[QueuedEvent, ...] = batch.claim.events
        try:
            carry_on = await self._apply(batch, in_hand, verdict, pending)
            in_hand = ()
            while carry_on and pending and not self._stopping:
                in_hand = pending.popleft()
                verdict = await self._attempt(api_key, in_hand)
                carry_on = await self._apply(batch, in_hand, verdict, pending)
                in_hand = ()
        finally:
            # Cancelled mid-request, stopped after a failure, or the disk refused to record an
            # outcome: hand back the rows not yet handled (what the disk will not take back now
            # is handed back before the next claim).
            await self._hand_back([event.id for part in (in_hand, *pending) for event in part])

    async def _hand_back(self, ids: list[int]) -> None:
        """Release leases that will not be sent now, uncounted, even while being cancelled.
        Rows the disk will not release now are released before the next claim."""
        if not ids:
            return
        with trio.move_on_after(RELEASE_GRACE_S, shield=True):
            try:
                await self._release(ids, count_retry=False)
                return
            except StorageUnavailable:
                pass
        self._unsettled.extend(ids)

    async def _attempt(
        self, api_key: str, events: Sequence[QueuedEvent], draft: BodyDraft | None = None
    ) -> Verdict:
        if draft is None:  # a part of a split batch: compressed here, it is rare
            draft = BodyDraft(api_key, [e.body for e in events])
        body = draft.finish(datetime.now(UTC))
        if self._endpoint is None:
            # httpx and the TLS context are built on first use, so they add nothing to the
            # start-up of a sidecar with nothing to send.
            from sidecar.delivery.httpclient import Endpoint  # noqa: PLC0415 - see above

            self._endpoint = Endpoint(self._url, self._make_transport())
        return await self._endpoint.post(body, self._config.request_timeout_s)

    async def aclose(self) -> None:
        """Close the HTTP transport (and its connections), if one was made."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.aclose()

    async def _apply(
        self,
        batch: Batch,
        events: tuple[QueuedEvent, ...],
        verdict: Verdict,
        pending: deque[tuple[QueuedEvent, ...]],
    ) -> bool:
        """Act on one answer about `events` (the batch or a part of it); returns False when
        the rest of the batch must wait."""
        api_key = batch.claim.api_key
        ids = [event.id for event in events]
        outcome = verdict.outcome
        if outcome is Outcome.DELIVERED:
            self._failures = 0
            done = await self._store.run(lambda store: store.complete(ids))
            self.delivered += done
            log.debug("delivered %d events", done)
            return True
        if outcome in (Outcome.SPLIT_TOO_LARGE, Outcome.SPLIT_BAD_REQUEST):
            self._failures = 0
            if len(events) == 1:
                await self._store.run(lambda store: store.drop(ids, DropReason.REJECTED))
                await self._note_error(f"{verdict.reason}: dropped 1 event the server refused")
                return True
            middle = len(events) // 2
            pending.appendleft(events[middle:])
            pending.appendleft(events[:middle])
            return True
        await self._note_error(verdict.reason)
        if outcome is Outcome.HOLD:
            self._held_until[api_key] = trio.current_time() + self._config.auth_hold_s
            await self._release(ids, count_retry=False)
            self._notify()
            log.warning(
                "capture refused the api key %s (%s); holding its events",
                mask_key(api_key),
                verdict.reason,
            )
            return False
        self._failures += 1
        counted = outcome is Outcome.RETRY
        delay = self._backoff.delay(self._failures, verdict.retry_after_s, self._rng)
        dropped = await self._release(ids, count_retry=counted)
        if dropped:
            log.warning("dropped %d events after %d retries", dropped, self._config.max_retries)
        if not counted and batch.number <= self._cut_short_through:
            delay = 0.0  # a flush came during this attempt: it gets one of its own now
        self._schedule(WaitReason.BACKOFF if counted else WaitReason.OFFLINE, delay)
        log.info("%s; next attempt in %.2f s", verdict.reason, delay)
        return False

    async def _release(self, ids: list[int], *, count_retry: bool) -> int:
        max_retries = self._config.max_retries
        return await self._store.run(
            lambda store: store.release(ids, count_retry=count_retry, max_retries=max_retries)
        )

    async def _note_error(self, message: str) -> None:
        try:
            await self._store.run(lambda store: store.set_last_error(message))
        except StorageUnavailable:
            log.warning("could not record the last error: %s", message)

