"""Unit tests for sidecar.delivery.capture: the /batch/ request body (the rules about capture's
answers are tested in test_policy.py)."""

from __future__ import annotations

import gzip
import json
import zlib
from datetime import UTC, datetime, timedelta, timezone

import pytest

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
