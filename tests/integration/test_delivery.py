"""Delivery rules, end to end: the real sidecar process against the fake capture server over HTTP.

Timeouts here are hang guards, never timing assertions. Where a delay must be honoured, the test
compares the server's arrival times, which bound the sidecar's wait from below and so cannot
flake on a slow machine.
"""

from __future__ import annotations

import base64
import email.utils
import gzip
import json
import math
import os
import queue
import socket
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import psutil
import pytest

from sidecar import __version__
from sidecar_dev.capture import (
    CaptureServer,
    DropConnection,
    Hang,
    Outcome,
    ReceivedRequest,
    ResetMidBody,
    Status,
)
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import (
    FAST_RETRIES,
    TEST_KEY,
    event,
    n_values,
    numbered,
    wait_until,
)

OTHER_KEY = "phc_test_key_2"
# Backoff so long that only `ph_flush` (which cuts an offline wait short) can make the sidecar
# try again within a test: what a flush reports is then the flush's own doing.
SLOW_RETRIES = ("--backoff-base", "30", "--backoff-max", "30")
GUARD_S = 20.0  # hang guard for waits on the server


def uuids(events: list[dict[str, Any]]) -> list[str]:
    """The `uuid` of each event."""
    return [e["uuid"] for e in events]


def batch_of(request: ReceivedRequest) -> list[dict[str, Any]]:
    """The events a `/batch/` request carried, whatever the answer was."""
    payload = request.payload
    assert isinstance(payload, dict), request
    batch: list[dict[str, Any]] = payload["batch"]
    return batch


def settle(sidecar: SidecarProcess) -> dict[str, Any]:
    """Flush until the queue is empty (or nothing more can go), then return `ph_status`."""
    sidecar.result("ph_flush", {"timeout": GUARD_S})
    return sidecar.result("ph_status")


def finish(sidecar: SidecarProcess) -> None:
    """Close stdin and check the clean exit."""
    assert sidecar.stop() == 0, sidecar.stderr


def send(sidecar: SidecarProcess, batch: list[dict[str, Any]], **params: Any) -> dict[str, Any]:
    """`ph_send_batch`, checking that every event was accepted."""
    result = sidecar.result("ph_send_batch", {"batch": batch, **params})
    assert result["accepted"] == len(batch), result
    assert result["rejected"] == []
    return result


# ---- wire format --------------------------------------------------------------------------------


class _RawRecorder(BaseHTTPRequestHandler):
    """Answers every POST like PostHog's success and keeps the raw request, bytes as sent."""

    protocol_version = "HTTP/1.1"
    received: queue.Queue[tuple[dict[str, str], bytes]]

    def do_POST(self) -> None:
        """Record the headers and the undecoded body, then answer 200."""
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.put((dict(self.headers.items()), body))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", "12")
        self.end_headers()
        self.wfile.write(b'{"status":1}')

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


@pytest.fixture
def raw_recorder() -> Iterator[tuple[str, queue.Queue[tuple[dict[str, str], bytes]]]]:
    """A bare HTTP server recording raw bodies: (base URL, queue of (headers, body))."""
    received: queue.Queue[tuple[dict[str, str], bytes]] = queue.Queue()
    handler = type("Recorder", (_RawRecorder,), {"received": received})
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", received
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


def test_body_is_gzip_with_header_and_magic_bytes(raw_recorder, spawn_sidecar) -> None:
    """The body is gzip (magic bytes and Content-Encoding) holding api_key, batch and sent_at."""
    url, received = raw_recorder
    sidecar = spawn_sidecar(url, api_key=TEST_KEY)
    send(sidecar, [event("opened")])
    headers, body = received.get(timeout=GUARD_S)
    finish(sidecar)

    lower = {k.lower(): v for k, v in headers.items()}
    assert lower["content-encoding"] == "gzip"
    assert lower["content-type"] == "application/json"
    assert body[:3] == b"\x1f\x8b\x08"
    document = json.loads(gzip.decompress(body))
    assert set(document) == {"api_key", "batch", "sent_at"}
    assert document["api_key"] == TEST_KEY
    assert [e["event"] for e in document["batch"]] == ["opened"]
    assert document["sent_at"].endswith("Z")


