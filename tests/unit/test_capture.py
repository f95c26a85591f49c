"""Unit tests for sidecar.delivery.capture: /batch/ body, status classes, Retry-After, backoff."""

from __future__ import annotations

import gzip
import json
import random
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.delivery.capture import (
    Backoff,
    BodyDraft,
    Outcome,
    Verdict,
    classify_status,
    parse_retry_after,
)

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)
NOW_HTTP = "Thu, 26 Nov 2026 10:00:00 GMT"

# --- request bodies ---------------------------------------------------------------------------

def body_of(api_key: str, bodies: list[str], sent_at: datetime) -> bytes:
    """The request body the sender sends for these stored events at `sent_at`."""
    return BodyDraft(api_key, bodies).finish(sent_at)


BODIES = [
    '{"event":"a","distinct_id":"u1","properties":{"x":1.50}}',
    '{"event":"é ☃","distinct_id":"u2" , "properties":{}}',
    '{"event":"c","distinct_id":"u3","n":1e3}',
]


def test_batch_body_gunzips_to_the_document() -> None:
    """The body is gzip of {"api_key","sent_at","batch"} with the events in order."""
    sent_at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    document = json.loads(gzip.decompress(body_of("phc_key", BODIES, sent_at)))
    assert set(document) == {"api_key", "sent_at", "batch"}
    assert document["api_key"] == "phc_key"
    assert document["sent_at"] == "2026-01-02T03:04:05.678Z"
    assert document["batch"] == [json.loads(body) for body in BODIES]


def test_batch_body_splices_stored_bodies_byte_for_byte() -> None:
    """The stored JSON texts appear unchanged (spacing, number spelling, UTF-8) in the body."""
    text = gzip.decompress(body_of("k", BODIES, NOW))
    assert b'"batch":[' + ",".join(BODIES).encode("utf-8") + b"]," in text
    assert text.endswith(b'"}')


def test_a_draft_finishes_once_into_a_whole_gzip_member() -> None:
    """A draft compressed before the attempt's time is known finishes into one whole gzip
    member (nothing after its trailer) holding the events and that time; it cannot be
    finished twice, and two drafts of the same events give the same bytes."""
    sent_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    draft = BodyDraft("phc_key", BODIES)
    body = draft.finish(sent_at)
    member = zlib.decompressobj(16 + zlib.MAX_WBITS)
    document = json.loads(member.decompress(body))
    assert member.eof and member.unused_data == b""
    assert document == {"api_key": "phc_key", "batch": [json.loads(b) for b in BODIES],
                        "sent_at": "2026-01-02T03:04:05.000Z"}
    with pytest.raises(RuntimeError):
        draft.finish(sent_at)
    assert BodyDraft("phc_key", BODIES).finish(sent_at) == body  # no mtime, no hidden state


def test_batch_body_converts_sent_at_to_utc() -> None:
    """A sent_at with an offset is written in UTC with milliseconds and a Z."""
    sent_at = datetime(2026, 1, 2, 3, 4, 5, 999999, tzinfo=timezone(timedelta(hours=2)))
    document = json.loads(gzip.decompress(body_of("k", [], sent_at)))
    assert document["sent_at"] == "2026-01-02T01:04:05.999Z"
    assert document["batch"] == []


def test_batch_body_escapes_the_api_key() -> None:
    """A key with quotes or backslashes cannot break the document."""
    key = 'phc_"}\\,"batch":[]'
    document = json.loads(gzip.decompress(body_of(key, BODIES[:1], NOW)))
    assert document["api_key"] == key
    assert len(document["batch"]) == 1


def test_batch_body_is_deterministic() -> None:
    """The same input gives the same bytes (no gzip timestamp)."""
    assert body_of("k", BODIES, NOW) == body_of("k", BODIES, NOW)


# --- classify_status ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.DELIVERED),
        (201, Outcome.DELIVERED),
        (204, Outcome.DELIVERED),
        (400, Outcome.SPLIT_BAD_REQUEST),
        (401, Outcome.HOLD),
        (403, Outcome.HOLD),
        (408, Outcome.RETRY),
        (413, Outcome.SPLIT_TOO_LARGE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (502, Outcome.RETRY),
        (503, Outcome.RETRY),
        (504, Outcome.RETRY),
        (404, Outcome.RETRY),
        (302, Outcome.RETRY),
    ],
)
def test_classify_status(status: int, outcome: Outcome) -> None:
    """Each status maps to the outcome the delivery rules give it."""
    verdict = classify_status(status)
    assert verdict.outcome is outcome
    assert verdict.retry_after_s is None
    if outcome is not Outcome.DELIVERED:
        assert str(status) in verdict.reason


