"""The wire protocol end to end: the real `python -m sidecar` over real pipes, scripted stdin.

Every bad input must get exactly the contract's error (or nothing, for notifications and blank
lines), leave the process up and answering, and leave the queue as it was. Timeouts here are
hang guards, never timing assertions.
"""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sidecar import __version__
from sidecar_dev.capture import CaptureServer, Hang
from sidecar_dev.driver import (
    READ_TIMEOUT_S,
    SidecarProcess,
    sidecar_command,
    sidecar_environment,
)
from sidecar_dev.harness import TEST_KEY, RefusingPort, event, proc_status_kib

MIB = 1024 * 1024
# Peak memory the process may add while it receives a 17 MiB line. The decoder may keep up to
# 16 MiB of it; holding the line whole (and decoding it) would take several times that.
HUGE_LINE_RSS_BOUND = 64 * MIB

STATUS_KEYS = {
    "version",
    "durability",
    "queued",
    "oldest_event_age_s",
    "delivered",
    "dropped",
    "last_error",
    "next_attempt_in_s",
    "host",
    "opted_out",
    # Added after the first contract (README: the damaged database set aside at start).
    "quarantined_db",
}
DROPPED_KEYS = {"overflow", "rejected", "retries_exhausted", "opt_out"}

Spawn = Callable[..., SidecarProcess]


# ---- helpers ------------------------------------------------------------------------------------


def rpc(method: object, params: object = None, id_: object = 1, **extra: object) -> bytes:
    """One request line, as raw UTF-8 (no `params` when None; no `id` when `id_` is ...)."""
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method, **extra}
    if params is not None:
        message["params"] = params
    if id_ is not ...:
        message["id"] = id_
    return json.dumps(message, ensure_ascii=False).encode() + b"\n"


def notification(method: str, params: object = None) -> dict[str, object]:
    """A request object without an id."""
    message: dict[str, object] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    return message


def assert_error(message: Any, code: int, id_: object) -> dict[str, Any]:
    """`message` is a single error response with this code and id; returns its `error`."""
    assert isinstance(message, dict), message
    assert message.get("jsonrpc") == "2.0", message
    assert "result" not in message, message
    assert message["id"] == id_, message
    error: dict[str, Any] = message["error"]
    assert error["code"] == code, message
    assert isinstance(error["message"], str) and error["message"], message
    return error


def assert_pong(proc: SidecarProcess, id_: object = "after") -> None:
    """The very next stdout line answers a ping sent now: the process is up and in sync."""
    assert proc.process.poll() is None, proc.stderr
    proc.send_raw(rpc("ping", id_=id_))
    assert proc.read_message() == {"jsonrpc": "2.0", "result": {"version": __version__}, "id": id_}


def queued(proc: SidecarProcess) -> int:
    """The queue depth from ph_status."""
    depth = proc.result("ph_status")["queued"]
    assert isinstance(depth, int)
    return depth


def assert_clean_exit(proc: SidecarProcess) -> None:
    """Close stdin: the process exits 0, logged no traceback and never showed the key."""
    assert proc.stop() == 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert TEST_KEY not in proc.stderr
    assert TEST_KEY.encode() not in proc.stdout


def peak_rss_growth(pid: int, before_kib: int) -> int | None:
    """Bytes the process's peak RSS rose above `before_kib`, or None without /proc."""
    peak = proc_status_kib(pid, "VmHWM")
    return None if peak is None else (peak - before_kib) * 1024


# ---- fixtures -----------------------------------------------------------------------------------


@pytest.fixture
def offline_host() -> Iterator[str]:
    """A loopback URL whose port refuses connections, so events stay queued."""
    with RefusingPort() as held:
        yield held.url


@pytest.fixture(scope="module")
def _module_offline_host() -> Iterator[str]:
    with RefusingPort() as held:
        yield held.url