def test_events_are_normalised_on_the_wire(capture, spawn_sidecar) -> None:
    """Events arrive with a UUIDv7, a UTC timestamp, $lib/$lib_version and a string distinct_id."""
    given_uuid = "0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b"
    sidecar = spawn_sidecar(capture.url, api_key=TEST_KEY)
    before = datetime.now(UTC)
    send(sidecar, [
        {"event": "numeric id", "distinct_id": 42},
        {
            "event": "given fields",
            "distinct_id": "u-7",
            "uuid": given_uuid.upper(),
            "timestamp": "2024-05-01T12:00:00+02:00",
            "properties": {"$lib": "my-app", "plan": "pro"},
            "$set": {"email": "a@example.com"},
        },
    ])
    after = datetime.now(UTC)
    first, second = capture.wait_for_events(2, timeout=GUARD_S)
    finish(sidecar)

    assert capture.requests[0].was_gzip
    assert first["distinct_id"] == "42"
    assigned = uuid.UUID(first["uuid"])
    assert assigned.version == 7
    assert assigned.variant == uuid.RFC_4122
    stamped = datetime.fromisoformat(first["timestamp"])
    assert stamped.utcoffset() is not None
    assert stamped.utcoffset().total_seconds() == 0
    assert before <= stamped <= after
    assert first["properties"] == {"$lib": "telemetry-sidecar", "$lib_version": __version__}

    assert second["uuid"] == given_uuid
    assert second["timestamp"] == "2024-05-01T10:00:00.000000+00:00"
    assert second["properties"] == {"$lib": "my-app", "plan": "pro", "$lib_version": __version__}
    assert second["$set"] == {"email": "a@example.com"}


# ---- retries ------------------------------------------------------------------------------------


def test_retries_resend_same_uuid_and_timestamp(capture, spawn_sidecar) -> None:
    """503, 503, OK: the three requests carry the same uuids and timestamps, a new sent_at each."""
    capture.script(503, 503)
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    send(sidecar, numbered(3))
    delivered = capture.wait_for_events(3, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    requests = capture.requests
    assert [r.status for r in requests] == [503, 503, 200]
    identities = [[(e["uuid"], e["timestamp"]) for e in batch_of(r)] for r in requests]
    assert identities[0] == identities[1] == identities[2]
    assert len(set(identities[0])) == 3
    assert [(e["uuid"], e["timestamp"]) for e in delivered] == identities[0]
    sent_at = [r.payload["sent_at"] for r in requests]
    assert len(set(sent_at)) == 3
    assert status["delivered"] == 3
    assert status["queued"] == 0
    assert status["last_error"] is None


def test_each_retryable_status_is_retried_then_delivered(capture, spawn_sidecar) -> None:
    """500, 502, 503, 504, 408 and 429 are each retried with the same events until delivered."""
    codes = [500, 502, 503, 504, 408, 429]
    capture.script(*codes)
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, "--max-retries", "6", api_key=TEST_KEY)
    send(sidecar, numbered(2))
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    requests = capture.requests
    assert [r.status for r in requests] == [*codes, 200]
    assert all(uuids(batch_of(r)) == uuids(delivered) for r in requests)
    assert n_values(delivered) == [0, 1]
    assert status["delivered"] == 2
    assert status["queued"] == 0
    assert status["dropped"]["retries_exhausted"] == 0


def test_persistent_errors_drop_after_max_retries(capture, spawn_sidecar) -> None:
    """--max-retries 2 against constant 503s: exactly 3 requests, then dropped.retries_exhausted."""
    capture.set_default(503)
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, "--max-retries", "2", api_key=TEST_KEY)
    send(sidecar, numbered(4))
    flushed = sidecar.result("ph_flush", {"timeout": GUARD_S})
    status = sidecar.result("ph_status")
    finish(sidecar)

    assert flushed == {"delivered": 0, "queued": 0}
    requests = capture.requests
    assert [r.status for r in requests] == [503, 503, 503]
    assert all(uuids(batch_of(r)) == uuids(batch_of(requests[0])) for r in requests)
    assert capture.events == []
    assert status["dropped"]["retries_exhausted"] == 4
    assert status["delivered"] == 0
    assert status["queued"] == 0
    assert "503" in status["last_error"]


def test_retry_after_seconds_is_a_minimum(capture, spawn_sidecar) -> None:
    """Retry-After: 1 holds the retry back at least a second, far past the configured backoff."""
    capture.script(Status(503, headers={"Retry-After": "1"}))
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    send(sidecar, [event()])
    capture.wait_for_events(1, timeout=GUARD_S)
    finish(sidecar)

    first, second = capture.requests
    assert (first.status, second.status) == (503, 200)
    assert second.received_at - first.received_at >= 1.0


