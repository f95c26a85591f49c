"""Unit tests for sidecar.delivery.policy: the delivery rules as plain functions, no I/O.

Every rule of DESIGN.md's "Delivery rules (contract)" about one answer is checked here on
`decide` with a seeded `random.Random` and a fixed wall clock; the sender's tests check that the
decisions are carried out against a real queue.
"""

from __future__ import annotations

import math
import random
from collections import deque
from collections.abc import Sequence
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.delivery.policy import (
    COMPLETE,
    Answer,
    Backoff,
    Complete,
    Decision,
    Drop,
    FailureKind,
    Hold,
    Response,
    Retry,
    Rules,
    Split,
    TransportFailure,
    decide,
    failures_after,
    parse_retry_after,
)
from sidecar.queue.store import DropReason, QueuedEvent

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
NOW_HTTP = "Thu, 26 Nov 2026 10:00:00 GMT"
RULES = Rules(max_retries=5, auth_hold_s=600.0, backoff=Backoff(1.0, 30.0, 3600.0))


def events(count: int, retry_count: int = 0) -> tuple[QueuedEvent, ...]:
    """`count` events with ids 1.. and the given failures so far."""
    return tuple(QueuedEvent(i, f'{{"n":{i}}}', retry_count) for i in range(1, count + 1))


def wall() -> datetime:
    """The fixed wall clock a Retry-After date is measured from."""
    return NOW


def no_wall() -> datetime:
    """A wall clock that must not be read."""
    raise AssertionError("the wall clock was read")


def run_decide(
    answer: Answer,
    in_hand: Sequence[QueuedEvent] = events(3),
    *,
    failures: int = 0,
    rules: Rules = RULES,
    seed: int = 0,
) -> Decision:
    """`decide` with a seeded jitter source and the fixed wall clock."""
    return decide(
        answer, in_hand, failures=failures, rules=rules, wall=wall, rng=random.Random(seed)
    )


# --- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
def test_2xx_completes_without_reading_the_clock(status: int) -> None:
    """Any 2xx completes the events in hand, without reading the wall clock or the jitter."""
    rng = random.Random(1)
    state = rng.getstate()
    decision = decide(
        Response(status, "120"), events(3), failures=4, rules=RULES, wall=no_wall, rng=rng
    )
    assert decision is COMPLETE
    assert rng.getstate() == state
    assert failures_after(decision, 4) == 0


@pytest.mark.parametrize("status", [400, 413])
def test_400_and_413_split_the_events_in_order(status: int) -> None:
    """400 and 413 about several events halve them, first half first, nothing lost or reordered."""
    for count in (2, 3, 8, 9):
        in_hand = events(count)
        decision = run_decide(Response(status), in_hand, failures=3)
        assert isinstance(decision, Split)
        assert len(decision.first) == count // 2
        assert decision.first + decision.second == in_hand
        assert failures_after(decision, 3) == 0


@pytest.mark.parametrize("status", [400, 413])
def test_400_and_413_about_one_event_drop_it_as_rejected(status: int) -> None:
    """A lone event the server refuses is dropped, counted as rejected, with the reason."""
    decision = run_decide(Response(status), events(1, retry_count=2), failures=2)
    assert decision == Drop(
        DropReason.REJECTED, f"HTTP {status} from capture: dropped 1 event the server refused"
    )
    assert failures_after(decision, 2) == 0


@pytest.mark.parametrize("status", [401, 403])
def test_401_and_403_hold_the_key_for_auth_hold_s(status: int) -> None:
    """401/403 hold the events (uncounted) for auth_hold_s, whatever Retry-After says; the
    failure streak is left as it was."""
    rules = Rules(max_retries=0, auth_hold_s=42.0)
    decision = run_decide(Response(status, "5"), events(2, retry_count=9), rules=rules, failures=3)
    assert decision == Hold(42.0, f"HTTP {status} from capture")
    assert failures_after(decision, 3) == 3


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504, 404, 302, 100])
def test_other_statuses_are_counted_retries(status: int) -> None:
    """408, 429, 5xx and anything unexpected are retried, counted, after [0.5, 1] s at first."""
    decision = run_decide(Response(status))
    assert isinstance(decision, Retry)
    assert decision.counted
    assert decision.exhausted == ()
    assert decision.message == f"HTTP {status} from capture"
    assert 0.5 <= decision.delay <= 1.0
    assert failures_after(decision, 0) == 1


