"""Storage faults, with the real process: a damaged database at start, a full disk at runtime,
a read-only data folder, and a data folder that does not exist yet.

The full-disk and read-only cases mount a 2 MiB tmpfs (and a read-only bind mount of it), which
needs root; where mounting is refused the test is skipped and says why. Sleeps here only give
a failure the chance to happen; nothing asserts on timing.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from crashkit import (
    accounts,
    delivery_counts,
    drain,
    queued_numbers,
    quick_check,
    spawn,
)

from sidecar_dev.capture import CaptureServer, Delay
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import FAST_RETRIES, GUARD_S, free_port, numbered, reaping

ERROR_STORAGE_UNAVAILABLE = -32001
BATCH_SIZE = 50


def offline_host() -> str:
    """A loopback capture host that refuses connections."""
    return f"http://127.0.0.1:{free_port()}"


def send(sidecar: SidecarProcess, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """`ph_send_batch`, checking every event was accepted."""
    answer = sidecar.result("ph_send_batch", {"batch": batch})
    assert answer["accepted"] == len(batch), answer
    return answer


def storage_error(sidecar: SidecarProcess, batch: list[dict[str, Any]]) -> dict[str, Any]:
    """`ph_send_batch` expected to fail with -32001; returns the error object."""
    response = sidecar.call("ph_send_batch", {"batch": batch})
    assert "error" in response, response
    error: dict[str, Any] = response["error"]
    assert error["code"] == ERROR_STORAGE_UNAVAILABLE, error
    return error


def corrupt_files(data_dir: Path) -> list[Path]:
    """Files set aside as damaged, with their -wal and -shm."""
    return sorted(data_dir.glob("telemetry.db.corrupt-*"))


# ---- a small filesystem ------------------------------------------------------------------------


def _mount(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["mount", *args], capture_output=True, text=True, check=False)


def _unmount(path: Path) -> None:
    if subprocess.run(["umount", str(path)], capture_output=True, check=False).returncode:
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for this test; skipped where mounting is not allowed."""
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    if shutil.which("mount") is None:
        pytest.skip("no mount command")
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    done = _mount("-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point))
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        _unmount(mount_point)


def fill(path: Path) -> int:
    """Write `path` until the filesystem is full; returns the bytes written."""
    written = 0
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        while True:
            written += os.write(fd, b"\xa5" * 4096)
    except OSError as exc:
        assert exc.errno == 28, exc  # ENOSPC
    finally:
        os.close(fd)
    return written


# ---- damaged database at start -----------------------------------------------------------------


def _garbage_header(data: bytearray, rng: random.Random) -> bytearray:
    data[0:100] = rng.randbytes(100)
    return data


def _truncated_mid_page(data: bytearray, rng: random.Random) -> bytearray:
    pages = len(data) // 4096
    return data[: (pages // 2) * 4096 + 1234]


def _truncated_in_header(data: bytearray, rng: random.Random) -> bytearray:
    return data[:60]


def _garbage_pages(data: bytearray, rng: random.Random) -> bytearray:
    pages = len(data) // 4096
    for page in range(pages // 3, pages // 3 + 3):
        data[page * 4096 : (page + 1) * 4096] = rng.randbytes(4096)
    return data


# Each damage, and how many events the killed run leaves in the WAL. A WAL that holds page 1
# (any commit that grows the file writes it) would mend a garbage header, as SQLite reads
# pages from the WAL first: header damage is tried with a WAL that holds no frames.
DAMAGE = {
    "garbage-header": (_garbage_header, 0),
    "truncated-in-header": (_truncated_in_header, 0),
    "truncated-mid-page": (_truncated_mid_page, 50),
    "garbage-pages": (_garbage_pages, 50),
}


def _database_with_rows_and_wal(
    data_dir: Path, started: list[SidecarProcess], wal_events: int
) -> None:
    """A valid queue: 400 rows checkpointed into the file, then a crash that leaves -wal and
    -shm behind, the -wal holding `wal_events` more events (or no frame at all)."""
    host = offline_host()
    first = spawn(started, data_dir, host, "--max-queue", "100000")
    send(first, numbered(400, 0, with_uuids=True, padding=500))
    assert first.stop() == 0, first.stderr
    db = data_dir / "telemetry.db"
    if wal_events:
        second = spawn(started, data_dir, host, "--max-queue", "100000")
        send(second, numbered(wal_events, 400, with_uuids=True, padding=500))
        second.kill()
    else:
        # A sidecar writes at once (its sender leases rows): a reader that dies leaves the
        # -wal and -shm without a frame.
        reader = (
            "import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('SELECT COUNT(*) FROM ph_event_queue').fetchall(); os._exit(0)"
        )
        subprocess.run([sys.executable, "-c", reader, str(db)], check=True)
    assert (Path(f"{db}-wal").stat().st_size > 0) == bool(wal_events)
    assert Path(f"{db}-shm").exists()
    assert quick_check(db) == "ok"


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_damaged_database_is_set_aside_whole_and_a_fresh_queue_works(
    damage: str, tmp_path: Path
) -> None:
    """A damaged database is set aside untouched with -wal/-shm; a fresh queue works, no loop."""
    data_dir = tmp_path / "data"
    db = data_dir / "telemetry.db"
    with CaptureServer() as server, reaping() as started:
        spoil, wal_events = DAMAGE[damage]
        _database_with_rows_and_wal(data_dir, started, wal_events)
        damaged = spoil(bytearray(db.read_bytes()), random.Random(damage))
        db.write_bytes(bytes(damaged))
        # The -shm is only an index SQLite may rebuild; the file and its WAL hold the data.
        originals = {suffix: Path(f"{db}{suffix}").read_bytes() for suffix in ("", "-wal")}

        sidecar = spawn(started, data_dir, server.url, *FAST_RETRIES)
        status = sidecar.result("ph_status")
        aside = Path(status["quarantined_db"])
        assert aside.parent == data_dir
        assert aside.name.startswith("telemetry.db.corrupt-")
        # The damaged set is kept as it was found: nothing checkpointed into it, no file lost.
        for suffix, content in originals.items():
            assert Path(f"{aside}{suffix}").read_bytes() == content, suffix
        assert Path(f"{aside}-shm").exists()
        assert status["queued"] == 0
        # The fresh queue works: events are stored and delivered.
        send(sidecar, numbered(120, 1000, with_uuids=True))
        assert drain(sidecar)["queued"] == 0
        assert sorted(delivery_counts(server.events)) == list(range(1000, 1120))
        assert sidecar.result("ph_status")["quarantined_db"] == str(aside)
        assert sidecar.stop() == 0, sidecar.stderr

        # No crash loop: the fresh database is fine, so the next start keeps and uses it.
        again = spawn(started, data_dir, server.url, *FAST_RETRIES)
        status = again.result("ph_status")
        assert status["quarantined_db"] is None
        assert status["delivered"] == 120  # the counters of the fresh queue carried over
        send(again, numbered(5, 2000, with_uuids=True))
        assert drain(again)["queued"] == 0
        assert again.stop() == 0, again.stderr
        assert sorted(delivery_counts(server.events)) == [*range(1000, 1120), *range(2000, 2005)]
    assert corrupt_files(data_dir) == [Path(f"{aside}{s}") for s in ("", "-shm", "-wal")]
    assert quick_check(db) == "ok"


# ---- full disk ---------------------------------------------------------------------------------


def test_full_disk_refuses_new_batches_keeps_the_queue_and_recovers_without_restart(
    small_fs: Path,
) -> None:
    """A full disk answers -32001, keeps every stored event, and recovers without a restart."""
    data_dir = small_fs / "data"
    db = data_dir / "telemetry.db"
    with reaping() as started:
        sidecar = spawn(started, data_dir, offline_host(), "--max-queue", "100000", *FAST_RETRIES)
        send(sidecar, numbered(200, 0, with_uuids=True, padding=500))
        filler = small_fs / "filler"
        fill(filler)
        refusals = [
            storage_error(sidecar, numbered(300, 1000 + 300 * i, with_uuids=True, padding=500))
            for i in range(3)
        ]
        for error in refusals:
            assert error["message"] == "Storage unavailable"
            assert "full" in error["data"], error
        assert sidecar.result("ping")  # still up and answering
        status = sidecar.result("ph_status")
        assert status["queued"] == 200
        filler.unlink()
        assert send(sidecar, numbered(300, 5000, with_uuids=True, padding=500))["queued"] == 500
        assert sidecar.stop() == 0, sidecar.stderr
    assert quick_check(db) == "ok"
    assert queued_numbers(db) == set(range(200)) | set(range(5000, 5300))
    final = accounts(db)
    assert final.inserted == 500
    assert final.balanced


def test_disk_filling_during_a_delivery_does_not_kill_the_process(small_fs: Path) -> None:
    """A disk filling while a batch is out neither kills the process nor loses an event."""
    # The queue cannot record the batch's fate; once space returns, at most that batch re-sends.
    data_dir = small_fs / "data"
    with CaptureServer() as server, reaping() as started:
        server.script(Delay(1.0))  # the first request waits on the server while we fill
        sidecar = spawn(started, data_dir, server.url, "--max-queue", "100000", *FAST_RETRIES)
        send(sidecar, numbered(200, 0, with_uuids=True, padding=500))
        server.wait_for_arrivals(1, timeout=GUARD_S)
        filler = small_fs / "filler"
        fill(filler)
        server.wait_for_requests(1, timeout=GUARD_S)
        time.sleep(1.0)  # the sidecar now fails to delete the delivered rows
        assert sidecar.process.poll() is None, sidecar.stderr
        assert sidecar.result("ping")
        storage_error(sidecar, numbered(300, 1000, with_uuids=True, padding=500))
        filler.unlink()
        send(sidecar, numbered(100, 2000, with_uuids=True))
        status = drain(sidecar)
        assert status["queued"] == 0, status
        assert sidecar.stop() == 0, sidecar.stderr
        counts = delivery_counts(server.events)
    assert set(counts) == set(range(200)) | set(range(2000, 2100))
    assert sum(c - 1 for c in counts.values()) <= BATCH_SIZE
    final = accounts(data_dir / "telemetry.db")
    assert final.delivered == final.inserted == 300
    assert final.balanced


# ---- read-only data folder ---------------------------------------------------------------------


def test_read_only_data_folder_refuses_batches_until_writable_without_restart(
    small_fs: Path, tmp_path: Path
) -> None:
    """A read-only data folder answers -32001 and works once writable, without a restart."""
    # At start only: a mount cannot turn read-only under a process writing to it (EBUSY).
    data_dir = small_fs / "data"
    with reaping() as started:
        first = spawn(started, data_dir, offline_host(), *FAST_RETRIES)
        send(first, numbered(100, 0, with_uuids=True))
        assert first.stop() == 0, first.stderr
        view = tmp_path / "view"
        view.mkdir()
        if _mount("--bind", str(data_dir), str(view)).returncode:
            pytest.skip("cannot bind-mount here")
        try:
            done = _mount("-o", "remount,bind,ro", str(view))
            if done.returncode:
                pytest.skip(f"cannot make a bind mount read-only: {done.stderr.strip()}")
            sidecar = spawn(started, view, offline_host(), *FAST_RETRIES)
            assert sidecar.result("ping")
            error = storage_error(sidecar, numbered(10, 100, with_uuids=True))
            assert "Read-only file system" in error["data"], error
            assert sidecar.process.poll() is None
            done = _mount("-o", "remount,bind,rw", str(view))
            assert done.returncode == 0, done.stderr
            assert send(sidecar, numbered(10, 200, with_uuids=True))["queued"] == 110
            assert sidecar.result("ph_status")["quarantined_db"] is None
            assert sidecar.stop() == 0, sidecar.stderr
        finally:
            _unmount(view)
    assert queued_numbers(data_dir / "telemetry.db") == set(range(100)) | set(range(200, 210))


# ---- a data folder that does not exist yet -----------------------------------------------------


def test_nested_data_folder_is_created_private(tmp_path: Path) -> None:
    """A data folder that does not exist yet is created (0700, database 0600) and works."""
    data_dir = tmp_path / "not" / "yet" / "there" / "data"
    with reaping() as started:
        sidecar = spawn(started, data_dir, offline_host())
        send(sidecar, numbered(3, 0, with_uuids=True))
        assert sidecar.stop() == 0, sidecar.stderr
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "telemetry.db").stat().st_mode) == 0o600
    assert queued_numbers(data_dir / "telemetry.db") == {0, 1, 2}
