"""The process's life: start, stop, crash and restart, shared data folders, and what it may write.

Every test spawns the real `python -m sidecar` over pipes. Exit deadlines are checked only as
hang guards (the driver's wait timeout); nothing here asserts on timing.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import stat
from pathlib import Path
from typing import Any

import pytest

from sidecar import __version__
from sidecar_dev.capture import Delay, Hang, ReceivedRequest
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import FAST_RETRIES, TEST_KEY, event, n_values, numbered

GUARD_S = 20.0  # hang guard for waits on the server


def offline_url(port: int) -> str:
    """A capture host that refuses connections."""
    return f"http://127.0.0.1:{port}"


def send(sidecar: SidecarProcess, batch: list[dict[str, Any]], **params: Any) -> None:
    """`ph_send_batch`, checking that every event was accepted."""
    result = sidecar.result("ph_send_batch", {"batch": batch, **params})
    assert result["accepted"] == len(batch), result


def finish(sidecar: SidecarProcess) -> None:
    """Close stdin and check the clean exit."""
    assert sidecar.stop() == 0, sidecar.stderr


def batch_of(request: ReceivedRequest) -> list[dict[str, Any]]:
    """The events a `/batch/` request carried."""
    assert isinstance(request.payload, dict), request
    batch: list[dict[str, Any]] = request.payload["batch"]
    return batch


def queued_rows(data_dir: Path) -> list[tuple[str, str]]:
    """(api_key, uuid) of each row left in the queue table, read straight from the file."""
    db = sqlite3.connect(data_dir / "telemetry.db")
    try:
        rows = db.execute("SELECT api_key, body FROM ph_event_queue ORDER BY id").fetchall()
    finally:
        db.close()
    return [(key, json.loads(body)["uuid"]) for key, body in rows]


# ---- stopping ----------------------------------------------------------------------------------


def test_eof_exits_0_and_next_start_drains_with_the_original_key(
    capture, offline_port, data_dir, spawn_sidecar
) -> None:
    """EOF exits 0 keeping the queue; the next start delivers it unasked, with its original key."""
    batch = numbered(3, with_uuids=True)
    first = spawn_sidecar(offline_url(offline_port), *FAST_RETRIES, api_key="phc_default_a")
    send(first, batch, api_key="phc_queued_key")
    finish(first)
    assert queued_rows(data_dir) == [("phc_queued_key", e["uuid"]) for e in batch]

    second = spawn_sidecar(capture.url, api_key="phc_default_b")
    delivered = capture.wait_for_events(3, timeout=GUARD_S)
    assert second.result("ph_flush", {"timeout": GUARD_S})["queued"] == 0
    finish(second)

    assert [e["uuid"] for e in delivered] == [e["uuid"] for e in batch]
    assert {r.payload["api_key"] for r in capture.requests} == {"phc_queued_key"}
    assert queued_rows(data_dir) == []


def test_shutdown_answers_ok_then_exits_0(offline_port, data_dir, spawn_sidecar) -> None:
    """`shutdown` is answered {"ok": true} as the last line out, then the process exits 0."""
    sidecar = spawn_sidecar(offline_url(offline_port), *FAST_RETRIES, api_key=TEST_KEY)
    batch = numbered(2, with_uuids=True)
    send(sidecar, batch)
    assert sidecar.call("shutdown") == {"jsonrpc": "2.0", "result": {"ok": True}, "id": 2}
    assert sidecar.wait() == 0, sidecar.stderr
    assert json.loads(sidecar.raw_stdout[-1])["result"] == {"ok": True}
    assert [u for _, u in queued_rows(data_dir)] == [e["uuid"] for e in batch]


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0(offline_port, data_dir, spawn_sidecar, signum: signal.Signals) -> None:
    """SIGTERM and SIGINT each make the process exit 0 with its queue kept on disk."""
    sidecar = spawn_sidecar(offline_url(offline_port), *FAST_RETRIES, api_key=TEST_KEY)
    send(sidecar, numbered(2))
    sidecar.process.send_signal(signum)
    assert sidecar.wait() == 0, sidecar.stderr
    assert signum.name in sidecar.stderr
    assert len(queued_rows(data_dir)) == 2


# ---- restarts and crashes ----------------------------------------------------------------------


def test_counters_persist_across_restarts(capture, offline_port, spawn_sidecar) -> None:
    """delivered and the dropped counters keep their values across restarts."""
    first = spawn_sidecar(offline_url(offline_port), *FAST_RETRIES, "--max-queue", "2",
                          api_key=TEST_KEY)
    send(first, numbered(5))  # 3 pushed out by the queue bound
    finish(first)

    second = spawn_sidecar(capture.url, *FAST_RETRIES, api_key=TEST_KEY)
    poison = event("poison", properties={"$cookieless_mode": "yes"})
    send(second, [poison])
    assert second.result("ph_flush", {"timeout": GUARD_S})["queued"] == 0
    status = second.result("ph_status")
    finish(second)
    assert status["delivered"] == 2
    assert status["dropped"]["overflow"] == 3
    assert status["dropped"]["rejected"] == 1

    third = spawn_sidecar(capture.url, api_key=TEST_KEY)
    restarted = third.result("ph_status")
    finish(third)
    assert restarted["delivered"] == 2
    assert restarted["dropped"] == {
        "overflow": 3, "rejected": 1, "retries_exhausted": 0, "opt_out": 0
    }
    assert restarted["queued"] == 0
    assert n_values(capture.events) == [3, 4]


def test_leases_of_a_killed_process_are_taken_back_at_start(capture, spawn_sidecar) -> None:
    """A SIGKILLed process's leases are taken back by the next start, which delivers the events."""
    capture.script(Hang())
    batch = numbered(3, with_uuids=True)
    first = spawn_sidecar(capture.url, api_key=TEST_KEY)
    send(first, batch)
    hung = capture.wait_for_requests(1, timeout=GUARD_S)[0]
    assert [e["uuid"] for e in batch_of(hung)] == [e["uuid"] for e in batch]
    first.kill()

    second = spawn_sidecar(capture.url, api_key=TEST_KEY)
    delivered = capture.wait_for_events(3, timeout=GUARD_S)
    finish(second)

    assert [e["uuid"] for e in delivered] == [e["uuid"] for e in batch]
    assert "took back 3 events" in second.stderr