def test_retry_after_http_date_is_a_minimum(spawn_sidecar) -> None:
    """A Retry-After given as an HTTP date holds the retry back until that moment."""
    arrivals: list[float] = []
    with CaptureServer(on_request=lambda request: arrivals.append(time.time())) as server:
        sidecar = spawn_sidecar(server.url, *FAST_RETRIES, api_key=TEST_KEY)
        sidecar.result("ping")  # started, so the date below lies ahead of the first request
        retry_at = math.floor(time.time()) + 2  # one to two seconds ahead, on a whole second
        date = email.utils.formatdate(retry_at, usegmt=True)
        server.script(Status(429, headers={"Retry-After": date}))
        send(sidecar, [event()])
        server.wait_for_events(1, timeout=GUARD_S)
        finish(sidecar)
        statuses = [r.status for r in server.requests]

    assert statuses == [429, 200]
    # The second request was recorded after it was sent; allow 10 ms for wall-clock slewing.
    assert arrivals[1] >= retry_at - 0.01


# ---- refusals -----------------------------------------------------------------------------------


def test_413_splits_and_drops_only_the_lone_oversized_event(spawn_sidecar) -> None:
    """413 halves the batch until the big event is alone; only it is dropped, as rejected."""
    blob = base64.b64encode(os.urandom(9000)).decode()  # gzips to ~9 KB: over 8 KB, under 16 KB
    batch = numbered(5)
    batch[2]["properties"]["blob"] = blob
    with CaptureServer(max_body_bytes=8000) as server:
        sidecar = spawn_sidecar(server.url, *FAST_RETRIES, api_key=TEST_KEY)
        send(sidecar, batch)
        delivered = server.wait_for_events(4, timeout=GUARD_S)
        status = settle(sidecar)
        finish(sidecar)
        statuses = [r.status for r in server.requests]

    assert n_values(delivered) == [0, 1, 3, 4]
    assert statuses.count(413) >= 2  # the whole batch, then the half holding the big event
    assert status["dropped"]["rejected"] == 1
    assert status["delivered"] == 4
    assert status["queued"] == 0


def test_400_isolates_and_drops_only_the_poison_event(capture, spawn_sidecar) -> None:
    """400 halves the batch to isolate the one event PostHog refuses; only it is dropped."""
    batch = numbered(6)
    batch[3]["properties"]["$cookieless_mode"] = "yes"
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    send(sidecar, batch)
    delivered = capture.wait_for_events(5, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    assert n_values(delivered) == [0, 1, 2, 4, 5]
    refused = [r for r in capture.requests if r.status == 400]
    assert refused
    assert all(r.error == "event submitted with invalid cookieless mode" for r in refused)
    assert [n_values(batch_of(r)) for r in refused][-1] == [3]
    assert status["dropped"]["rejected"] == 1
    assert status["delivered"] == 5
    assert status["queued"] == 0


def test_auth_refusal_holds_the_key_while_other_keys_flow(capture, spawn_sidecar) -> None:
    """After a 401 the key's events stay held, even through a flush, while another key's flow."""
    capture.script(401)
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, "--auth-hold", "60", api_key=TEST_KEY)
    held = numbered(3)
    send(sidecar, held)
    capture.wait_for_requests(1, timeout=GUARD_S)
    # The flush returns once the 401 is handled and nothing else can go: the hold stands.
    assert sidecar.result("ph_flush", {"timeout": GUARD_S}) == {"delivered": 0, "queued": 3}
    status = sidecar.result("ph_status")
    assert status["queued"] == 3
    assert "401" in status["last_error"]
    assert 0 < status["next_attempt_in_s"] <= 60

    send(sidecar, numbered(2, start=10), api_key=OTHER_KEY)
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    flushed = sidecar.result("ph_flush", {"timeout": GUARD_S})
    status = sidecar.result("ph_status")
    finish(sidecar)

    assert n_values(delivered) == [10, 11]
    assert [r.payload["api_key"] for r in capture.requests] == [TEST_KEY, OTHER_KEY]
    assert capture.requests[0].status == 401
    assert flushed["queued"] == 3
    assert status["queued"] == 3
    assert status["delivered"] == 2
    assert status["dropped"] == {"overflow": 0, "rejected": 0, "retries_exhausted": 0, "opt_out": 0}