@pytest.fixture
def spawn(spawn_sidecar: Spawn) -> Spawn:
    """`spawn_sidecar` with the api key TEST_KEY unless one is given."""

    def start(host: str, *args: str, api_key: str | None = TEST_KEY, **kw: Any) -> SidecarProcess:
        return spawn_sidecar(host, *args, api_key=api_key, **kw)

    return start


@pytest.fixture(scope="module")
def offline_sidecar(
    tmp_path_factory: pytest.TempPathFactory, _module_offline_host: str
) -> Iterator[SidecarProcess]:
    """One offline sidecar holding two queued events, shared by the bad-input cases."""
    folder = tmp_path_factory.mktemp("bad-input") / "data"
    with SidecarProcess(folder, _module_offline_host, api_key=TEST_KEY) as proc:
        answer = proc.result("ph_send_batch", {"batch": [event(), event("second")]})
        assert answer["accepted"] == 2 and answer["queued"] == 2, answer
        yield proc
        assert_clean_exit(proc)


# ---- one bad line at a time ---------------------------------------------------------------------

BAD_LINES = [
    # Not JSON at all: -32700 with id null.
    pytest.param(b"{not json\n", -32700, None, None, id="invalid-json"),
    pytest.param(b'{"jsonrpc":"2.0","id":1,"method":"ping"\n', -32700, None, None, id="truncated"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"p\xffing"}\n', -32700, None, "UTF-8", id="bad-utf8"
    ),
    pytest.param(b"\xc3\x28\xa0\xa1\n", -32700, None, "UTF-8", id="bad-utf8-only"),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"ph_flush","params":{"timeout":NaN}}\n',
        -32700, None, "NaN", id="nan",
    ),
    pytest.param(
        b'{"jsonrpc":"2.0","id":1,"method":"ph_flush","params":{"timeout":Infinity}}\n',
        -32700, None, "Infinity", id="infinity",
    ),
    pytest.param(b"-Infinity\n", -32700, None, "Infinity", id="minus-infinity"),
    # JSON, but not a request.
    pytest.param(b"42\n", -32600, None, None, id="scalar-number"),
    pytest.param(b'"ping"\n', -32600, None, None, id="scalar-string"),
    pytest.param(b"null\n", -32600, None, None, id="scalar-null"),
    pytest.param(b"[]\n", -32600, None, None, id="empty-array"),
    pytest.param(b'{"id":5,"method":"ping"}\n', -32600, 5, "jsonrpc", id="jsonrpc-missing"),
    pytest.param(rpc("ping", jsonrpc="1.0", id_=6), -32600, 6, "jsonrpc", id="jsonrpc-1.0"),
    pytest.param(rpc(5, id_=7), -32600, 7, "method", id="method-not-string"),
    pytest.param(rpc("ping", "x", id_=8), -32600, 8, "params", id="params-string"),
    pytest.param(rpc("ping", id_={"a": 1}), -32600, None, "id", id="id-object"),
    # A request, but for no method we have.
    pytest.param(rpc("ph_nope", id_=9), -32601, 9, "ph_nope", id="unknown-method"),
    # Bad params.
    pytest.param(rpc("ping", {"bogus": 1}, id_=10), -32602, 10, "bogus", id="ping-unknown-param"),
    pytest.param(
        rpc("ph_send_batch", {"batch": [event()], "colour": "red"}, id_=11),
        -32602, 11, "colour", id="send-unknown-param",
    ),
    pytest.param(
        rpc("ph_send_batch", [[event()]], id_=12), -32602, 12, None, id="send-params-array"
    ),
    pytest.param(rpc("ph_status", [1], id_=13), -32602, 13, None, id="status-params-array"),
    pytest.param(
        rpc("ph_send_batch", {"batch": {"0": event()}}, id_=14),
        -32602, 14, "batch", id="batch-object",
    ),
    pytest.param(
        rpc("ph_send_batch", {"batch": "events"}, id_=15), -32602, 15, "batch", id="batch-string"
    ),
    pytest.param(
        rpc("ph_send_batch", {"batch": [event()] * 10_001}, id_=16),
        -32602, 16, "batch", id="batch-10001-events",
    ),
    pytest.param(rpc("ph_send_batch", {}, id_=17), -32602, 17, "batch", id="batch-missing"),
    pytest.param(
        rpc("ph_send_batch", {"batch": [event()], "api_key": ""}, id_=18),
        -32602, 18, "api_key", id="api-key-empty",
    ),
    pytest.param(
        rpc("ph_send_batch", {"batch": [event()], "api_key": 5}, id_=19),
        -32602, 19, "api_key", id="api-key-number",
    ),
    pytest.param(
        rpc("ph_flush", {"timeout": "x"}, id_=20), -32602, 20, "timeout", id="flush-timeout-str"
    ),
    pytest.param(
        rpc("ph_flush", {"timeout": -1}, id_=21), -32602, 21, "timeout", id="flush-timeout-neg"
    ),
    pytest.param(
        rpc("ph_flush", {"timeout": True}, id_=22), -32602, 22, "timeout", id="flush-timeout-bool"
    ),
    pytest.param(
        rpc("ph_set_opt_out", {"opt_out": "yes"}, id_=23),
        -32602, 23, "opt_out", id="opt-out-string",
    ),
]


