"""The parent watch and the one-file bundle clean-up, without killing anything real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from sidecar.process import parent
from sidecar.process.parent import OnefileBundle, parent_check, watch_parent

GUARD_S = 10.0


def not_our_parent() -> int:
    """A pid that is alive and is not this process's parent (this process itself)."""
    return os.getpid()


async def test_a_live_parent_keeps_the_watch_polling(autojump_clock: trio.abc.Clock) -> None:
    """While the parent lives, the watch keeps polling and never sets the stop event."""
    stopping = trio.Event()
    with trio.move_on_after(3600):
        await watch_parent(stopping, ppid=os.getppid(), use_pdeathsig=False)
    assert not stopping.is_set()


async def test_a_lost_parent_sets_the_stop_event() -> None:
    """A parent that is no longer ours (re-parented, or gone) stops the app at the first poll."""
    stopping = trio.Event()
    with trio.fail_after(GUARD_S):
        await watch_parent(stopping, ppid=not_our_parent(), use_pdeathsig=False)
    assert stopping.is_set()


async def test_no_parent_to_watch_returns_at_once() -> None:
    """Started by init itself (ppid 1), there is nothing to watch and nothing is stopped."""
    stopping = trio.Event()
    with trio.fail_after(GUARD_S):
        await watch_parent(stopping, ppid=1)
    assert not stopping.is_set()


async def test_the_watch_ends_once_the_app_is_stopping(autojump_clock: trio.abc.Clock) -> None:
    """A stop from elsewhere ends the watch at its next wake-up."""
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: watch_parent(stopping, ppid=os.getppid(), use_pdeathsig=False))
        await trio.sleep(5)
        stopping.set()
    # Reaching here means the watch returned by itself.


def test_windows_check_compares_creation_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where pids are not re-parented, a dead process (or a reused pid) reads as a lost parent."""
    monkeypatch.setattr(sys, "platform", "win32")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        alive = parent_check(child.pid)
        assert alive()
    finally:
        child.kill()
        child.wait(GUARD_S)
    assert not alive()


def test_not_frozen_means_no_bootloader() -> None:
    """From source there is no bootloader parent and no bundle to clean up."""
    assert not parent.parent_is_onefile_bootloader(os.getppid())
    assert OnefileBundle.current() is None


@pytest.mark.skipif(sys.platform == "win32", reason="a running program's files cannot be deleted")
def test_bundle_is_removed_only_when_its_bootloader_is_gone(tmp_path: Path) -> None:
    """The unpacked folder stays while the bootloader lives, and goes once it is gone."""
    unpacked = tmp_path / "_MEI12345"
    unpacked.mkdir()
    (unpacked / "libpython.so").write_bytes(b"x")

    assert not OnefileBundle(unpacked, os.getppid()).remove_if_orphaned()
    assert unpacked.exists()
    assert OnefileBundle(unpacked, not_our_parent()).remove_if_orphaned()
    assert not unpacked.exists()


def test_bundle_clean_up_leaves_unknown_folders_alone(tmp_path: Path) -> None:
    """A folder not named like PyInstaller's unpacking folder is never deleted."""
    folder = tmp_path / "_internal"
    folder.mkdir()
    assert not OnefileBundle(folder, not_our_parent()).remove_if_orphaned()
    assert folder.exists()