def test_clean_exit_mid_request_hands_the_leases_back(capture, spawn_sidecar) -> None:
    """A process leaving mid-request hands its leases to a live process on the same folder."""
    capture.script(Hang())
    batch = numbered(3, with_uuids=True)
    leaving = spawn_sidecar(capture.url, api_key=TEST_KEY)
    send(leaving, batch)
    capture.wait_for_requests(1, timeout=GUARD_S)
    staying = spawn_sidecar(capture.url, api_key=TEST_KEY)
    assert staying.result("ph_status")["queued"] == 3  # started while the leases were live
    finish(leaving)

    # The staying process takes the rows over as they are handed back, by itself or for the
    # flush, whichever comes first: the flush returns with the queue empty either way.
    flushed = staying.result("ph_flush", {"timeout": GUARD_S})
    status = staying.result("ph_status")
    finish(staying)

    assert flushed["queued"] == 0
    assert status["delivered"] == 3
    assert [e["uuid"] for e in capture.events] == [e["uuid"] for e in batch]


def test_request_on_the_wire_at_exit_is_answered_not_resent(
    capture, spawn_sidecar, data_dir
) -> None:
    """A request in flight when stdin closes gets its answer: no resend at the next start."""
    capture.script(Delay(0.2))
    batch = numbered(3, with_uuids=True)
    leaving = spawn_sidecar(capture.url, api_key=TEST_KEY)
    send(leaving, batch)
    capture.wait_for_arrivals(1, timeout=GUARD_S)  # on the wire, answer not yet sent
    finish(leaving)

    again = spawn_sidecar(capture.url, api_key=TEST_KEY)
    status = again.result("ph_status")
    finish(again)

    assert status["queued"] == 0
    assert status["delivered"] == 3
    assert [e["uuid"] for e in capture.events] == [e["uuid"] for e in batch]
    assert len(capture.requests) == 1


def test_two_processes_on_one_folder_never_send_an_event_twice(capture, spawn_sidecar) -> None:
    """Two processes on one folder deliver concurrently without sending any uuid twice."""
    args = (*FAST_RETRIES, "--batch-size", "7")
    left = spawn_sidecar(capture.url, *args, api_key=TEST_KEY)
    right = spawn_sidecar(capture.url, *args, api_key=TEST_KEY)
    for round_ in range(6):
        send(left, numbered(20, start=1000 * round_))
        send(right, numbered(20, start=1000 * round_ + 500))
    delivered = capture.wait_for_events(240, timeout=GUARD_S)
    # Each flush returns once its process has nothing left in flight.
    left.result("ph_flush", {"timeout": GUARD_S})
    right.result("ph_flush", {"timeout": GUARD_S})
    status = left.result("ph_status")
    finish(left)
    finish(right)

    assert status["queued"] == 0
    assert status["delivered"] == 240
    uuids = [e["uuid"] for e in capture.events]
    assert len(uuids) == len(set(uuids)) == 240
    assert len(delivered) == 240
    assert all(len(batch_of(r)) <= 7 for r in capture.requests)
    for sidecar in (left, right):
        assert "Traceback" not in sidecar.stderr


# ---- what the process writes -------------------------------------------------------------------