@pytest.mark.parametrize(("line", "code", "id_", "data_names"), BAD_LINES)
def test_bad_line_gets_one_error_and_changes_nothing(
    offline_sidecar: SidecarProcess, line: bytes, code: int, id_: object, data_names: str | None
) -> None:
    """A bad line gets exactly its one error; the process answers on and the queue is intact."""
    proc = offline_sidecar
    proc.send_raw(line)
    error = assert_error(proc.read_message(), code, id_)
    if data_names is not None:
        assert data_names in str(error.get("data")), error
    if code == -32602:
        assert isinstance(error.get("data"), str) and error["data"], error
    assert_pong(proc)
    assert queued(proc) == 2
    assert proc.result("ph_status")["opted_out"] is False


def test_no_api_key_anywhere_stores_nothing(spawn: Spawn, offline_host: str) -> None:
    """With no key from the call nor --api-key: -32602 and nothing stored; a call's key works."""
    proc = spawn(offline_host, api_key=None)
    proc.send_raw(rpc("ph_send_batch", {"batch": [event(), event()]}, id_="k"))
    error = assert_error(proc.read_message(), -32602, "k")
    assert "api_key" in error["data"]
    assert_pong(proc)
    assert queued(proc) == 0
    answer = proc.result("ph_send_batch", {"batch": [event()], "api_key": TEST_KEY})
    assert answer == {"accepted": 1, "rejected": [], "queued": 1}
    assert_clean_exit(proc)


# ---- framing ------------------------------------------------------------------------------------


def test_oversized_line_gets_one_error_then_resyncs(spawn: Spawn, offline_host: str) -> None:
    """A 17 MiB line: one -32600 (id null), bounded memory, and the next line is answered."""
    proc = spawn(offline_host)
    assert proc.result("ph_send_batch", {"batch": [event()]})["queued"] == 1
    rss_before = proc_status_kib(proc.process.pid, "VmRSS")
    chunk = b"a" * MIB
    proc.send_raw(b'"')
    for _ in range(17):
        proc.send_raw(chunk)
    proc.send_raw(b'"\n')
    error = assert_error(proc.read_message(), -32600, None)
    assert "limit" in str(error.get("data")), error
    if rss_before is not None:
        growth = peak_rss_growth(proc.process.pid, rss_before)
        assert growth is not None and growth < HUGE_LINE_RSS_BOUND, growth
    assert_pong(proc)
    assert queued(proc) == 1
    assert_clean_exit(proc)