def test_auth_hold_ends_and_the_events_are_delivered(capture, spawn_sidecar) -> None:
    """Events refused with 403 are sent again, unchanged, once --auth-hold has passed."""
    capture.script(403)
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, "--auth-hold", "0.5", api_key=TEST_KEY)
    send(sidecar, numbered(2))
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    first, second = capture.requests
    assert (first.status, second.status) == (403, 200)
    assert second.received_at - first.received_at >= 0.5
    assert uuids(batch_of(first)) == uuids(delivered)
    assert status["delivered"] == 2
    assert status["queued"] == 0


# ---- connection trouble -------------------------------------------------------------------------


def test_offline_events_wait_then_flush_delivers_them(offline_port, spawn_sidecar) -> None:
    """Offline, events wait and a flush delivers none; back online, a flush delivers them all."""
    url = f"http://127.0.0.1:{offline_port}"
    sidecar = spawn_sidecar(url, *SLOW_RETRIES, api_key=TEST_KEY)
    send(sidecar, numbered(3))
    assert sidecar.result("ph_flush", {"timeout": 1}) == {"delivered": 0, "queued": 3}
    status = sidecar.result("ph_status")
    assert status["queued"] == 3
    assert "cannot connect" in status["last_error"]
    assert status["next_attempt_in_s"] > 0
    assert status["dropped"]["retries_exhausted"] == 0

    with CaptureServer(port=offline_port) as server:
        flushed = sidecar.result("ph_flush", {"timeout": GUARD_S})
        delivered = server.events
        finish(sidecar)

    assert flushed == {"delivered": 3, "queued": 0}
    assert n_values(delivered) == [0, 1, 2]


def connecting_to(sidecar: SidecarProcess, port: int) -> bool:
    """Whether the sidecar (or the program under a frozen binary's bootloader) has a TCP
    connect to `port` stuck in SYN_SENT."""
    return any(
        conn.raddr and conn.raddr.port == port and conn.status == psutil.CONN_SYN_SENT
        for process in sidecar.tree()
        for conn in process.net_connections(kind="tcp")
    )


@pytest.mark.skipif(sys.platform != "linux", reason="relies on Linux dropping SYNs to a full queue")
def test_flush_during_a_failing_connect_gets_its_own_attempt(spawn_sidecar) -> None:
    """A flush that arrives while a connect is failing gets a prompt retry, not the backoff."""
    # A listener whose accept queue is full drops SYNs, so the sidecar's connect hangs until
    # --request-timeout: an offline failure. The flush is sent during that hang, then the
    # capture server takes the port over; the offline backoff (30-60 s) outlasts the flush.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    fillers = [socket.socket() for _ in range(3)]
    for filler in fillers:
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
    sidecar = spawn_sidecar(
        f"http://127.0.0.1:{port}", "--backoff-base", "60", "--backoff-max", "60",
        "--request-timeout", "0.5", api_key=TEST_KEY,
    )
    send(sidecar, numbered(3))
    wait_until(lambda: connecting_to(sidecar, port), f"a connect to port {port}", GUARD_S,
               step=0.005)
    flush_id = sidecar.request("ph_flush", {"timeout": GUARD_S})
    for sock in (*fillers, listener):
        sock.close()
    with CaptureServer(port=port) as server:
        flushed = sidecar.response_to(flush_id)["result"]
        delivered = server.events
        finish(sidecar)

    assert flushed == {"delivered": 3, "queued": 0}, sidecar.stderr
    assert n_values(delivered) == [0, 1, 2]


def test_hung_request_times_out_and_is_retried(capture, spawn_sidecar) -> None:
    """A request the server never answers times out after --request-timeout and is retried."""
    capture.script(Hang())
    sidecar = spawn_sidecar(
        capture.url, *FAST_RETRIES, "--request-timeout", "0.5", api_key=TEST_KEY
    )
    send(sidecar, numbered(2))
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    hung = capture.requests[0]
    assert hung.outcome is Outcome.HUNG
    assert capture.requests[1].outcome is Outcome.ANSWERED
    # A later request may also time out on a loaded machine; the events still count once.
    assert set(uuids(delivered)) == set(uuids(batch_of(hung)))
    assert status["delivered"] == 2
    assert status["queued"] == 0


