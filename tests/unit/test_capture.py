"""Unit tests for sidecar.delivery.capture: the /batch/ request body (the rules about capture's
answers are tested in test_policy.py)."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta, timezone

from sidecar.delivery.capture import BodyDraft

NOW = datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC)

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


def test_a_draft_finishes_into_a_whole_gzip_member_at_each_time() -> None:
    """A draft compressed before the attempt's time is known finishes into one whole gzip
    member (nothing after its trailer, whose CRC-32 and length zlib checks) holding the events
    and that time; finished again it gives a whole member with the new time, and two drafts of
    the same events give the same bytes."""
    first = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    second = datetime(2027, 6, 7, 8, 9, 10, tzinfo=UTC)
    draft = BodyDraft("phc_key", BODIES)
    times = ((first, "2026-01-02T03:04:05.000Z"), (second, "2027-06-07T08:09:10.000Z"))
    for sent_at, stamp in times:
        body = draft.finish(sent_at)
        member = zlib.decompressobj(16 + zlib.MAX_WBITS)
        document = json.loads(member.decompress(body))
        assert member.eof and member.unused_data == b""
        assert document == {"api_key": "phc_key", "batch": [json.loads(b) for b in BODIES],
                            "sent_at": stamp}
    assert BodyDraft("phc_key", BODIES).finish(first) == draft.finish(first)  # no mtime


def test_a_large_draft_is_compressed_and_finishes_whole() -> None:
    """Half a megabyte of varied events (deflated across many blocks) still finishes into one
    gzip member that the standard library reads back exactly, smaller than its text."""
    bodies = [json.dumps({"event": f"e{i}", "distinct_id": f"u{i * 7919 % 10007}",
                          "properties": {"n": i, "s": "é" * (i % 13)}}) for i in range(8000)]
    body = BodyDraft("k", bodies).finish(NOW)
    text = gzip.decompress(body)
    assert json.loads(text)["batch"] == [json.loads(b) for b in bodies]
    assert len(text) > 500_000
    assert len(body) < len(text) / 4


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