def test_line_endings_blank_lines_and_coalesced_writes(spawn: Spawn, offline_host: str) -> None:
    """CRLF is accepted, blank lines get no answer, and one write may carry several requests."""
    proc = spawn(offline_host)
    proc.send_raw(rpc("ping", id_="crlf")[:-1] + b"\r\n")
    assert proc.read_message()["id"] == "crlf"
    proc.send_raw(b"\n\r\n   \n\t\r\n\n")
    assert_pong(proc, "after-blanks")
    send = rpc("ph_send_batch", {"batch": [event()]}, id_="b")[:-1] + b"\r\n"
    proc.send_raw(rpc("ping", id_=1) + send + rpc("ph_status", id_=3))
    answers = [proc.read_message() for _ in range(3)]
    assert [a["id"] for a in answers] == [1, "b", 3]
    assert answers[1]["result"]["accepted"] == 1
    assert answers[2]["result"]["queued"] == 1
    assert_pong(proc)
    assert_clean_exit(proc)


def test_request_split_across_writes(spawn: Spawn, capture: CaptureServer) -> None:
    """A request written in pieces (one cut inside a UTF-8 character) is read as one line."""
    proc = spawn(capture.url)
    text = "caf\u00e9 \u2603"
    line = rpc("ph_send_batch", {"batch": [event(text)]}, id_="split")
    cut = line.index("\u2603".encode()) + 1  # inside the three bytes of the snowman
    for piece in (line[:7], line[7:cut], line[cut:-1], line[-1:]):
        proc.send_raw(piece)
    answer = proc.read_message()
    assert answer["id"] == "split" and answer["result"]["accepted"] == 1, answer
    [delivered] = capture.wait_for_events(1, timeout=READ_TIMEOUT_S)
    assert delivered["event"] == text
    assert_clean_exit(proc)


# ---- JSON-RPC batches and notifications ---------------------------------------------------------


def test_batch_of_mixed_members_is_answered_in_one_array(spawn: Spawn, offline_host: str) -> None:
    """Each member of a batch is judged alone and the answers come back in one array line."""
    proc = spawn(offline_host)
    members = [
        {"jsonrpc": "2.0", "id": "a", "method": "ping"},
        5,
        notification("ping"),
        {"jsonrpc": "1.0", "id": "c", "method": "ping"},
        {"jsonrpc": "2.0", "id": "d", "method": "ph_nope"},
        {"jsonrpc": "2.0", "id": "e", "method": "ph_status", "params": {"bogus": 1}},
        {"jsonrpc": "2.0", "id": "f", "method": "ph_send_batch", "params": {"batch": [event()]}},
        {"jsonrpc": "2.0", "id": "g", "method": "ph_send_batch", "params": {"batch": 1}},
    ]
    proc.send(members)
    answers = proc.read_message()
    assert isinstance(answers, list), answers
    by_id = {a["id"]: a for a in answers}
    assert len(answers) == len(by_id) == 7, answers
    assert by_id["a"]["result"] == {"version": __version__}
    assert_error(by_id[None], -32600, None)
    assert_error(by_id["c"], -32600, "c")
    assert_error(by_id["d"], -32601, "d")
    assert "bogus" in assert_error(by_id["e"], -32602, "e")["data"]
    assert by_id["f"]["result"] == {"accepted": 1, "rejected": [], "queued": 1}
    assert_error(by_id["g"], -32602, "g")
    assert_pong(proc)
    assert queued(proc) == 1
    assert_clean_exit(proc)


def test_notifications_get_no_answer_but_still_store(spawn: Spawn, capture: CaptureServer) -> None:
    """A batch of only notifications, and a lone notification, answer nothing yet store events."""
    proc = spawn(capture.url)
    proc.send(
        [
            notification("ping"),
            notification("ph_send_batch", {"batch": [event("from batch")]}),
            notification("ph_nope"),
            notification("ph_flush", {"timeout": "x"}),
        ]
    )
    assert_pong(proc, "after-batch")
    proc.send(notification("ph_send_batch", {"batch": [event("alone")]}))
    assert_pong(proc, "after-alone")
    delivered = capture.wait_for_events(2, timeout=READ_TIMEOUT_S)
    assert sorted(e["event"] for e in delivered) == ["alone", "from batch"]
    assert_clean_exit(proc)
    assert proc.stdout.count(b"\n") == 2  # the two pings' answers, nothing else


