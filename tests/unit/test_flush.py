"""Unit tests for sidecar.delivery.flush: the schedule a `ph_flush` reads and cuts short.

The bookkeeping is tested as plain calls; the waits run under pytest-trio's `autojump_clock`,
so a wait of minutes takes no real time and each one ends exactly when it should.
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from sidecar.delivery.flush import FlushState, WaitReason


def test_a_new_state_is_idle() -> None:
    """Nothing claimed, delivered or scheduled: a flush is settled only by a later claim."""
    state = FlushState()
    assert (state.claims, state.delivered, state.idle_after) == (0, 0, -1)
    assert (state.next_attempt_at, state.wait_reason) == (None, None)
    assert not state.settled(0, deadline=10.0)


def test_a_flush_is_settled_by_a_claim_after_it_that_finds_nothing() -> None:
    """An idle sender that found nothing before the flush does not settle it; the next claim
    that finds nothing does."""
    state = FlushState()
    state.found_nothing(state.begin_claim())
    before = state.begin_flush(now=0.0)
    assert before == 1
    assert not state.settled(before, deadline=10.0)
    state.begin_claim()  # a batch, delivered
    assert not state.settled(before, deadline=10.0)
    state.found_nothing(state.begin_claim())
    assert state.settled(before, deadline=10.0)


def test_a_flush_is_settled_once_the_next_attempt_falls_after_its_deadline() -> None:
    """A wait ending after the deadline settles the flush; one ending at or before does not."""
    state = FlushState()
    state.schedule(WaitReason.BACKOFF, at=10.0)
    assert not state.settled(0, deadline=10.0)
    assert state.settled(0, deadline=9.5)
    assert (state.next_attempt_at, state.wait_reason) == (10.0, WaitReason.BACKOFF)


@pytest.mark.parametrize("reason", [WaitReason.BACKOFF, WaitReason.STORAGE])
def test_a_flush_never_moves_a_backoff_or_storage_wait(reason: WaitReason) -> None:
    """During a backoff (server error, Retry-After) or a storage wait, a flush leaves the next
    attempt where it is."""
    state = FlushState()
    state.begin_claim()
    state.schedule(reason, at=30.0)
    state.begin_flush(now=1.0)
    assert (state.next_attempt_at, state.wait_reason) == (30.0, reason)


def test_a_flush_brings_an_offline_wait_forward_to_now() -> None:
    """During an offline wait, a flush makes the next attempt now, so the old time cannot make
    the flush look settled."""
    state = FlushState()
    state.begin_claim()
    state.schedule(WaitReason.OFFLINE, at=100.0)
    before = state.begin_flush(now=3.0)
    assert state.next_attempt_at == 3.0
    assert not state.settled(before, deadline=10.0)


def test_an_offline_failure_of_a_claim_in_flight_at_a_flush_is_retried_at_once() -> None:
    """A flush while claims 1..n are on the wire marks them: an offline failure of one of them
    is retried at once; a later claim (made for the flush) waits as usual."""
    state = FlushState()
    on_the_wire = state.begin_claim()
    assert not state.retry_at_once(on_the_wire)
    state.begin_flush(now=0.0)
    assert state.retry_at_once(on_the_wire)
    assert not state.retry_at_once(state.begin_claim())
    assert state.cut_short_through <= state.claims


async def test_wait_for_turn_sleeps_out_a_backoff_whatever_happens(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A backoff ends at its time: neither a flush nor new events end it early; afterwards
    nothing is scheduled."""
    state = FlushState()
    wake = trio.Event()
    state.schedule(WaitReason.BACKOFF, at=trio.current_time() + 30.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.wait_for_turn, wake)
        await trio.sleep(1)
        wake.set()
        state.begin_flush(now=trio.current_time())
    assert trio.current_time() == start + 30.0
    assert (state.next_attempt_at, state.wait_reason) == (None, None)


async def test_wait_for_turn_ends_an_offline_wait_at_a_flush(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """An offline wait ends as soon as a flush comes, not at its scheduled time."""
    state = FlushState()
    state.schedule(WaitReason.OFFLINE, at=trio.current_time() + 30.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.wait_for_turn, trio.Event())
        await trio.sleep(2)
        state.begin_flush(now=trio.current_time())
    assert trio.current_time() == start + 2.0
    assert (state.next_attempt_at, state.wait_reason) == (None, None)


async def test_a_flush_cuts_short_only_the_offline_wait_it_found(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """Once a wait cut short has ended, the next offline wait runs its course."""
    state = FlushState()
    state.schedule(WaitReason.OFFLINE, at=trio.current_time() + 30.0)
    state.begin_flush(now=trio.current_time())
    await state.wait_for_turn(trio.Event())
    state.schedule(WaitReason.OFFLINE, at=trio.current_time() + 4.0)
    start = trio.current_time()
    await state.wait_for_turn(trio.Event())
    assert trio.current_time() == start + 4.0


async def test_wait_for_turn_ends_a_storage_wait_when_woken(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A storage wait ends when new events arrive (a call reached the disk)."""
    state = FlushState()
    wake = trio.Event()
    state.schedule(WaitReason.STORAGE, at=trio.current_time() + 5.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.wait_for_turn, wake)
        await trio.sleep(1)
        wake.set()
    assert trio.current_time() == start + 1.0


async def test_flush_returns_what_was_delivered_once_settled(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """`flush` wakes the sender, and returns the events delivered meanwhile once a claim after
    it finds nothing."""
    state = FlushState()
    state.delivered = 7
    woken: list[float] = []
    result: list[int] = []

    async def flush() -> None:
        result.append(await state.flush(100.0, trio.current_time(), trio.Event(),
                                        lambda: woken.append(trio.current_time())))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(flush)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == [0.0]
        await trio.sleep(3)
        state.begin_claim()
        state.delivered += 5
        state.notify()
        await trio.testing.wait_all_tasks_blocked()
        assert result == []
        state.found_nothing(state.begin_claim())
    assert result == [5]
    assert trio.current_time() == 3.0


async def test_flush_gives_up_at_its_deadline_or_when_stopping(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """A flush that is never settled returns at its deadline, or earlier when the process stops."""
    state = FlushState()
    assert await state.flush(trio.current_time() + 10.0, trio.current_time(), trio.Event(),
                             lambda: None) == 0
    assert trio.current_time() == 10.0
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(state.flush, trio.current_time() + 10.0, trio.current_time(),
                           stopping, lambda: None)
        await trio.sleep(4)
        stopping.set()
    assert trio.current_time() == 14.0