def test_api_keys_never_reach_stdout_or_stderr(capture, offline_port, spawn_sidecar,
                                               tmp_path) -> None:
    """No api key (option, environment or call) reaches stdout or stderr, even at debug level."""
    option_key = "phc_secret_option_key_1234"
    call_key = "phc_secret_call_key_5678"
    env_key = "phc_secret_env_key_9012"
    capture.script(401)
    online = spawn_sidecar(capture.url, *FAST_RETRIES, "--log-level", "debug",
                           api_key=option_key)
    send(online, numbered(2))  # answered 401: held
    send(online, numbered(2), api_key=call_key)  # delivered
    capture.wait_for_events(2, timeout=GUARD_S)
    assert online.result("ph_flush", {"timeout": GUARD_S})["queued"] == 2
    bad = online.call("ph_send_batch", {"batch": numbered(1), "api_key": call_key, "key": 1})
    assert bad["error"]["code"] == -32602
    finish(online)

    offline = spawn_sidecar(
        offline_url(offline_port), *FAST_RETRIES, "--log-level", "debug",
        env={"POSTHOG_API_KEY": env_key}, folder=tmp_path / "offline",
    )
    send(offline, numbered(2))
    assert offline.result("ph_flush", {"timeout": 0.5})["delivered"] == 0
    finish(offline)

    assert "HTTP 401" in online.stderr  # the failures were logged ...
    assert "cannot connect" in offline.stderr
    for sidecar in (online, offline):  # ... without a key in them
        for secret in (option_key, call_key, env_key):
            assert secret not in sidecar.stderr
            assert secret.encode() not in sidecar.stdout


def test_stdout_carries_only_json_rpc_responses(offline_port, spawn_sidecar) -> None:
    """Whatever comes in, every stdout line is ASCII JSON holding only JSON-RPC 2.0 responses."""
    sidecar = spawn_sidecar(offline_url(offline_port), *FAST_RETRIES, "--log-level", "debug",
                            api_key=TEST_KEY)
    sidecar.send_raw(b"this is not json\n")
    assert sidecar.response_to(None)["error"]["code"] == -32700
    sidecar.send({"jsonrpc": "2.0", "method": "ph_status"})  # a notification: no answer
    sidecar.send([
        {"jsonrpc": "2.0", "method": "ping", "id": "a"},
        {"jsonrpc": "2.0", "method": "nö_such_method", "id": "b"},
    ])
    assert sidecar.response_to("a")["result"]["version"]
    assert sidecar.response_to("b")["error"]["code"] == -32601
    answer = sidecar.result("ph_send_batch", {"batch": [event("café"), {"event": "ünnamed"}]})
    assert answer["accepted"] == 1
    assert answer["rejected"][0]["index"] == 1
    assert sidecar.result("ph_flush", {"timeout": 0.2})["delivered"] == 0
    assert sidecar.result("shutdown") == {"ok": True}
    assert sidecar.wait() == 0, sidecar.stderr

    lines = sidecar.raw_stdout
    assert len(lines) == 5  # parse error, the batch answer, send, flush, shutdown
    for line in lines:
        assert line.endswith(b"\n")
        assert line.isascii()
        message = json.loads(line)
        for item in message if isinstance(message, list) else [message]:
            assert item["jsonrpc"] == "2.0"
            assert ("result" in item) != ("error" in item)
            assert "id" in item
            assert "method" not in item


STRAY_HOOK = '''
import os, sys, warnings

def _stray(event, args):
    if event == "sqlite3.connect":
        print("STRAY-PRINT")
        os.write(1, b"STRAY-FD1\\n")
        warnings.warn("STRAY-WARNING")

sys.addaudithook(_stray)
'''


@pytest.mark.skipif("SIDECAR_COMMAND" in os.environ, reason="needs the source interpreter")
def test_stray_output_inside_the_process_goes_to_stderr(offline_port, spawn_sidecar,
                                                        tmp_path) -> None:
    """A print, a raw fd 1 write and a warning inside the process land on stderr, not stdout."""
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "sitecustomize.py").write_text(STRAY_HOOK)
    sidecar = spawn_sidecar(
        offline_url(offline_port), "--log-level", "debug", api_key=TEST_KEY,
        env={"PYTHONPATH": str(hooks)},
    )
    assert sidecar.result("ping") == {"version": __version__}
    finish(sidecar)

    for marker in ("STRAY-PRINT", "STRAY-FD1", "STRAY-WARNING"):
        assert marker in sidecar.stderr
        assert marker.encode() not in sidecar.stdout
    assert "ready; capture host" in sidecar.stderr  # the log itself is on stderr too
    assert sidecar.stdout.count(b"\n") == 1  # the ping's answer, nothing else
    assert json.loads(sidecar.stdout)["result"] == {"version": __version__}


def test_database_is_private(capture, data_dir, spawn_sidecar) -> None:
    """The data folder the sidecar creates is 0700 and its database files 0600."""
    sidecar = spawn_sidecar(capture.url, api_key=TEST_KEY)
    send(sidecar, numbered(1))
    capture.wait_for_events(1, timeout=GUARD_S)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    files = sorted(p.name for p in data_dir.iterdir())
    assert "telemetry.db" in files
    for name in files:
        assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
    finish(sidecar)
    assert stat.S_IMODE((data_dir / "telemetry.db").stat().st_mode) == 0o600