# ---- events -------------------------------------------------------------------------------------


def test_invalid_events_are_rejected_alone(spawn: Spawn, capture: CaptureServer) -> None:
    """Each invalid event is rejected with its index and reason; the valid ones are delivered."""
    proc = spawn(capture.url)
    batch: list[Any] = [
        event("ok-0"),
        {"distinct_id": "user-1", "properties": {}},
        event("ok-2"),
        event("empty id", distinct_id=""),
        event("bad uuid", uuid="not-a-uuid"),
        event("bad time", timestamp="yesterday at noon"),
        {"event": "bad props", "distinct_id": "user-1", "properties": ["a"]},
        event("huge", properties={"blob": "x" * 1_000_001}),
        event("ok-8", uuid="0190a6c2-6f0b-7c3e-8d2a-0123456789ab"),
    ]
    answer = proc.result("ph_send_batch", {"batch": batch})
    assert answer["accepted"] == 3 and answer["queued"] in (0, 1, 2, 3), answer
    reasons = {r["index"]: r["error"] for r in answer["rejected"]}
    assert sorted(reasons) == [1, 3, 4, 5, 6, 7], answer
    for index, word in {
        1: "event", 3: "distinct_id", 4: "uuid", 5: "timestamp", 6: "properties", 7: "bytes"
    }.items():
        assert word in reasons[index], (index, reasons[index])
    flushed = proc.result("ph_flush", {"timeout": READ_TIMEOUT_S})
    assert flushed["queued"] == 0, flushed
    names = sorted(e["event"] for e in capture.wait_for_events(3, timeout=READ_TIMEOUT_S))
    assert names == ["ok-0", "ok-2", "ok-8"]
    assert len(capture.events) == 3
    [kept] = [e for e in capture.events if e["event"] == "ok-8"]
    assert kept["uuid"] == "0190a6c2-6f0b-7c3e-8d2a-0123456789ab"
    status = proc.result("ph_status")
    assert status["delivered"] == 3 and status["dropped"]["rejected"] == 0, status
    assert_clean_exit(proc)


def test_too_deeply_nested_event_is_rejected_alone(spawn: Spawn, offline_host: str) -> None:
    """An event nested too deep to store is rejected alone (or the line is a parse error)."""
    proc = spawn(offline_host)
    total = 0
    for depth in range(900, 1001, 2):
        # Built as text: json.dumps in this test's own deep stack could not encode it.
        nested = b"[" * depth + b"]" * depth
        deep = b'{"event":"deep","distinct_id":"u","properties":{"a":%s}}' % nested
        flat = json.dumps(event("flat")).encode()
        proc.send_raw(
            b'{"jsonrpc":"2.0","id":%d,"method":"ph_send_batch","params":{"batch":[%s,%s]}}\n'
            % (depth, flat, deep)
        )
        answer = proc.read_message()
        if "error" in answer:
            assert_error(answer, -32700, None)  # deeper than the parser takes: nothing stored
            continue
        result = answer["result"]
        assert (result["accepted"], result["rejected"]) == (2, []) or (
            result["accepted"] == 1 and [r["index"] for r in result["rejected"]] == [1]
        ), (depth, answer)
        total += result["accepted"]
        assert result["queued"] == total
    assert_pong(proc)
    assert_clean_exit(proc)


# ---- stdout hygiene -----------------------------------------------------------------------------


