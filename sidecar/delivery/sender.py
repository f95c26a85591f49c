"""The sender: one task that takes leased batches from the queue and POSTs them to capture.

It is the I/O around two pieces that do none: `policy.decide` says what each answer means for
the events in hand (delete, split, drop, hold the key, or retry after a delay), and
`FlushState` keeps the schedule that `ph_flush` reads and cuts short. The sender waits for work
(woken at once by new events), sends one request at a time, and carries out each decision
against the store. It reads time only from its `Clock`.
"""

from __future__ import annotations

import logging
import math
import random
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Protocol

import trio

from sidecar.delivery import policy
from sidecar.delivery.capture import BodyDraft
from sidecar.delivery.flush import FlushState, WaitReason
from sidecar.delivery.handover import Handover
from sidecar.delivery.policy import (
    Answer,
    Backoff,
    Complete,
    Decision,
    Drop,
    FailureKind,
    Hold,
    Rules,
    Split,
    TransportFailure,
    TransportUnavailable,
)
from sidecar.process.config import Config, mask_key
from sidecar.process.waits import cancel_when_set
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import Claim, Holdings, QueuedEvent, StorageUnavailable, Store

if TYPE_CHECKING:
    import httpx

    from sidecar.delivery.httpclient import Endpoint

__all__ = ["Batch", "Clock", "Sender", "SystemClock"]

log = logging.getLogger(__name__)

# How long to wait before trying a queue that would not open or write again.
STORAGE_RETRY_S = 5.0
# Grace for handing leases back when the task is cancelled mid-request.
RELEASE_GRACE_S = 1.0


class Clock(Protocol):
    """Where the sender reads time: trio's clock for waits, the wall clock for `sent_at`."""

    def now(self) -> float:
        """Trio time, the clock waits and deadlines are in."""
        ...

    def wall(self) -> datetime:
        """The current wall time, timezone-aware."""
        ...


class SystemClock:
    """The running trio clock and the system's wall clock."""

    def now(self) -> float:
        """`trio.current_time()`."""
        return trio.current_time()

    def wall(self) -> datetime:
        """`datetime.now(UTC)`."""
        return datetime.now(UTC)


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


def rules_from(config: Config) -> Rules:
    """The delivery rules' settings out of the process configuration."""
    backoff = Backoff(config.backoff_base_s, config.backoff_max_s, config.retry_after_max_s)
    return Rules(config.max_retries, config.auth_hold_s, backoff)


class Holds:
    """Api keys whose events wait after a 401/403, each until a trio time."""

    def __init__(self) -> None:
        """No key held."""
        # Invariant: every value is the end of a hold not yet seen expired by `current`.
        self._until: dict[str, float] = {}

    def hold(self, api_key: str, until: float) -> None:
        """Claim no event of `api_key` before `until`."""
        self._until[api_key] = until

    def current(self, now: float) -> list[str]:
        """The keys still held at `now` (holds that have ended are forgotten)."""
        until = self._until
        if until:
            for key in [k for k, end in until.items() if end <= now]:
                del until[key]
        return list(until)

    def next_end(self, now: float) -> float | None:
        """The earliest end of a hold after `now`, or None."""
        ends = [end for end in self._until.values() if end > now]
        return min(ends) if ends else None

    def earliest(self) -> float:
        """The earliest end of any hold, or infinity."""
        return min(self._until.values(), default=math.inf)


class HandBacks:
    """Leases that will not be sent now go back to the queue uncounted, even while the task is
    being cancelled; what the disk refuses is handed back before the next claim."""

    def __init__(self, store: AsyncStore) -> None:
        """Nothing owed."""
        self._store = store
        # Rows still leased to us because the disk refused to release them or to record an
        # attempt's outcome. Invariant: empty when a claim is made (`settle` runs first).
        self._owed: list[int] = []

    def owe(self, ids: Sequence[int]) -> None:
        """Remember rows to hand back before the next claim."""
        self._owed.extend(ids)

    async def settle(self) -> None:
        """Hand back what is owed; raises StorageUnavailable (and keeps owing) if the disk
        still refuses."""
        if self._owed:
            owed = self._owed
            await self._store.run(lambda store: store.release(owed, count_retry=False))
            self._owed = []

    async def hand_back(self, ids: list[int]) -> None:
        """Release `ids` uncounted within RELEASE_GRACE_S, shielded from cancellation; owe
        what the disk will not take back now."""
        if not ids:
            return
        with trio.move_on_after(RELEASE_GRACE_S, shield=True):
            try:
                await self._store.run(lambda store: store.release(ids, count_retry=False))
                return
            except StorageUnavailable:
                pass
        self.owe(ids)


