"""The shared test machinery: the driver's own errors, its unread mode, reaping, the harness.

Stand-in processes (`python -c ...`, which ignores the sidecar options the driver appends) play
a sidecar that dies, stays silent, or writes something that is not an answer; the real sidecar
plays itself where the answer matters.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from sidecar_dev.driver import (
    AnswerTimeout,
    DriverError,
    ErrorAnswer,
    ProtocolViolation,
    SidecarDied,
    SidecarProcess,
    StillRunning,
)
from sidecar_dev.harness import (
    OFFLINE_HOST,
    WaitTimeout,
    event_uuid,
    number_of,
    numbered,
    reaping,
    wait_until,
)


def stand_in(tmp_path: Path, code: str, *, read_ahead: bool = True) -> SidecarProcess:
    """A process running `code` in place of the sidecar, driven like one."""
    return SidecarProcess(tmp_path, OFFLINE_HOST, command=[sys.executable, "-c", code],
                          read_ahead=read_ahead)


def test_a_process_that_exits_before_answering_raises_sidecar_died(tmp_path: Path) -> None:
    """Reading from a process that exited raises SidecarDied with its exit code and stderr."""
    code = "import sys; sys.stderr.write('bye'); sys.exit(3)"
    with stand_in(tmp_path, code) as proc, pytest.raises(SidecarDied) as died:
        proc.call("ping")
    assert "exit code 3" in str(died.value)
    assert "bye" in str(died.value)
    assert isinstance(died.value, DriverError) and not isinstance(died.value, AssertionError)


def test_writing_to_a_process_that_is_gone_raises_sidecar_died(tmp_path: Path) -> None:
    """A write into a closed pipe is SidecarDied, not a bare BrokenPipeError."""
    with stand_in(tmp_path, "import os; os.close(0)") as proc:
        assert proc.wait() == 0
        with pytest.raises(SidecarDied):
            for _ in range(100):  # the first write may still fit in the pipe's buffer
                proc.send_raw(b"x" * 65536)


def test_a_silent_process_raises_answer_timeout(tmp_path: Path) -> None:
    """No answer while the process still runs is AnswerTimeout; reaping then ends it."""
    with stand_in(tmp_path, "import time; time.sleep(600)") as proc:
        with pytest.raises(AnswerTimeout) as silent:
            proc.read_line(timeout=0.1)
        assert "still running" in str(silent.value)
    assert not proc.running


def test_a_line_that_is_not_an_answer_raises_protocol_violation(tmp_path: Path) -> None:
    """Text on stdout, or JSON without an id, is a ProtocolViolation."""
    with stand_in(tmp_path, "print('hello'); print('{\"no\": \"id\"}')") as proc:
        with pytest.raises(ProtocolViolation, match="not JSON"):
            proc.read_message()
        with pytest.raises(ProtocolViolation, match="not a response"):
            proc.response_to(1)


def test_stop_of_a_process_that_ignores_eof_raises_still_running(tmp_path: Path) -> None:
    """A process that does not exit after stdin closes is StillRunning; reap kills it."""
    with stand_in(tmp_path, "import time; time.sleep(600)") as proc, pytest.raises(StillRunning):
        proc.stop(timeout=0.1)
    assert not proc.running


def test_result_of_an_error_answer_raises_error_answer(tmp_path: Path) -> None:
    """`result` of a real error response raises ErrorAnswer carrying the response."""
    with SidecarProcess(tmp_path / "data", OFFLINE_HOST) as proc:
        with pytest.raises(ErrorAnswer) as refused:
            proc.result("no_such_method")
        assert refused.value.response["error"]["code"] == -32601
        assert proc.stop() == 0


def test_without_read_ahead_only_the_lines_asked_for_are_read(tmp_path: Path) -> None:
    """With read_ahead=False the driver takes one line per read; the rest stay in the pipe."""
    code = "import sys, time\nfor n in range(3): print(n, flush=True)\ntime.sleep(600)"
    with stand_in(tmp_path, code, read_ahead=False) as proc:
        assert proc.read_line() == b"0\n"
        assert proc.raw_stdout == [b"0\n"]
        assert proc.read_line() == b"1\n"
        assert proc.raw_stdout == [b"0\n", b"1\n"]


def test_reaping_kills_what_runs_and_keeps_stderr(tmp_path: Path) -> None:
    """Every process in a `reaping()` list ends with the block; its stderr stays readable."""
    code = "import sys, time; sys.stderr.write('still here'); sys.stderr.flush(); time.sleep(600)"
    with reaping() as started:
        proc = stand_in(tmp_path, code)
        started.append(proc)
        wait_until(lambda: "still here" in proc.stderr, "the stand-in's stderr")
    assert not proc.running
    assert proc.stderr == "still here"


def test_wait_until_raises_its_own_timeout_with_the_explanation() -> None:
    """A condition that never comes true raises WaitTimeout naming it and what `explain` says."""
    with pytest.raises(WaitTimeout, match="the impossible") as gave_up:
        wait_until(lambda: False, "the impossible", timeout=0.05, explain=lambda: "because")
    assert "because" in str(gave_up.value)


def test_numbered_events_carry_their_number_in_order_and_in_the_uuid() -> None:
    """`numbered` counts from `start`; with uuids, `number_of` reads each number back."""
    events = numbered(3, 40, with_uuids=True, padding=5, scenario="s")
    assert [e["properties"]["n"] for e in events] == [40, 41, 42]
    assert [number_of(e["uuid"]) for e in events] == [40, 41, 42]
    assert events[0]["properties"] == {"n": 40, "scenario": "s", "pad": "xxxxx"}
    assert event_uuid(41) == events[1]["uuid"]
    assert "uuid" not in numbered(1)[0]