def test_stdout_holds_only_ascii_response_lines(spawn: Spawn, capture: CaptureServer) -> None:
    """Every stdout line is one ASCII-only JSON response ending in a newline, even for non-ASCII."""
    proc = spawn(capture.url)
    text = "caf\u00e9 \u2603 \u65e5\u672c \U0001f600"
    owed = [
        rpc("ph_send_batch", {"batch": [event(text, distinct_id=text, note=text)]}, id_=text),
        rpc("p\u00efng", id_=2),
        rpc("ping", {"\u00f1ame": text}, id_=3),
        '{"jsonrpc":"2.0","id":4,"method":"\u00e9\n'.encode(),
        rpc("ph_send_batch", {"batch": [{"event": text}]}, id_=5),
        rpc("ping", id_=6),
    ]
    for line in owed:
        proc.send_raw(line)
    answers = {}
    for _ in owed:
        message = proc.read_message()
        answers[message["id"]] = message
    assert answers[text]["result"]["accepted"] == 1
    assert assert_error(answers[2], -32601, 2)["data"] == "p\u00efng"
    assert "\u00f1ame" in assert_error(answers[3], -32602, 3)["data"]
    assert_error(answers[None], -32700, None)
    assert answers[5]["result"]["rejected"][0]["index"] == 0
    [delivered] = capture.wait_for_events(1, timeout=READ_TIMEOUT_S)
    assert (delivered["event"], delivered["distinct_id"], delivered["note"]) == (text,) * 3
    assert_clean_exit(proc)

    raw = proc.stdout
    assert raw.endswith(b"\n")
    lines = raw.split(b"\n")[:-1]
    assert len(lines) == len(owed), raw
    assert b"\\u" in raw
    for line in lines:
        assert line.isascii(), line
        message = json.loads(line)
        assert isinstance(message, dict) and set(message) in (
            {"jsonrpc", "id", "result"},
            {"jsonrpc", "id", "error"},
        ), message
        assert message["jsonrpc"] == "2.0"


# ---- load ---------------------------------------------------------------------------------------


def test_flood_of_pings_without_reading(spawn: Spawn, offline_host: str) -> None:
    """2,000 pings written without reading are all answered once and the process stays up."""
    proc = spawn(offline_host)
    count = 2_000
    failures: list[BaseException] = []

    def write_all() -> None:
        try:
            for i in range(count):
                proc.send_raw(rpc("ping", id_=i))
        except BaseException as exc:
            failures.append(exc)

    writer = threading.Thread(target=write_all, daemon=True)
    writer.start()
    writer.join(READ_TIMEOUT_S)
    assert not writer.is_alive() and not failures, failures
    answers = [proc.read_message() for _ in range(count)]
    assert sorted(a["id"] for a in answers) == list(range(count))
    assert all(a["result"] == {"version": __version__} for a in answers)
    assert_pong(proc)
    assert_clean_exit(proc)


# ---- methods ------------------------------------------------------------------------------------


def test_status_and_ping_answer_the_contract_shapes(spawn: Spawn, offline_host: str) -> None:
    """ph_status has exactly the contract's fields with their types; ping is just the version."""
    proc = spawn(offline_host + "/")
    assert proc.result("ping") == {"version": __version__}
    status = proc.result("ph_status")
    assert set(status) == STATUS_KEYS, status
    assert status["version"] == __version__
    assert status["queued"] == 0 and status["delivered"] == 0
    assert status["oldest_event_age_s"] is None and status["next_attempt_in_s"] is None
    assert status["last_error"] is None
    assert status["dropped"] == dict.fromkeys(DROPPED_KEYS, 0)
    assert status["host"] == offline_host
    assert status["opted_out"] is False
    assert status["quarantined_db"] is None
    assert status["durability"] == "full"

    proc.result("ph_send_batch", {"batch": [event(), event()]})
    status = proc.result("ph_status")
    assert set(status) == STATUS_KEYS, status
    assert type(status["queued"]) is int and status["queued"] == 2
    assert type(status["delivered"]) is int
    assert type(status["oldest_event_age_s"]) in (int, float)
    assert status["oldest_event_age_s"] >= 0
    assert status["next_attempt_in_s"] is None or (
        type(status["next_attempt_in_s"]) in (int, float) and status["next_attempt_in_s"] >= 0
    )
    assert status["last_error"] is None or isinstance(status["last_error"], str)
    assert set(status["dropped"]) == DROPPED_KEYS
    assert all(type(v) is int for v in status["dropped"].values())
    assert type(status["opted_out"]) is bool
    assert_clean_exit(proc)