# --- transport failures -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "counted", "message"),
    [
        (FailureKind.CONNECT, False, "cannot connect to capture: ConnectError"),
        (FailureKind.TIMEOUT, True, "capture timed out: ConnectError"),
        (FailureKind.LOST, True, "connection to capture lost: ConnectError"),
    ],
)
def test_transport_failures(kind: FailureKind, counted: bool, message: str) -> None:
    """A connection never made is an uncounted retry (offline); a timeout or a connection lost
    mid-request counts. Either backs off like a server error."""
    decision = run_decide(TransportFailure(kind, "ConnectError"), events(2, retry_count=5))
    assert isinstance(decision, Retry)
    assert (decision.counted, decision.message) == (counted, message)
    assert decision.exhausted == ((1, 2) if counted else ())
    assert 0.5 <= decision.delay <= 1.0


def test_offline_never_exhausts_retries() -> None:
    """However often an event failed before, being offline drops nothing."""
    decision = run_decide(
        TransportFailure(FailureKind.CONNECT, "ConnectTimeout"), events(3, retry_count=10**6),
        rules=Rules(max_retries=0),
    )
    assert isinstance(decision, Retry)
    assert (decision.counted, decision.exhausted) == (False, ())


# --- max_retries ----------------------------------------------------------------------------------


def test_exhausted_names_the_events_past_max_retries() -> None:
    """A counted failure names exactly the events that have now failed more than max_retries
    times (retry_count >= max_retries before it)."""
    in_hand = (
        QueuedEvent(10, "{}", 0), QueuedEvent(11, "{}", 4), QueuedEvent(12, "{}", 5),
        QueuedEvent(13, "{}", 7),
    )
    decision = run_decide(Response(503), in_hand, rules=Rules(max_retries=5))
    assert isinstance(decision, Retry)
    assert decision.exhausted == (12, 13)


@given(max_retries=st.integers(0, 30))
def test_an_event_is_sent_max_retries_plus_one_times(max_retries: int) -> None:
    """Replaying counted failures as the store records them (retry_count + 1 per failure), an
    event is sent max_retries + 1 times and dropped after the last."""
    rules = Rules(max_retries=max_retries)
    retry_count, sends, failures = 0, 0, 0
    while True:
        sends += 1
        decision = run_decide(Response(500), (QueuedEvent(1, "{}", retry_count),),
                              rules=rules, failures=failures)
        assert isinstance(decision, Retry)
        failures = failures_after(decision, failures)
        if decision.exhausted:
            break
        retry_count += 1
        assert sends <= max_retries
    assert sends == max_retries + 1


# --- backoff --------------------------------------------------------------------------------------


def test_successive_failures_back_off_within_half_to_full_nominal() -> None:
    """Folding failures through `failures_after`, the n-th retry waits [nominal(n)/2,
    nominal(n)]: 0.5-1 s, 1-2 s, 2-4 s, ... up to 15-30 s, and jitter really varies."""
    backoff = RULES.backoff
    rng = random.Random(5)
    for _ in range(20):
        failures = 0
        for n in range(1, 10):
            decision = decide(Response(503), events(1), failures=failures, rules=RULES,
                              wall=wall, rng=rng)
            assert isinstance(decision, Retry)
            nominal = backoff.nominal(n)
            assert nominal / 2 <= decision.delay <= nominal
            failures = failures_after(decision, failures)
            assert failures == n


def test_a_hold_keeps_and_a_split_ends_the_streak() -> None:
    """The streak that sets the backoff step grows with retries, survives a hold and restarts
    after an answer about the events themselves (2xx, 400, 413)."""
    assert failures_after(run_decide(Response(503), failures=4), 4) == 5
    offline = TransportFailure(FailureKind.CONNECT, "x")
    assert failures_after(run_decide(offline, failures=4), 4) == 5
    assert failures_after(run_decide(Response(401), failures=4), 4) == 4
    assert failures_after(run_decide(Response(413), failures=4), 4) == 0
    assert failures_after(run_decide(Response(204), failures=4), 4) == 0