class LazyEndpoint:
    """Capture's /batch/ endpoint, made on the first send: httpx and the TLS context add
    nothing to the start-up of a sidecar with nothing to send."""

    def __init__(self, url: str, make_transport: Callable[[], httpx.AsyncBaseTransport]) -> None:
        """Remember how to reach capture; nothing is built yet."""
        self._url = url
        self._make_transport = make_transport
        self._endpoint: Endpoint | None = None

    async def post(self, body: bytes, timeout: float) -> Answer:  # noqa: ASYNC109
        """`Endpoint.post`, the endpoint made first if this is the first send. A transport that
        cannot be made (an unusable proxy) fails as a connection that could not be made, and
        is tried again at the next attempt."""
        if self._endpoint is None:
            from sidecar.delivery.httpclient import Endpoint  # noqa: PLC0415 - see the class

            try:
                self._endpoint = Endpoint(self._url, self._make_transport())
            except TransportUnavailable as exc:
                return TransportFailure(FailureKind.CONNECT, str(exc))
        return await self._endpoint.post(body, timeout)

    async def aclose(self) -> None:
        """Close the transport (and its connections), if one was made."""
        endpoint, self._endpoint = self._endpoint, None
        if endpoint is not None:
            await endpoint.aclose()


async def compact(store: AsyncStore) -> None:
    """Nothing to send: give the space of sent and dropped events back to the disk."""
    try:
        await store.run(lambda s: s.compact())
    except StorageUnavailable as exc:
        log.debug("no compaction: %s", exc)