def test_status_reports_the_durability_chosen_by_option_or_environment(
    spawn: Spawn, offline_host: str, tmp_path: Path
) -> None:
    """`--durability normal` and TELEMETRY_SIDECAR_DURABILITY=normal are in force and reported;
    the option wins over the environment; events are stored at either level."""
    by_option = spawn(offline_host, "--durability", "normal", folder=tmp_path / "a",
                      env={"TELEMETRY_SIDECAR_DURABILITY": "full"})
    assert by_option.result("ph_send_batch", {"batch": [event()]})["accepted"] == 1
    assert by_option.result("ph_status")["durability"] == "normal"
    assert_clean_exit(by_option)
    by_env = spawn(offline_host, folder=tmp_path / "b",
                   env={"TELEMETRY_SIDECAR_DURABILITY": "normal"})
    assert by_env.result("ph_status")["durability"] == "normal"
    assert_clean_exit(by_env)


def test_flush_in_flight_does_not_hold_up_ping(spawn: Spawn, capture: CaptureServer) -> None:
    """While a ph_flush waits on a server that never answers, a later ping is answered first."""
    capture.set_default(Hang())
    proc = spawn(capture.url)
    proc.result("ph_send_batch", {"batch": [event()]})
    capture.wait_for_requests(1, timeout=READ_TIMEOUT_S)  # the send is on the wire, hanging
    proc.send_raw(rpc("ph_flush", {"timeout": 5}, id_="flush"))
    proc.send_raw(rpc("ping", id_="ping"))
    pong = proc.read_message()
    assert pong == {"jsonrpc": "2.0", "result": {"version": __version__}, "id": "ping"}, pong
    status = proc.call("ph_status")
    assert status["result"]["queued"] == 1, status
    assert_clean_exit(proc)


# ---- process options ----------------------------------------------------------------------------


def test_plain_http_to_remote_host_is_refused(spawn: Spawn, data_dir: Path) -> None:
    """--host http://example.com exits 2 with one stderr line and creates no data folder."""
    proc = spawn("http://example.com")
    assert proc.wait() == 2
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "--host" in proc.stderr
    assert proc.stdout == b""
    assert not data_dir.exists()


def test_host_shorthand_eu(spawn: Spawn) -> None:
    """--host eu means https://eu.i.posthog.com."""
    proc = spawn("eu")
    assert proc.result("ph_status")["host"] == "https://eu.i.posthog.com"
    assert_clean_exit(proc)


def test_environment_api_key_is_used(spawn: Spawn, capture: CaptureServer) -> None:
    """POSTHOG_API_KEY serves calls without a key; --host wins over POSTHOG_HOST."""
    env_key = "phc_env_key_22"
    proc = spawn(capture.url, api_key=None, env={"POSTHOG_API_KEY": env_key, "POSTHOG_HOST": "us"})
    assert proc.result("ph_status")["host"] == capture.url
    assert proc.result("ph_send_batch", {"batch": [event()]})["accepted"] == 1
    [request] = capture.wait_for_requests(1, timeout=READ_TIMEOUT_S)
    assert request.payload["api_key"] == env_key
    assert_clean_exit(proc)
    assert env_key not in proc.stderr


def test_environment_host_is_used(data_dir: Path) -> None:
    """POSTHOG_HOST sets the capture host when --host is not given."""
    env = sidecar_environment({"POSTHOG_HOST": "us", "POSTHOG_API_KEY": TEST_KEY})
    lines = rpc("ph_status", id_=1) + rpc("ph_send_batch", {"batch": []}, id_=2)
    done = subprocess.run(
        [*sidecar_command(), "--data-dir", str(data_dir)],
        input=lines,
        capture_output=True,
        env=env,
        timeout=READ_TIMEOUT_S,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    status, sent = (json.loads(line) for line in done.stdout.splitlines())
    assert status["result"]["host"] == "https://us.i.posthog.com"
    assert sent["result"] == {"accepted": 0, "rejected": [], "queued": 0}  # the env key served