def test_lost_connections_are_retried(capture, spawn_sidecar) -> None:
    """A dropped connection and a reset mid-body are each retried; the events then arrive once."""
    capture.script(DropConnection(), ResetMidBody())
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    send(sidecar, numbered(2))
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    dropped, reset, answered = capture.requests
    assert (dropped.outcome, reset.outcome) == (Outcome.DROPPED, Outcome.RESET)
    assert answered.status == 200
    assert uuids(batch_of(dropped)) == uuids(delivered)
    assert n_values(delivered) == [0, 1]
    assert status["delivered"] == 2
    assert status["queued"] == 0
    assert status["last_error"] is None


# ---- batching and the queue ---------------------------------------------------------------------


def test_one_key_per_request_and_at_most_batch_size(capture, spawn_sidecar) -> None:
    """120 events under two keys, --batch-size 50: one key and at most 50 events per request."""
    sidecar = spawn_sidecar(capture.url, *FAST_RETRIES, "--batch-size", "50", api_key=TEST_KEY)
    for key, start in ((TEST_KEY, 0), (OTHER_KEY, 100)):
        batch = numbered(60, start=start)
        for item in batch:
            item["properties"]["key"] = key
        send(sidecar, batch, api_key=key)
    delivered = capture.wait_for_events(120, timeout=GUARD_S)
    status = settle(sidecar)
    finish(sidecar)

    sizes: dict[str, list[int]] = {TEST_KEY: [], OTHER_KEY: []}
    for request in capture.requests:
        key = request.payload["api_key"]
        events = batch_of(request)
        assert {e["properties"]["key"] for e in events} == {key}
        sizes[key].append(len(events))
    assert sorted(sizes[TEST_KEY]) == sorted(sizes[OTHER_KEY]) == [10, 50]
    assert sorted(n_values(delivered)) == [*range(60), *range(100, 160)]
    assert len(set(uuids(delivered))) == 120
    assert status["delivered"] == 120


def test_queue_overflow_keeps_the_newest(offline_port, spawn_sidecar) -> None:
    """--max-queue 10 offline keeps the 10 newest, counts the rest, then delivers them in order."""
    url = f"http://127.0.0.1:{offline_port}"
    sidecar = spawn_sidecar(url, *SLOW_RETRIES, "--max-queue", "10", api_key=TEST_KEY)
    answer = send(sidecar, numbered(25))
    assert answer["queued"] == 10
    # Returns once the first attempt has failed and the long offline wait has begun.
    assert sidecar.result("ph_flush", {"timeout": 1}) == {"delivered": 0, "queued": 10}
    status = sidecar.result("ph_status")
    assert status["queued"] == 10
    assert status["dropped"]["overflow"] == 15

    with CaptureServer(port=offline_port) as server:
        flushed = sidecar.result("ph_flush", {"timeout": GUARD_S})
        delivered = server.events
        status = sidecar.result("ph_status")
        finish(sidecar)

    assert flushed == {"delivered": 10, "queued": 0}
    assert n_values(delivered) == list(range(15, 25))
    assert status["dropped"]["overflow"] == 15
    assert status["delivered"] == 10


def test_opt_out_purges_refuses_and_persists(capture, offline_port, spawn_sidecar) -> None:
    """Opt-out purges, refuses and counts events, survives a restart, and can be undone."""
    offline = f"http://127.0.0.1:{offline_port}"
    first = spawn_sidecar(offline, *SLOW_RETRIES, api_key=TEST_KEY)
    send(first, numbered(5))
    assert first.result("ph_set_opt_out", {"opt_out": True}) == {"opted_out": True, "purged": 5}
    refused = first.result("ph_send_batch", {"batch": numbered(3)})
    assert refused == {"accepted": 0, "rejected": [], "queued": 0}
    status = first.result("ph_status")
    assert status["opted_out"] is True
    assert status["dropped"]["opt_out"] == 8
    assert status["queued"] == 0
    finish(first)

    second = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    status = second.result("ph_status")
    assert status["opted_out"] is True
    assert second.result("ph_send_batch", {"batch": numbered(2)})["accepted"] == 0
    assert second.result("ph_set_opt_out", {"opt_out": False}) == {"opted_out": False, "purged": 0}
    send(second, numbered(2, start=50))
    delivered = capture.wait_for_events(2, timeout=GUARD_S)
    status = settle(second)
    finish(second)

    assert n_values(delivered) == [50, 51]
    assert n_values(capture.events) == [50, 51]
    assert status["opted_out"] is False
    assert status["dropped"]["opt_out"] == 10
    assert status["delivered"] == 2