def test_jitter_comes_from_the_random_source_given() -> None:
    """The same seed gives the same delays; a different seed, different ones."""
    first = [run_decide(Response(503), failures=n, seed=99) for n in range(8)]
    again = [run_decide(Response(503), failures=n, seed=99) for n in range(8)]
    other = [run_decide(Response(503), failures=n, seed=100) for n in range(8)]
    assert first == again
    assert first != other


@pytest.mark.parametrize(
    ("header", "cap", "low", "high"),
    [
        ("7", 3600.0, 7.0, 7.0),
        ("100000", 120.0, 120.0, 120.0),
        ("Thu, 26 Nov 2026 10:02:00 GMT", 3600.0, 120.0, 120.0),
        ("Thu, 26 Nov 2026 12:00:00 GMT", 60.0, 60.0, 60.0),
        ("0", 3600.0, 0.5, 1.0),
        (NOW_HTTP, 3600.0, 0.5, 1.0),
        ("soon", 3600.0, 0.5, 1.0),
    ],
)
def test_retry_after_is_a_capped_minimum(header: str, cap: float, low: float, high: float) -> None:
    """Retry-After (seconds, or an HTTP date measured from the wall clock given) raises the
    delay to at least that, itself capped by retry_after_max_s; a smaller or unreadable one
    leaves the jittered delay."""
    rules = Rules(backoff=Backoff(retry_after_max_s=cap))
    decision = run_decide(Response(429, header), rules=rules)
    assert isinstance(decision, Retry)
    assert low <= decision.delay <= high


