"""The local capture server without a socket: PostHog's rules, scripted answers, the recorder."""

from __future__ import annotations

import gzip
import json
import threading
from typing import Any

import pytest

from sidecar_dev.capture import (
    CaptureServer,
    Delay,
    Normal,
    Outcome,
    ReceivedRequest,
    Status,
    answer_request,
    distinct_id_of,
    process_capture,
)
from sidecar_dev.capture.faults import Script
from sidecar_dev.capture.recorder import Recorder
from sidecar_dev.capture.rules import error_text, peek_payload
from sidecar_dev.harness import event

KEY = "phc_test_key"


def batch(*events: dict[str, Any], api_key: str = KEY) -> bytes:
    """A gzip /batch/ body as the sidecar sends it."""
    document = {"api_key": api_key, "batch": list(events)}
    return gzip.compress(json.dumps(document).encode("utf-8"))


def received(*events: dict[str, Any], status: int | None = 200) -> ReceivedRequest:
    """A recorded request that delivered `events`."""
    return ReceivedRequest(
        method="POST",
        path="/batch/",
        query="",
        headers=(("Content-Encoding", "gzip"),),
        body_size=10,
        was_gzip=True,
        payload=None,
        status=status,
        outcome=Outcome.ANSWERED if status is not None else Outcome.DROPPED,
        error=None,
        events=events,
        received_at=0.0,
    )


# ---- PostHog's rules ------------------------------------------------------------------------


def test_distinct_id_follows_posthog_rules() -> None:
    """distinct_id_of stringifies non-strings, falls back to properties and truncates to 200."""
    assert distinct_id_of({"distinct_id": 23.5}) == "23.5"
    assert distinct_id_of({"$distinct_id": "a"}) == "a"
    assert distinct_id_of({"distinct_id": {"b": 1, "a": [2]}}) == '{"a":[2],"b":1}'
    assert distinct_id_of({"distinct_id": None, "properties": {"distinct_id": "p"}}) == "p"
    assert distinct_id_of({"distinct_id": "x" * 300}) == "x" * 200
    assert distinct_id_of({"distinct_id": "\0"}) == "\ufffd"
    assert distinct_id_of({"distinct_id": ""}) is None


def test_process_capture_answers_without_a_server() -> None:
    """The PostHog logic is a pure function: bytes in, status, body and events out."""
    ok = process_capture(batch(event()), path="/batch/")
    refused = process_capture(b"[]", path="/batch/")

    assert (ok.status, ok.body, ok.was_gzip, ok.events) == (
        200,
        b'{"status":1}',
        True,
        (event(),),
    )
    assert (refused.status, refused.error) == (400, "request holds no event")


def test_answer_request_applies_the_wire_cap_before_anything_else() -> None:
    """A body drained past max_body_bytes is 413 on every route, whatever bytes were kept."""
    result = answer_request("POST", "/batch/", b"", body_size=101, max_body_bytes=100)
    unknown = answer_request("POST", "/nope", b"", body_size=101, max_body_bytes=100)

    assert (result.status, result.error) == (
        413,
        "maximum event size exceeded: Request body exceeds limit of 100 bytes",
    )
    assert unknown.status == 413
    assert answer_request("POST", "/batch/", batch(event()), max_body_bytes=10_000).status == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "body"),
    [
        ("OPTIONS", "/batch/", 200, b'{"status":1}'),
        ("PUT", "/batch/", 405, b""),
        ("GET", "/", 200, b"capture"),
        ("GET", "/_readiness", 200, b"capture"),
        ("POST", "/", 404, b""),
        ("GET", "/nope", 404, b""),
        ("GET", "/batch/", 400, b"request missing data payload"),
    ],
)
def test_answer_request_routes_like_posthogs_router(
    method: str, path: str, status: int, body: bytes
) -> None:
    """Capture routes take GET, POST and OPTIONS; health routes answer `capture`; else 404."""
    result = answer_request(method, path, b"")

    assert (result.status, result.body, result.events) == (status, body, ())


def test_answer_request_uses_five_times_the_wire_cap_as_the_decompressed_budget() -> None:
    """With no explicit budget, a gzip body may inflate to 5 x max_body_bytes and no further."""
    body = batch(event(properties={"pad": "a" * 6_000}))
    assert len(body) < 1_000

    assert answer_request("POST", "/batch/", body, max_body_bytes=1_000).status == 413
    assert answer_request("POST", "/batch/", body, max_body_bytes=4_000).status == 200