@pytest.mark.parametrize("status", [429, 503])
def test_classify_status_carries_retry_after(status: int) -> None:
    """A retryable status keeps its Retry-After, in seconds."""
    assert classify_status(status, "7") == Verdict(
        Outcome.RETRY, f"HTTP {status} from capture", 7.0
    )


def test_classify_status_reads_retry_after_dates_against_now() -> None:
    """A Retry-After date is measured from the given `now`."""
    verdict = classify_status(429, "Thu, 26 Nov 2026 10:02:00 GMT", now=NOW)
    assert verdict.retry_after_s == 120.0


# --- parse_retry_after --------------------------------------------------------------------


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
    """Delta-seconds are read as floats; negatives mean no wait."""
    assert parse_retry_after(value, now=NOW) == seconds


def test_parse_retry_after_http_date_in_the_future() -> None:
    """An HTTP date ahead of now gives the seconds until it."""
    assert parse_retry_after("Thu, 26 Nov 2026 10:01:30 GMT", now=NOW) == 90.0


def test_parse_retry_after_http_date_with_offset() -> None:
    """An HTTP date with a numeric offset is converted before measuring."""
    assert parse_retry_after("Thu, 26 Nov 2026 11:00:10 +0100", now=NOW) == 10.0


def test_parse_retry_after_http_date_in_the_past() -> None:
    """An HTTP date at or before now means no wait."""
    assert parse_retry_after("Wed, 25 Nov 2026 10:00:00 GMT", now=NOW) == 0.0
    assert parse_retry_after(NOW_HTTP, now=NOW) == 0.0


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
    assert parse_retry_after(value, now=NOW) is None


# --- Backoff ------------------------------------------------------------------------------


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
        delays = [backoff.delay(failures, rng=rng) for _ in range(200)]
        assert all(nominal / 2 <= d <= nominal for d in delays)
        assert max(delays) - min(delays) > nominal / 4


def test_first_retry_comes_after_half_to_one_second() -> None:
    """The first retry waits between 0.5 and 1 s, as the contract says."""
    rng = random.Random(7)
    delays = [Backoff().delay(1, rng=rng) for _ in range(500)]
    assert min(delays) >= 0.5
    assert max(delays) <= 1.0


def test_delay_is_reproducible_with_the_same_seed() -> None:
    """The same seed gives the same delays."""
    first = [Backoff().delay(n, rng=random.Random(99)) for n in range(1, 8)]
    second = [Backoff().delay(n, rng=random.Random(99)) for n in range(1, 8)]
    assert first == second


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
    delay = backoff.delay(failures, rng=random.Random(seed))
    assert nominal / 2 <= delay <= nominal


def test_retry_after_raises_the_delay() -> None:
    """A Retry-After above the jittered delay becomes the delay."""
    assert Backoff().delay(1, retry_after_s=42.0, rng=random.Random(0)) == 42.0


def test_small_retry_after_does_not_lower_the_delay() -> None:
    """A Retry-After below the jittered delay leaves the jittered delay as is."""
    jittered = Backoff().delay(5, rng=random.Random(3))
    assert Backoff().delay(5, retry_after_s=0.0, rng=random.Random(3)) == jittered
    assert jittered >= 8.0


def test_retry_after_is_capped() -> None:
    """A huge Retry-After is cut to retry_after_max_s."""
    backoff = Backoff(retry_after_max_s=60.0)
    assert backoff.delay(1, retry_after_s=86_400.0, rng=random.Random(0)) == 60.0
    assert Backoff().delay(1, retry_after_s=1e9, rng=random.Random(0)) == 3600.0


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
    jittered = backoff.delay(failures, rng=random.Random(seed))
    delay = backoff.delay(failures, retry_after_s=retry_after, rng=random.Random(seed))
    assert delay == max(jittered, min(retry_after, cap))
    assert delay <= max(backoff.nominal(failures), cap)