class Sender:
    """Delivers the queue. `run` is the task; `wake` and `flush_until` are called by methods."""

    def __init__(
        self,
        config: Config,
        store: AsyncStore,
        make_transport: Callable[[], httpx.AsyncBaseTransport],
        *,
        rng: random.Random | None = None,
        clock: Clock | None = None,
        flush: FlushState | None = None,
    ) -> None:
        """Set up an idle sender; nothing runs until `run` is started in a nursery. The jitter
        source, the clock and the flush state may be given (tests read the latter)."""
        self._config = config
        self._store = store
        self._rules = rules_from(config)
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._clock: Clock = clock or SystemClock()
        self._endpoint = LazyEndpoint(f"{config.host}/batch/", make_transport)
        self._flush = flush or FlushState()
        self._holds = Holds()
        self._handover = Handover(store)
        self._hand_backs = HandBacks(store)
        self._wake = trio.Event()
        # Failed attempts in a row (the backoff's step). Invariant: 0 after a 2xx.
        self._failures = 0
        self._stopping = False
        # Invariant: an unset event while a delivery is under way (set as it ends), else None.
        self._in_flight: trio.Event | None = None

    # ---- called from the methods -----------------------------------------------------------------

    def wake(self) -> None:
        """New events are queued: stop waiting for work (a backoff still runs its course)."""
        self._wake.set()

    def next_attempt_in(self) -> float | None:
        """Seconds until the sender will try again, or None when nothing is waiting."""
        now = self._clock.now()
        at = self._flush.next_attempt_at
        if at is None:
            at = self._holds.next_end(now)
        return None if at is None else max(0.0, at - now)

    async def flush_until(self, deadline: float, stopping: trio.Event) -> int:
        """Deliver what can be delivered by `deadline` (trio time); returns events delivered.

        Cuts short an offline wait, never a server's backoff or Retry-After, and leaves held
        events held. Returns early once the queue has nothing deliverable, the next attempt
        falls after the deadline, or the process is stopping.
        """
        return await self._flush.flush(deadline, self._clock.now(), stopping, self.wake)

    async def finish_in_flight(self) -> None:
        """Start no new request, and return once the one on the wire (if any) is answered.

        Called on shutdown under a deadline, so a request the server is handling gets its
        answer and its rows are deleted instead of being sent again at the next start.
        """
        self._stopping = True
        while self._in_flight is not None:
            await self._in_flight.wait()

    async def aclose(self) -> None:
        """Close the HTTP transport (and its connections), if one was made."""
        await self._endpoint.aclose()

    # ---- the task --------------------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver forever; cancel the surrounding scope to stop."""
        task_status.started()
        while True:
            await self._flush.wait_for_turn(self._wake)
            if self._stopping:
                await trio.sleep_forever()
            self._wake = trio.Event()
            try:
                await self._hand_backs.settle()
                batch = await self._take_next(None)
            except StorageUnavailable as exc:
                log.warning("cannot read the queue: %s", exc)
                self._schedule(WaitReason.STORAGE, STORAGE_RETRY_S)
                continue
            if batch is None:
                held = self._holds.current(self._clock.now())
                holdings = await self._look(held)
                if holdings.free:
                    continue  # handed back, or taken back from a process that is gone
                self._flush.found_nothing(self._flush.claims)
                await compact(self._store)
                await self._wait_for_work(holdings, held)
                continue
            self._in_flight = in_flight = trio.Event()
            try:
                await self._deliver(batch)
            except StorageUnavailable as exc:
                # Disk full or read-only mid-delivery: the rows stay on disk, leased to us, and
                # are sent again (at least once) after they are handed back.
                log.warning("cannot record the outcome of a delivery: %s", exc)
                self._schedule(WaitReason.STORAGE, STORAGE_RETRY_S)
            finally:
                self._in_flight = None
                in_flight.set()

    async def _take_next(self, delivered: Batch | None) -> Batch | None:
        """Delete a delivered batch (if any) and lease the next one (of a key not held): one
        transaction, one trip to the store's thread, where the next body is compressed too."""
        held = self._holds.current(self._clock.now())
        done = delivered.claim.ids if delivered else []
        size, max_bytes = self._config.batch_size, self._config.max_batch_bytes
        number = self._flush.begin_claim()

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
            self._hand_backs.owe(done)
            raise
        if delivered is not None:
            self._flush.delivered += completed
            log.debug("delivered %d events", completed)
        return batch

    async def _look(self, held: list[str]) -> Holdings:
        """Nothing to lease: take back the leases of processes that are gone, and see who
        holds the rest."""
        try:
            return await self._handover.look(held)
        except StorageUnavailable:
            return Holdings(free=False, holders={})

    async def _wait_for_work(self, holdings: Holdings, held: list[str]) -> None:
        """Wait for new events, the end of a key's hold, or, while other processes hold rows,
        the moment one of them lets go."""
        with trio.move_on_at(self._holds.earliest()):
            if not holdings.holders:
                await self._wake.wait()
                return
            async with trio.open_nursery() as race:
                race.start_soon(cancel_when_set, self._wake, race.cancel_scope)
                await self._handover.wait_for_let_go(holdings.holders, held)
                race.cancel_scope.cancel()

    def _schedule(self, reason: WaitReason, delay: float) -> None:
        self._flush.schedule(reason, self._clock.now() + delay)

    async def _deliver(self, batch: Batch) -> None:
        """Send batches back to back while the server takes them; any other answer ends the
        streak with its decision carried out on the batch in hand. Every lease ends released
        or settled, and a batch is deleted before the next is leased, so a crash resends at
        most one batch.
        """
        in_hand: Batch | None = batch
        try:
            while in_hand is not None and not self._stopping:
                events = in_hand.claim.events
                answer = await self._attempt(in_hand.claim.api_key, events, in_hand.draft)
                decision = self._decide(answer, events)
                if not isinstance(decision, Complete):
                    resolving, in_hand = in_hand, None
                    await self._resolve(resolving, decision)
                    return
                self._failures = 0
                delivered, in_hand = in_hand, None
                in_hand = await self._take_next(delivered)
        finally:
            if in_hand is not None:  # cancelled mid-request, or stopping: hand it back
                await self._hand_backs.hand_back(in_hand.claim.ids)

    async def _resolve(self, batch: Batch, decision: Decision) -> None:
        """Carry out a decision other than Complete on a batch, then send its parts as split."""
        api_key = batch.claim.api_key
        pending: deque[tuple[QueuedEvent, ...]] = deque()
        in_hand: tuple[QueuedEvent, ...] = batch.claim.events
        try:
            carry_on = await self._carry_out(decision, api_key, in_hand, batch.number, pending)
            in_hand = ()
            while carry_on and pending and not self._stopping:
                in_hand = pending.popleft()
                decision = self._decide(await self._attempt(api_key, in_hand), in_hand)
                carry_on = await self._carry_out(decision, api_key, in_hand, batch.number, pending)
                in_hand = ()
        finally:
            # Cancelled mid-request, stopped after a failure, or the disk refused to record an
            # outcome: hand back the rows not yet handled (what the disk will not take back now
            # is handed back before the next claim).
            await self._hand_backs.hand_back(
                [event.id for part in (in_hand, *pending) for event in part]
            )

    def _decide(self, answer: Answer, events: Sequence[QueuedEvent]) -> Decision:
        return policy.decide(
            answer, events, failures=self._failures, rules=self._rules,
            wall=self._clock.wall, rng=self._rng,
        )

    async def _attempt(
        self, api_key: str, events: Sequence[QueuedEvent], draft: BodyDraft | None = None
    ) -> Answer:
        if draft is None:  # a part of a split batch: compressed here, it is rare
            draft = BodyDraft(api_key, [e.body for e in events])
        body = draft.finish(self._clock.wall())
        return await self._endpoint.post(body, self._config.request_timeout_s)

    async def _carry_out(
        self,
        decision: Decision,
        api_key: str,
        events: tuple[QueuedEvent, ...],
        number: int,
        pending: deque[tuple[QueuedEvent, ...]],
    ) -> bool:
        """Carry out `decision` on `events` (the batch of claim `number`, or a part of it);
        returns False when the rest of the batch must wait."""
        self._failures = policy.failures_after(decision, self._failures)
        ids = [event.id for event in events]
        if isinstance(decision, Complete):
            done = await self._store.run(lambda store: store.complete(ids))
            self._flush.delivered += done
            log.debug("delivered %d events", done)
            return True
        if isinstance(decision, Split):
            pending.appendleft(decision.second)
            pending.appendleft(decision.first)
            return True
        if isinstance(decision, Drop):
            reason = decision.reason
            await self._store.run(lambda store: store.drop(ids, reason))
            await self._note_error(decision.message)
            return True
        await self._note_error(decision.message)
        if isinstance(decision, Hold):
            self._holds.hold(api_key, self._clock.now() + decision.seconds)
            await self._store.run(lambda store: store.release(ids, count_retry=False))
            self._flush.notify()
            log.warning(
                "capture refused the api key %s (%s); holding its events",
                mask_key(api_key),
                decision.message,
            )
            return False
        counted, exhausted = decision.counted, decision.exhausted
        dropped = await self._store.run(
            lambda store: store.release(ids, count_retry=counted, exhausted=exhausted)
        )
        if dropped:
            log.warning("dropped %d events after %d retries", dropped, self._rules.max_retries)
        delay = decision.delay
        if not counted and self._flush.retry_at_once(number):
            delay = 0.0  # a flush came during this attempt: it gets one of its own now
        self._schedule(WaitReason.BACKOFF if counted else WaitReason.OFFLINE, delay)
        log.info("%s; next attempt in %.2f s", decision.message, delay)
        return False

    async def _note_error(self, message: str) -> None:
        try:
            await self._store.run(lambda store: store.set_last_error(message))
        except StorageUnavailable:
            log.warning("could not record the last error: %s", message)
