"""The parent watch and the one-file bundle clean-up, without killing anything real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from sidecar.process import parent
from sidecar.process.parent import (
    OnefileBundle,
    PlatformFacts,
    Watcher,
    choose_watchers,
    parent_check,
    watch_parent,
)

GUARD_S = 10.0
POLL_ONLY = (Watcher.POLL,)
# The watcher each platform the sidecar ships to waits with.
SHIPPED_TO = {"linux": Watcher.PIDFD, "darwin": Watcher.KQUEUE, "win32": Watcher.PROCESS_HANDLE}
shipped_only = pytest.mark.skipif(sys.platform not in SHIPPED_TO, reason="not a shipped platform")
# A launcher that stays in front of its command, as a shell wrapper or process manager would.
LAUNCHER = "import subprocess, sys; subprocess.run(sys.argv[1:])"


def not_our_parent() -> int:
    """A pid that is alive and is not this process's parent (this process itself)."""
    return os.getpid()


@pytest.mark.parametrize(
    ("platform", "bootloader", "pidfd", "kqueue", "expected"),
    [
        ("linux", False, True, False, (Watcher.PIDFD, Watcher.POLL)),
        ("linux", True, True, False, (Watcher.PDEATHSIG, Watcher.PIDFD, Watcher.POLL)),
        ("linux", False, False, False, (Watcher.POLL,)),
        ("darwin", False, False, True, (Watcher.KQUEUE, Watcher.POLL)),
        ("darwin", True, False, True, (Watcher.KQUEUE, Watcher.POLL)),
        ("freebsd14", False, False, True, (Watcher.KQUEUE, Watcher.POLL)),
        ("win32", False, False, False, (Watcher.PROCESS_HANDLE, Watcher.POLL)),
        ("win32", True, False, False, (Watcher.PROCESS_HANDLE, Watcher.POLL)),
        ("sunos5", False, False, False, (Watcher.POLL,)),
    ],
)
def test_each_platform_gets_its_watcher_and_the_poll_last(
    platform: str, bootloader: bool, pidfd: bool, kqueue: bool, expected: tuple[Watcher, ...]
) -> None:
    """Linux: parent-death signal (bootloader only), then pidfd; macOS/BSD: kqueue; Windows:
    the process handle; every platform ends with the poll, and only the poll where nothing
    else exists."""
    facts = PlatformFacts(platform, bootloader, pidfd_open=pidfd, trio_kqueue=kqueue)
    assert choose_watchers(facts) == expected


@shipped_only
def test_this_platform_waits_without_polling() -> None:
    """On the platforms the sidecar ships to, the first choice here is not the poll."""
    chosen = choose_watchers(PlatformFacts.current(os.getppid()))
    assert chosen[0] is SHIPPED_TO[sys.platform]
    assert chosen[-1] is Watcher.POLL


async def test_a_watcher_that_cannot_be_set_up_falls_back_to_the_next() -> None:
    """A watcher this platform lacks is skipped, and the next one notices the lost parent."""
    missing = Watcher.PIDFD if sys.platform == "win32" else Watcher.PROCESS_HANDLE
    stopping = trio.Event()
    with trio.fail_after(GUARD_S):
        await watch_parent(stopping, ppid=not_our_parent(), watchers=(missing, Watcher.POLL))
    assert stopping.is_set()


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfd is Linux's")


@linux_only
async def test_pidfd_watch_sees_a_pid_that_is_not_our_parent_at_once() -> None:
    """With the pidfd held, a pid that is not our parent (any more) reads as a lost parent."""
    stopping = trio.Event()
    with trio.fail_after(GUARD_S):
        await watch_parent(stopping, ppid=not_our_parent(), watchers=(Watcher.PIDFD,))
    assert stopping.is_set()


@linux_only
async def test_pidfd_watch_ends_once_the_app_is_stopping(autojump_clock: trio.abc.Clock) -> None:
    """Waiting on a live parent's pidfd, the watch returns when the app stops for another
    reason, and sets nothing itself."""
    stopping = trio.Event()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(
            lambda: watch_parent(stopping, ppid=os.getppid(), watchers=(Watcher.PIDFD,))
        )
        await trio.sleep(5)
        stopping.set()
    # Reaching here means the watch returned by itself.


@shipped_only
def test_this_platforms_watcher_notices_a_killed_parent_for_real() -> None:
    """A process whose parent is killed learns it through this platform's watcher alone, with
    no poll to fall back on (pidfd on Linux, kqueue on macOS, the process handle on Windows)."""
    watcher = SHIPPED_TO[sys.platform]
    child = (
        "import logging, sys, trio\n"
        "from sidecar.process.parent import Watcher, watch_parent\n"
        "logging.basicConfig(level=logging.DEBUG, stream=sys.stderr)\n"
        "async def main():\n"
        "    stopping = trio.Event()\n"
        "    print('watching', flush=True)\n"
        f"    await watch_parent(stopping, watchers=[Watcher.{watcher.name}], poll_s=3600)\n"
        "    print('stopping' if stopping.is_set() else 'returned', flush=True)\n"
        "trio.run(main)\n"
    )
    launcher = subprocess.Popen(
        [sys.executable, "-c", LAUNCHER, sys.executable, "-c", child],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        assert launcher.stdout is not None and launcher.stderr is not None
        assert launcher.stdout.readline().strip() == b"watching"
        launcher.kill()  # SIGKILL; TerminateProcess on Windows
        launcher.wait(GUARD_S)
        # The grandchild keeps the pipes open until it exits; the guard bounds a hang.
        out, err = launcher.communicate(timeout=GUARD_S)
    finally:
        if launcher.poll() is None:
            launcher.kill()
    assert out.strip() == b"stopping", err
    assert f"{watcher.value}: the parent is gone".encode() in err, err
    assert b"is gone; stopping" in err, err


async def test_a_live_parent_keeps_the_watch_polling(autojump_clock: trio.abc.Clock) -> None:
    """While the parent lives, the watch keeps polling and never sets the stop event."""
    stopping = trio.Event()
    with trio.move_on_after(3600):
        await watch_parent(stopping, ppid=os.getppid(), watchers=POLL_ONLY)
    assert not stopping.is_set()


async def test_a_lost_parent_sets_the_stop_event() -> None:
    """A parent that is no longer ours (re-parented, or gone) stops the app at the first poll."""
    stopping = trio.Event()
    with trio.fail_after(GUARD_S):
        await watch_parent(stopping, ppid=not_our_parent(), watchers=POLL_ONLY)
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
        nursery.start_soon(lambda: watch_parent(stopping, ppid=os.getppid(), watchers=POLL_ONLY))
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
