"""The local capture server over real HTTP on 127.0.0.1: PostHog's answers, faults, waits, CLI."""

from __future__ import annotations

import functools
import gzip
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from sidecar_dev.capture import (
    CaptureServer,
    CaptureServerError,
    Delay,
    DropConnection,
    Hang,
    Normal,
    Outcome,
    ResetMidBody,
    Status,
    distinct_id_of,
    format_event_line,
)
from sidecar_dev.capture import http as capture_http

KEY = "phc_test_key"
REPO = Path(__file__).resolve().parents[2]


def make_event(i: int = 0, **fields: Any) -> dict[str, Any]:
    """A valid event, numbered so tests can tell them apart."""
    event: dict[str, Any] = {
        "event": "$pageview",
        "distinct_id": "user-1",
        "uuid": str(uuid.UUID(int=i + 1)),
        "timestamp": "2024-05-01T12:00:00.000Z",
        "properties": {"n": i},
    }
    event.update(fields)
    return event


def make_batch(*events: dict[str, Any], api_key: str | None = KEY) -> dict[str, Any]:
    """The sidecar's /batch/ document."""
    doc: dict[str, Any] = {"batch": list(events), "sent_at": "2024-05-01T12:00:01.000Z"}
    if api_key is not None:
        doc["api_key"] = api_key
    return doc


def gz(doc: Any) -> bytes:
    """Gzip a JSON document."""
    return gzip.compress(json.dumps(doc).encode("utf-8"))


@pytest.fixture
def server() -> Iterator[CaptureServer]:
    """A running fake with a small 4 KiB body cap, so 413s are cheap to provoke."""
    with CaptureServer(max_body_bytes=4096) as running:
        yield running


@pytest.fixture
def client(server: CaptureServer) -> Iterator[httpx.Client]:
    """An HTTP client aimed at the fake."""
    with httpx.Client(base_url=server.url, timeout=5.0) as http:
        yield http


# ---- accepted requests ----------------------------------------------------------------------