def test_nominal_doubles_then_caps() -> None:
    """Nominal delays are 1, 2, 4, 8, 16, then 30 s for every later retry."""
    backoff = Backoff()
    assert [backoff.nominal(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 30, 30, 30]
    assert backoff.nominal(10_000) == 30.0


def test_nominal_treats_zero_and_negative_as_first_retry() -> None:
    """A failure count below one is read as the first retry."""
    assert Backoff().nominal(0) == 1.0
    assert Backoff().nominal(-3) == 1.0


def test_nominal_uses_base_and_cap() -> None:
    """A custom base and cap scale the sequence."""
    backoff = Backoff(base_s=0.1, max_s=0.5)
    assert [backoff.nominal(n) for n in range(1, 6)] == pytest.approx([0.1, 0.2, 0.4, 0.5, 0.5])


def test_delay_within_half_and_full_nominal_seeded() -> None:
    """With a seeded RNG, every delay lies in [nominal/2, nominal] and jitter really varies."""
    backoff = Backoff()
    rng = random.Random(1234)
    for failures in range(1, 12):
        nominal = backoff.nominal(failures)
        delays = [backoff.delay(failures, None, rng) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal / 4


def test_first_retry_comes_after_half_to_one_second() -> None:
    """The first retry waits between 0.5 and 1 s, as the contract says."""
    rng = random.Random(7)
    delays = [Backoff().delay(1, None, rng) for _ in range(500)]
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0


@given(
    failures=st.integers(-5, 200),
    seed=st.integers(0, 2**32),
    base=st.floats(0.001, 10),
    extra=st.floats(0, 100),
)
def test_property_delay_within_bounds(failures: int, seed: int, base: float, extra: float) -> None:
    """For any failure count, seed, base and cap, delay lies in [nominal/2, nominal]."""
    backoff = Backoff(base_s=base, max_s=base + extra)
    nominal = backoff.nominal(failures)
    assert base <= nominal <= base + extra
    delay = backoff.delay(failures, None, random.Random(seed))
    assert nominal / 2 <= delay <= nominal


def test_retry_after_raises_the_delay() -> None:
    """A Retry-After above the jittered delay becomes the delay."""
    assert Backoff().delay(1, 42.0, random.Random(0)) == 42.0


def test_small_retry_after_does_not_lower_the_delay() -> None:
    """A Retry-After below the jittered delay leaves the jittered delay as is."""
    jittered = Backoff().delay(5, None, random.Random(3))
    assert Backoff().delay(5, 0.0, random.Random(3)) == jittered
    assert jittered >= 8.0


def test_retry_after_is_capped() -> None:
    """A huge Retry-After is cut to retry_after_max_s."""
    backoff = Backoff(retry_after_max_s=60.0)
    assert backoff.delay(1, 86_400.0, random.Random(0)) == 60.0
    assert Backoff().delay(1, 1e9, random.Random(0)) == 3600.0


@given(
    failures=st.integers(1, 50),
    retry_after=st.floats(0, 1e7),
    cap=st.floats(1, 7200),
    seed=st.integers(0, 2**32),
)
def test_property_retry_after_is_a_capped_minimum(
    failures: int, retry_after: float, cap: float, seed: int
) -> None:
    """The delay is max(jittered, min(Retry-After, cap)) for any inputs."""
    backoff = Backoff(retry_after_max_s=cap)
    jittered = backoff.delay(failures, None, random.Random(seed))
    delay = backoff.delay(failures, retry_after, random.Random(seed))
    assert delay == max(jittered, min(retry_after, cap))
    assert delay <= max(backoff.nominal(failures), cap)


# --- isolating bad events by halving ----------------------------------------------------------


def sends_to_isolate(count: int, bad: set[int], status: int) -> tuple[list[list[int]], list[int]]:
    """Replay a batch through `decide` the way the sender walks splits (depth first, first
    half first) against a server that refuses any request holding a bad event; returns the
    requests (as id lists) and the ids dropped."""
    requests: list[list[int]] = []
    dropped: list[int] = []
    pending: deque[tuple[QueuedEvent, ...]] = deque([events(count)])
    while pending:
        in_hand = pending.popleft()
        requests.append([e.id for e in in_hand])
        answer = Response(status if bad & {e.id for e in in_hand} else 200)
        decision = run_decide(answer, in_hand)
        if isinstance(decision, Split):
            pending.appendleft(decision.second)
            pending.appendleft(decision.first)
        elif isinstance(decision, Drop):
            dropped.extend(e.id for e in in_hand)
        else:
            assert isinstance(decision, Complete)
    return requests, dropped


@given(count=st.integers(1, 64), data=st.data())
def test_halving_isolates_one_bad_event_in_about_two_log2_n_requests(
    count: int, data: st.DataObject
) -> None:
    """One bad event among n is found and dropped alone, every other event is sent in a 2xx
    request exactly once, in at most 2*ceil(log2 n) + 1 requests."""
    bad = data.draw(st.integers(1, count))
    requests, dropped = sends_to_isolate(count, {bad}, 400)
    assert dropped == [bad]
    delivered = [i for ids in requests if bad not in ids for i in ids]
    assert sorted(delivered) == [i for i in range(1, count + 1) if i != bad]
    assert len(requests) <= 2 * math.ceil(math.log2(count)) + 1
    assert requests.count([bad]) == 1


def test_413_drops_only_the_events_too_large_alone() -> None:
    """With two oversized events among eight, 413 halving drops those two and no other."""
    requests, dropped = sends_to_isolate(8, {3, 6}, 413)
    assert sorted(dropped) == [3, 6]
    assert requests[:3] == [[1, 2, 3, 4, 5, 6, 7, 8], [1, 2, 3, 4], [1, 2]]


# --- parse_retry_after ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        ("0", 0.0),
        ("  30  ", 30.0),
        ("1.5", 1.5),
        ("0.25", 0.25),
        ("-5", 0.0),
        ("-0.5", 0.0),
    ],
)
def test_parse_retry_after_seconds(value: str, seconds: float) -> None:
    """Delta-seconds are read as floats, without reading the clock; negatives mean no wait."""
    assert parse_retry_after(value, wall=no_wall) == seconds


def test_parse_retry_after_http_date_in_the_future() -> None:
    """An HTTP date ahead of now gives the seconds until it."""
    assert parse_retry_after("Thu, 26 Nov 2026 10:01:30 GMT", wall=wall) == 90.0


def test_parse_retry_after_http_date_with_offset() -> None:
    """An HTTP date with a numeric offset is converted before measuring."""
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:10 +0100", wall=wall) == 10.0


def test_parse_retry_after_http_date_in_the_past() -> None:
    """An HTTP date at or before now means no wait."""
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:00 GMT", wall=wall) == 0.0
    assert parse_retry_after(NOW_HTTP, wall=wall) == 0.0


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "   ",
        "soon",
        "10s",
        "Thu, 32 Nov 2026 10:00:00 GMT",
        "nan",
        "NaN",
        "inf",
        "-inf",
        "Infinity",
    ],
)
def test_parse_retry_after_unreadable_is_none(value: str | None) -> None:
    """Absent, garbage and non-finite values give None, not an exception."""
    assert parse_retry_after(value, wall=wall) is None