def test_peek_payload_reads_without_validating() -> None:
    """peek_payload decodes what PostHog would refuse, and gives None for what it cannot read."""
    refused = gzip.compress(b'{"batch": [], "api_key": ""}')

    assert peek_payload(refused, limit=1_000) == (True, {"batch": [], "api_key": ""})
    assert peek_payload(b"{not json", limit=1_000) == (False, None)
    assert peek_payload(b"", content_encoding="gzip", limit=1_000) == (True, None)


def test_error_text_is_posthogs_for_known_statuses_and_the_phrase_otherwise() -> None:
    """Known capture errors carry PostHog's text; others their reason phrase or `error`."""
    assert error_text(401) == "event submitted without an api_key"
    assert error_text(503) == "transient error, please retry"
    assert error_text(418) == "I'm a Teapot"
    assert error_text(599) == "error"


# ---- scripted answers -----------------------------------------------------------------------


def test_status_content_defaults_to_success_or_posthogs_error_text() -> None:
    """A scripted Status sends {"status":1} for 2xx, PostHog's text for errors, or its own body."""
    assert Status(200).content() == (b'{"status":1}', "application/json")
    assert Status(429).content() == (b"rate limited", "text/plain; charset=utf-8")
    assert Status(500, body="boom").content() == (b"boom", "text/plain; charset=utf-8")
    assert Status(200, body=b"").content() == (b"", "text/plain; charset=utf-8")


def test_status_reports_a_declared_content_length_in_any_case() -> None:
    """declared_length reads a scripted Content-Length whatever its case, None without one."""
    assert Status(200, headers={"content-LENGTH": "4096"}).declared_length() == 4096
    assert Status(200, headers={"Retry-After": "1"}).declared_length() is None


@pytest.mark.parametrize("make", [lambda: Status(199), lambda: Status(600), lambda: Delay(-1)])
def test_impossible_answers_are_refused_when_made(make: Any) -> None:
    """A status outside 200..599 or a negative delay is a ValueError at construction."""
    with pytest.raises(ValueError):
        make()


def test_script_hands_out_answers_in_order_then_the_default() -> None:
    """Script.take gives queued answers first (ints as Status), then the default, then Normal."""
    script = Script()
    script.extend(503, Delay(0.1))
    script.set_default(Status(429))

    assert script.remaining == 2
    assert [script.take() for _ in range(3)] == [Status(503), Delay(0.1), Status(429)]
    script.set_default(None)
    assert script.take() == Normal()
    assert script.remaining == 0


# ---- the recorder ---------------------------------------------------------------------------


def test_recorder_keeps_requests_and_their_events_until_cleared() -> None:
    """Recorded events are every request's events in order; clear() forgets both lists."""
    recorder = Recorder()
    recorder.record(received(event("a"), event("b")))
    recorder.record(received(status=None))
    recorder.record(received(event("c")))

    assert [e["event"] for e in recorder.events] == ["a", "b", "c"]
    assert [r.status for r in recorder.requests] == [200, None, 200]
    recorder.clear()
    assert (recorder.events, recorder.requests) == ([], [])


def test_recorder_wait_wakes_when_another_thread_records() -> None:
    """wait_for_requests blocks until a recording from another thread makes the count."""
    recorder = Recorder()
    writer = threading.Thread(target=lambda: [recorder.record(received()) for _ in range(3)])
    writer.start()
    try:
        assert len(recorder.wait_for_requests(3, timeout=10)) == 3
    finally:
        writer.join()


def test_recorder_wait_for_arrivals_times_out_saying_what_arrived() -> None:
    """A wait that is not met raises TimeoutError naming the answers so far."""
    recorder = Recorder()
    recorder.note_arrival()
    recorder.record(received(status=None))

    recorder.wait_for_arrivals(1, timeout=0)
    with pytest.raises(TimeoutError, match=r"got 0 events from 1 requests \[dropped\]"):
        recorder.wait_for_arrivals(2, timeout=0.01)


def test_a_failing_on_request_callback_is_kept_as_an_error() -> None:
    """An exception in on_request does not lose the recording; it is kept for close to raise."""

    def broken(request: ReceivedRequest) -> None:
        raise KeyError("callback bug")

    recorder = Recorder(broken)
    recorder.record(received(event()))

    assert len(recorder.events) == 1
    assert [type(e) for e in recorder.errors] == [KeyError]


def test_a_server_that_is_not_started_has_no_address() -> None:
    """The address properties raise until start(), and start() twice is refused."""
    server = CaptureServer()
    with pytest.raises(RuntimeError, match="not started"):
        _ = server.url
    with CaptureServer() as running, pytest.raises(RuntimeError, match="already started"):
        running.start()
