"""No orphans: when whatever started the sidecar's Python process is killed, that process exits.

Tauri's `child.kill()` SIGKILLs its direct child only, and keeps its end of the stdin pipe, so no
end-of-file arrives. The direct child is the one-file bootloader for the shipped binary (its
Python program is a grandchild), or some launcher in front of `python -m sidecar`. Each test
kills the direct child with SIGKILL while holding stdin open, and shows that every process
below it goes away by itself, through the clean shutdown, with the acknowledged events on disk.
"""

from __future__ import annotations

import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from sidecar_dev.driver import SidecarProcess, sidecar_command
from sidecar_dev.harness import TEST_KEY, numbered, wait_until

GUARD_S = 20.0  # hang guard: the watch polls every second and shutdown takes well under 2 s
# A launcher that stays in front of its command, as a shell wrapper or process manager would.
LAUNCHER = "import subprocess, sys; subprocess.run(sys.argv[1:])"


def frozen_binary() -> str | None:
    """The frozen binary under test (`SIDECAR_COMMAND=dist/telemetry-sidecar-<triple>`), if any."""
    command = sidecar_command()
    if len(command) == 1 and Path(command[0]).name.startswith("telemetry-sidecar-"):
        return command[0]
    return None


def queued_count(data_dir: Path) -> int:
    """Rows in the queue table, read straight from the file."""
    db = sqlite3.connect(data_dir / "telemetry.db")
    try:
        (count,) = db.execute("SELECT count(*) FROM ph_event_queue").fetchone()
    finally:
        db.close()
    return int(count)


def kill_direct_child_and_wait(sidecar: SidecarProcess) -> list[psutil.Process]:
    """SIGKILL the spawned process; return the processes below it that are still alive after
    the guard (normally none)."""
    below = psutil.Process(sidecar.process.pid).children(recursive=True)
    assert below, "the launcher should have a child by now"
    sidecar.process.kill()  # SIGKILL the direct child only; stdin stays open on our side
    sidecar.process.wait(GUARD_S)
    _, alive = psutil.wait_procs(below, timeout=GUARD_S)
    for process in alive:  # do not leak into the next test when failing
        process.kill()
    return alive


def wait_for_stderr_end(sidecar: SidecarProcess) -> str:
    """Everything the process tree logged, once the shutdown's last line ("stopped") is there."""
    wait_until(lambda: "stopped" in sidecar.stderr, "the end of the shutdown cascade", GUARD_S,
               explain=lambda: sidecar.stderr)
    return sidecar.stderr


def test_source_sidecar_exits_when_its_launcher_is_killed(
    offline_port, data_dir, monkeypatch
) -> None:
    """`python -m sidecar` behind a SIGKILLed launcher notices, stops cleanly and keeps events."""
    command = [sys.executable, "-c", LAUNCHER, sys.executable, "-m", "sidecar"]
    monkeypatch.setenv("SIDECAR_COMMAND", shlex.join(command))
    with SidecarProcess(data_dir, f"http://127.0.0.1:{offline_port}", api_key=TEST_KEY) as sidecar:
        result = sidecar.result("ph_send_batch", {"batch": numbered(3)})
        assert result["accepted"] == 3
        assert kill_direct_child_and_wait(sidecar) == []
        stderr = wait_for_stderr_end(sidecar)
    assert "parent process" in stderr and "is gone; stopping" in stderr, stderr
    assert "stopped" in stderr, stderr  # the end of the shutdown cascade: the store was closed
    assert queued_count(data_dir) == 3


@pytest.mark.skipif(frozen_binary() is None, reason="set SIDECAR_COMMAND to the frozen binary")
def test_frozen_sidecar_exits_when_its_bootloader_is_killed(offline_port, data_dir) -> None:
    """SIGKILL of the one-file bootloader leaves no process of the binary, nor its files."""
    with SidecarProcess(data_dir, f"http://127.0.0.1:{offline_port}", api_key=TEST_KEY) as sidecar:
        result = sidecar.result("ph_send_batch", {"batch": numbered(3)})
        assert result["accepted"] == 3
        (program,) = psutil.Process(sidecar.process.pid).children(recursive=True)
        unpacked = program.environ().get("_PYI_APPLICATION_HOME_DIR")
        assert kill_direct_child_and_wait(sidecar) == []
        stderr = wait_for_stderr_end(sidecar)
    # Linux: the kernel's parent-death signal; elsewhere the parent watch.
    assert "received SIGTERM" in stderr or "is gone; stopping" in stderr, stderr
    assert "stopped" in stderr, stderr
    assert queued_count(data_dir) == 3
    if sys.platform != "win32" and unpacked:
        assert not Path(unpacked).exists(), "the orphaned program left its unpacked bundle"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_parent_death_signal_reaches_the_child() -> None:
    """`set_parent_death_signal` makes Linux deliver SIGTERM when the parent dies."""
    child = (
        "import signal, sys, time\n"
        "from sidecar.process.parent import set_parent_death_signal\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM', flush=True), sys.exit(0)))\n"
        "assert set_parent_death_signal()\n"
        "print('armed', flush=True)\n"
        "time.sleep(60)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-c", child],
        stdout=subprocess.PIPE,
    )
    try:
        assert launcher.stdout is not None
        assert launcher.stdout.readline() == b"armed\n"
        (grandchild,) = psutil.Process(launcher.pid).children()
        launcher.kill()
        launcher.wait(GUARD_S)
        grandchild.wait(GUARD_S)  # well before its 60 s sleep ends
        assert launcher.stdout.read() == b"SIGTERM\n"
    finally:
        if launcher.poll() is None:
            launcher.kill()