def test_plain_json_batch_is_accepted_and_recorded(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A plain JSON batch gets 200 {"status":1} and both the request and its events are kept."""
    events = [make_event(0), make_event(1)]
    response = client.post("/batch/", json=make_batch(*events))

    assert response.status_code == 200
    assert response.json() == {"status": 1}
    assert response.headers["content-type"] == "application/json"
    assert server.events == events
    [request] = server.requests
    assert request.path == "/batch/"
    assert request.status == 200
    assert request.outcome is Outcome.ANSWERED
    assert not request.was_gzip
    assert request.body_size == len(response.request.content)
    assert request.payload["api_key"] == KEY
    assert request.header("CONTENT-TYPE") == "application/json"


def test_gzip_announced_by_content_encoding_is_decoded(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A gzip body with Content-Encoding: gzip is decompressed and its events accepted."""
    body = gz(make_batch(make_event()))
    response = client.post("/batch/", content=body, headers={"Content-Encoding": "gzip"})

    assert response.status_code == 200
    [request] = server.requests
    assert request.was_gzip
    assert request.body_size == len(body)
    assert server.events == [make_event()]


def test_gzip_is_detected_by_magic_bytes_without_a_header(
    server: CaptureServer, client: httpx.Client
) -> None:
    """Like PostHog, a body starting 1f 8b 08 is gunzipped even with no encoding header."""
    response = client.post("/batch/", content=gz(make_batch(make_event())))

    assert response.status_code == 200
    assert server.requests[0].was_gzip
    assert server.events == [make_event()]


def test_compression_query_parameter_forces_gzip(
    server: CaptureServer, client: httpx.Client
) -> None:
    """?compression=gzip-js makes the body gzip: a non-gzip body is then 400 invalid GZIP."""
    response = client.post("/batch/?compression=gzip-js", content=b'{"not": "gzip"}')

    assert response.status_code == 400
    assert "invalid GZIP data" in response.text
    assert server.requests[0].was_gzip
    assert server.requests[0].query == "compression=gzip-js"


def test_posthog_js_array_takes_its_token_from_the_events(
    server: CaptureServer, client: httpx.Client
) -> None:
    """An array of events (posthog-js shape) is accepted when the events carry one token."""
    events = [make_event(0, token=KEY), make_event(1, properties={"token": KEY})]
    response = client.post("/batch/", json=events)

    assert response.status_code == 200
    assert server.events == events


def test_number_and_properties_distinct_ids_are_accepted(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A numeric distinct_id, or one only in properties, is valid as PostHog stringifies it."""
    numeric = make_event(0, distinct_id=42)
    nested = make_event(1, properties={"distinct_id": "from-props"})
    del nested["distinct_id"]
    response = client.post("/batch/", json=make_batch(numeric, nested))

    assert response.status_code == 200
    assert [distinct_id_of(e) for e in server.events] == ["42", "from-props"]


@pytest.mark.parametrize("path", ["/e/", "/i/v0/e/", "/capture/", "/batch"])
def test_single_event_routes_accept_one_event(
    server: CaptureServer, client: httpx.Client, path: str
) -> None:
    """PostHog's single-event routes take one event object carrying its own api_key."""
    event = make_event(api_key=KEY)
    response = client.post(path, json=event)

    assert response.status_code == 200
    assert server.events == [event]


def test_beacon_requests_get_204(server: CaptureServer, client: httpx.Client) -> None:
    """?beacon=1 is answered 204 with no body, as PostHog does for sendBeacon."""
    response = client.post("/batch/?beacon=1", json=make_batch(make_event()))

    assert response.status_code == 204
    assert response.content == b""
    assert len(server.events) == 1


# ---- refusals -------------------------------------------------------------------------------


def test_batch_without_api_key_is_400_like_posthog(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A /batch/ body with no api_key fails PostHog's batch shape and is a 400, not a 401."""
    response = client.post("/batch/", json=make_batch(make_event(), api_key=None))

    assert response.status_code == 400
    assert server.events == []
    assert server.requests[0].status == 400


@pytest.mark.parametrize("key", ["", "   ", "phx_personal_key", "k" * 65, "clé"])
def test_malformed_api_key_is_401(server: CaptureServer, client: httpx.Client, key: str) -> None:
    """An empty, personal, too long or non-ASCII api_key is refused with 401."""
    response = client.post("/batch/", json=make_batch(make_event(), api_key=key))

    assert response.status_code == 401
    assert response.text.startswith("API key is not valid")
    assert server.events == []


def test_single_event_without_token_is_401(server: CaptureServer, client: httpx.Client) -> None:
    """A single event with no token anywhere is 401 'event submitted without an api_key'."""
    response = client.post("/e/", json=make_event())

    assert response.status_code == 401
    assert response.text == "event submitted without an api_key"
    assert response.headers["content-type"].startswith("text/plain")


def test_array_with_two_tokens_is_401(server: CaptureServer, client: httpx.Client) -> None:
    """Events carrying different tokens in one request are refused with 401."""
    response = client.post("/batch/", json=[make_event(0, token="a"), make_event(1, token="b")])

    assert response.status_code == 401
    assert "inconsistent api_key" in response.text


def _without(key: str) -> dict[str, Any]:
    event = make_event(1)
    del event[key]
    return event


@pytest.mark.parametrize(
    ("bad_event", "message"),
    [
        (_without("event"), "failed to hydrate events"),
        (make_event(1, event=""), "empty event name"),
        (_without("distinct_id"), "without a distinct_id"),
        (make_event(1, distinct_id=None), "without a distinct_id"),
        (make_event(1, distinct_id=""), "without a distinct_id"),
        (make_event(1, uuid="not-a-uuid"), "failed to hydrate events"),
        (make_event(1, properties={"$cookieless_mode": "yes"}), "invalid cookieless mode"),
    ],
)
def test_one_invalid_event_fails_the_whole_batch_with_400(
    server: CaptureServer, client: httpx.Client, bad_event: dict[str, Any], message: str
) -> None:
    """One bad event makes PostHog refuse the request with 400, ingesting none of it."""
    response = client.post("/batch/", json=make_batch(make_event(0), bad_event))

    assert response.status_code == 400
    assert message in response.text
    assert server.events == []
    assert server.requests[0].error == response.text


@pytest.mark.parametrize(
    "body", [b"{not json", b"", b'{"api_key": "k", "batch": NaN}', b"\xff\xfe", b'"text"']
)
def test_malformed_bodies_are_400(server: CaptureServer, client: httpx.Client, body: bytes) -> None:
    """Bodies that are empty, not UTF-8 or not a capture document are refused with 400."""
    response = client.post("/batch/", content=body)

    assert response.status_code == 400
    assert server.events == []
    assert server.requests[0].status == 400


def test_empty_batch_is_400(server: CaptureServer, client: httpx.Client) -> None:
    """A batch with no events is 400 'request holds no event'."""
    response = client.post("/batch/", json=make_batch())

    assert response.status_code == 400
    assert response.text == "request holds no event"


def test_body_over_the_wire_cap_is_413_and_the_connection_survives(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A body over max_body_bytes is drained and answered 413; the next request still works."""
    too_big = make_batch(make_event(properties={"pad": "x" * 5000}))
    response = client.post("/batch/", json=too_big)

    assert response.status_code == 413
    assert "exceeds limit of 4096 bytes" in response.text
    assert server.requests[0].body_size > 4096
    assert client.post("/batch/", json=make_batch(make_event())).status_code == 200


def test_gzip_over_the_decompressed_budget_is_413(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A small gzip body that inflates past 5 x max_body_bytes is refused with 413."""
    body = gz(make_batch(make_event(properties={"pad": "a" * 30_000})))
    assert len(body) < 4096
    response = client.post("/batch/", content=body)

    assert response.status_code == 413
    assert "Decompressed payload would exceed 20480 bytes" in response.text


# ---- scripted answers -----------------------------------------------------------------------


def test_scripted_429_carries_retry_after_then_normal_handling_resumes(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A scripted Status sends its code and headers once; the next request is handled normally."""
    server.script(Status(429, headers={"Retry-After": "7"}))
    first = client.post("/batch/", json=make_batch(make_event(0)))
    second = client.post("/batch/", json=make_batch(make_event(1)))

    assert (first.status_code, first.headers["retry-after"], first.text) == (
        429,
        "7",
        "rate limited",
    )
    assert second.status_code == 200
    assert server.events == [make_event(1)]
    assert [r.status for r in server.requests] == [429, 200]
    assert server.requests[0].payload == make_batch(make_event(0))


def test_scripted_answers_are_used_in_order(server: CaptureServer, client: httpx.Client) -> None:
    """script() queues answers consumed one per capture request; ints are statuses."""
    server.script(503, Status(500, body="boom"), Normal())
    assert server.script_remaining == 3

    answers = [client.post("/batch/", json=make_batch(make_event(i))) for i in range(4)]

    assert [(r.status_code, r.text) for r in answers] == [
        (503, "transient error, please retry"),
        (500, "boom"),
        (200, '{"status":1}'),
        (200, '{"status":1}'),
    ]
    assert server.script_remaining == 0
    assert server.events == [make_event(2), make_event(3)]


def test_scripted_2xx_records_events_without_validating_them(
    server: CaptureServer, client: httpx.Client
) -> None:
    """Events answered by a scripted 2xx count as delivered even if PostHog would refuse them."""
    server.script(Status(200))
    unvalidated = make_event(distinct_id=None)
    response = client.post("/batch/", content=gz(make_batch(unvalidated, api_key="")))

    assert response.json() == {"status": 1}
    assert server.events == [unvalidated]


def test_set_default_answers_every_request_until_cleared(
    server: CaptureServer, client: httpx.Client
) -> None:
    """set_default() is the persistent answer once the script is empty; None restores normal."""
    server.set_default(Status(503, headers={"Retry-After": "1"}))
    statuses = [client.post("/batch/", json=make_batch(make_event())).status_code for _ in range(3)]
    server.set_default(None)
    statuses.append(client.post("/batch/", json=make_batch(make_event())).status_code)

    assert statuses == [503, 503, 503, 200]
    assert len(server.requests) == 4
    assert len(server.events) == 1


def test_delay_then_normal_handling(server: CaptureServer, client: httpx.Client) -> None:
    """Delay holds the answer for its seconds, then the request is handled normally."""
    server.script(Delay(0.3))
    started = time.monotonic()
    response = client.post("/batch/", json=make_batch(make_event()))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.25  # a little slack for coarse timers (Windows ticks at ~15 ms)
    assert len(server.events) == 1


def test_delay_past_the_client_timeout_still_ingests(
    server: CaptureServer, client: httpx.Client
) -> None:
    """A client that times out may still have delivered: the server ingests after its delay."""
    server.script(Delay(0.5))
    with pytest.raises(httpx.ReadTimeout):
        client.post("/batch/", json=make_batch(make_event()), timeout=0.1)

    assert server.wait_for_events(1) == [make_event()]


def test_delay_can_precede_a_scripted_status(server: CaptureServer, client: httpx.Client) -> None:
    """Delay(then=...) delays a scripted answer instead of normal handling."""
    server.script(Delay(0.05, then=Status(502)))
    assert client.post("/batch/", json=make_batch(make_event())).status_code == 502


def test_drop_connection_closes_without_an_answer(
    server: CaptureServer, client: httpx.Client
) -> None:
    """DropConnection reads the request and closes the connection without answering."""
    server.script(DropConnection())
    with pytest.raises(httpx.RemoteProtocolError):
        client.post("/batch/", json=make_batch(make_event()))

    [request] = server.requests
    assert (request.status, request.outcome) == (None, Outcome.DROPPED)
    assert request.payload == make_batch(make_event())
    assert server.events == []


def test_hang_never_answers_and_close_ends_it_promptly() -> None:
    """Hang keeps the request unanswered (client times out) until the server stops, promptly."""
    server = CaptureServer().start()
    try:
        server.script(Hang())
        with httpx.Client(base_url=server.url) as client, pytest.raises(httpx.ReadTimeout):
            client.post("/batch/", json=make_batch(make_event()), timeout=0.2)
        [request] = server.wait_for_requests(1)
        assert request.outcome is Outcome.HUNG
    finally:
        started = time.monotonic()
        server.close()
    assert time.monotonic() - started < 2.0
    assert server.events == []


def test_reset_mid_body_resets_the_connection() -> None:
    """ResetMidBody reads part of the body and resets the TCP connection."""
    big = CaptureServer(max_body_bytes=1024 * 1024).start()
    try:
        big.script(ResetMidBody(after_bytes=1000))
        body = json.dumps(make_batch(make_event(properties={"pad": "x" * 500_000}))).encode()
        with httpx.Client(base_url=big.url, timeout=5.0) as client:
            with pytest.raises(httpx.TransportError) as caught:
                client.post("/batch/", content=body)
            assert not isinstance(caught.value, httpx.TimeoutException)
            [request] = big.requests
            assert (request.outcome, request.body_size, request.status) == (
                Outcome.RESET,
                1000,
                None,
            )
            # The fault was one connection's: the server still answers the next request.
            assert client.post("/batch/", json=make_batch(make_event())).status_code == 200
    finally:
        big.close()


def test_non_capture_paths_are_not_scripted(server: CaptureServer, client: httpx.Client) -> None:
    """Status and unknown paths answer normally and leave the script for capture requests."""
    server.script(503)
    assert client.get("/").text == "capture"
    assert client.post("/nope/", json={}).status_code == 404
    assert client.options("/batch/").json() == {"status": 1}
    assert server.script_remaining == 1
    assert [r.status for r in server.requests] == [200, 404, 200]


# ---- HTTP framing ---------------------------------------------------------------------------


def raw_exchange(server: CaptureServer, request: bytes) -> bytes:
    """Send raw request bytes on a fresh connection and read until the server closes it."""
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    return received


def test_a_chunked_body_is_read_and_accepted(server: CaptureServer, client: httpx.Client) -> None:
    """A body sent with Transfer-Encoding: chunked is reassembled and handled like any other."""
    body = gz(make_batch(make_event(0), make_event(1)))
    response = client.post("/batch/", content=iter([body[:10], body[10:]]))

    assert response.status_code == 200
    assert server.requests[0].header("transfer-encoding") == "chunked"
    assert server.requests[0].body_size == len(body)
    assert server.events == [make_event(0), make_event(1)]


def test_keep_alive_serves_requests_one_after_another_on_one_connection(
    server: CaptureServer,
) -> None:
    """Two pipelined requests on one connection get two answers, in order, then the close."""
    body = json.dumps(make_batch(make_event())).encode()
    head = f"POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n"
    request = head.encode() + b"\r\n" + body
    last = head.encode() + b"Connection: close\r\n\r\n" + body

    answer = raw_exchange(server, request + last)

    assert answer.count(b"HTTP/1.1 200 OK") == 2
    assert answer.endswith(b'{"status":1}')
    assert len(server.events) == 2


def test_expect_100_continue_is_honoured(server: CaptureServer) -> None:
    """A client that waits for 100 Continue gets it before sending its body, then the answer."""
    body = json.dumps(make_batch(make_event())).encode()
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(
            b"POST /batch/ HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\n"
            + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        )
        interim = sock.recv(65536)
        sock.sendall(body)
        final = b""
        while chunk := sock.recv(65536):
            final += chunk

    assert interim.startswith(b"HTTP/1.1 100 ")
    assert final.startswith(b"HTTP/1.1 200 ")
    assert server.events == [make_event()]


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n",
        b"POST /batch/ HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        b"NOT HTTP AT ALL\r\n\r\n",
    ],
)
def test_broken_framing_is_answered_400_and_closed(
    server: CaptureServer, request_bytes: bytes
) -> None:
    """A malformed head, Content-Length or chunk gets 400 and the connection closes."""
    answer = raw_exchange(server, request_bytes)

    assert answer.startswith(b"HTTP/1.1 400 ")
    assert b"invalid request framing" in answer
    assert server.events == []


def test_a_body_past_twice_the_cap_is_refused_without_being_read() -> None:
    """Past twice max_body_bytes the 413 goes out at once and the connection is closed."""
    with CaptureServer(max_body_bytes=1000) as server:
        head = b"POST /batch/ HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
        answer = raw_exchange(server, head)
        [request] = server.requests

    assert answer.startswith(b"HTTP/1.1 413 ")
    assert b"connection: close" in answer.lower()
    assert (request.status, request.body_size) == (413, 5000)


def test_a_scripted_content_length_longer_than_the_body_never_completes(
    server: CaptureServer, client: httpx.Client
) -> None:
    """Status with a Content-Length past its body sends the short body, so the read times out."""
    server.script(Status(200, body=b'{"status":1}', headers={"Content-Length": "4096"}))
    with pytest.raises(httpx.ReadTimeout):
        client.post("/batch/", json=make_batch(make_event()), timeout=0.3)

    assert server.events == [make_event()]
    assert client.post("/batch/", json=make_batch(make_event(1))).status_code == 200


# ---- waiting and failure --------------------------------------------------------------------


def test_wait_for_events_wakes_when_another_thread_delivers(server: CaptureServer) -> None:
    """wait_for_events blocks on a condition until the events arrive, then returns them all."""

    def deliver() -> None:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            for i in range(3):
                client.post("/batch/", json=make_batch(make_event(i)))

    sender = threading.Thread(target=deliver)
    sender.start()
    try:
        events = server.wait_for_events(3, timeout=5.0)
    finally:
        sender.join()

    assert events == [make_event(0), make_event(1), make_event(2)]


def test_wait_for_events_times_out_saying_what_arrived(
    server: CaptureServer, client: httpx.Client
) -> None:
    """When too few events come, wait_for_events raises TimeoutError listing the answers."""
    server.script(503)
    client.post("/batch/", json=make_batch(make_event()))

    with pytest.raises(TimeoutError, match=r"got 0 events from 1 requests \[503\]"):
        server.wait_for_events(1, timeout=0.05)


def test_a_bug_in_the_fake_is_answered_500_and_raised_at_close(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An exception inside the handler answers 500 and makes close() raise, never hiding it."""

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("fake bug")

    monkeypatch.setattr(capture_http, "answer_request", broken)
    server = CaptureServer().start()
    try:
        with httpx.Client(base_url=server.url, timeout=5.0) as client:
            assert client.post("/batch/", json=make_batch(make_event())).status_code == 500
    finally:
        with pytest.raises(CaptureServerError) as caught:
            server.close()
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


async def test_trio_code_can_drive_the_server() -> None:
    """From trio: an async client posts while the blocking wait runs in a worker thread."""
    with CaptureServer() as server:
        async with (
            httpx.AsyncClient(base_url=server.url, timeout=5.0) as client,
            trio.open_nursery() as nursery,
        ):
            for i in range(2):
                body = gz(make_batch(make_event(i)))
                nursery.start_soon(functools.partial(client.post, "/batch/", content=body))
            events = await trio.to_thread.run_sync(server.wait_for_events, 2)

    assert sorted(e["uuid"] for e in events) == [make_event(0)["uuid"], make_event(1)["uuid"]]


# ---- the command line --------------------------------------------------------------------


def test_format_event_line_is_one_compact_line() -> None:
    """The CLI's event line shows name, distinct_id, uuid and timestamp, quoting odd values."""
    line = format_event_line(make_event(0, event="signed up", distinct_id=7))

    assert line == (
        'event="signed up" distinct_id=7 uuid=00000000-0000-0000-0000-000000000001 '
        "timestamp=2024-05-01T12:00:00.000Z"
    )


@pytest.mark.skipif(sys.platform == "win32", reason="SIGTERM is TerminateProcess on Windows")
def test_cli_prints_one_line_per_event_and_exits_0_on_sigterm() -> None:
    """`python -m sidecar_dev.capture` shows its URL, prints each event, and exits 0."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "sidecar_dev.capture", "--port", "0", "--quiet"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    guard = threading.Timer(20.0, proc.kill)  # never let a broken CLI hang the suite
    guard.start()
    try:
        assert proc.stderr is not None
        assert proc.stdout is not None
        banner = proc.stderr.readline()
        url = banner.split("listening on ")[1].split()[0]
        events = [make_event(0), make_event(1, distinct_id="user 2")]
        response = httpx.post(url + "/batch/", content=gz(make_batch(*events)), timeout=5.0)
        assert response.status_code == 200
        lines = [proc.stdout.readline().rstrip("\n") for _ in events]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        guard.cancel()
        proc.kill()
        proc.wait()
    assert lines == [format_event_line(e) for e in events]
    assert 'distinct_id="user 2"' in lines[1]


def test_wait_for_arrivals_returns_while_the_request_is_still_delayed() -> None:
    """An arrival is counted when the head is read, before a Delay lets the answer go."""
    with CaptureServer() as server:
        server.script(Delay(30))
        outcome: list[BaseException] = []

        def post() -> None:
            try:
                httpx.post(server.batch_url, content=b"{}", timeout=60)
            except httpx.HTTPError as exc:
                outcome.append(exc)

        client = threading.Thread(target=post)
        client.start()
        server.wait_for_arrivals(1, timeout=10)
        assert server.requests == []  # not answered yet: the Delay is still running
    client.join(10)
