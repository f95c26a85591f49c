"""Exit with the parent: the sidecar must not outlive the app that spawned it.

A closed stdin already stops the sidecar when the app exits or crashes, but not when the app kills
the sidecar's process and keeps its end of the pipe: Tauri's `child.kill()` SIGKILLs the direct
child only, and the direct child of a PyInstaller one-file binary is the bootloader, which runs
this Python program as *its* child. Three ways to notice the parent's death:

- Linux, parent is the one-file bootloader: `prctl(PR_SET_PDEATHSIG, SIGTERM)`. The kernel sends
  SIGTERM when the parent dies, and the app's signal watcher turns it into the usual clean stop.
  No polling. It is used only there because the kernel means the parent *thread*: a process
  spawned from a short-lived thread of a long-lived app (a pool thread that retires) would be
  told its parent died while the app is well. The bootloader forks from its main thread and then
  waits for us, so for it the thread and the process die together.
- Linux otherwise (`python -m sidecar`, a one-dir build): a pidfd of the parent, which trio
  waits on like a socket; no wake-ups until the parent exits.
- Elsewhere (macOS, Windows, or a Linux kernel before 5.3): a task wakes every
  `poll_s` seconds and checks that the parent is still the same process (POSIX: `getppid()`
  changes when we are re-parented; Windows never re-parents, so the pid is checked for a running
  process with the same creation time, as pids are reused).

A SIGKILLed bootloader also cannot delete the folder it unpacked the program into (`_MEI...` in
the temp folder, about 20 MB), so on POSIX the program deletes it on its way out when the
bootloader is gone (`OnefileBundle`). Windows cannot delete files of a running program; there the
folder stays, as with any killed PyInstaller one-file program.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shutil
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import psutil
import trio

from sidecar.process.waits import cancel_when_set

log = logging.getLogger(__name__)

POLL_S = 1.0
_PR_SET_PDEATHSIG = 1


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def parent_is_onefile_bootloader(ppid: int) -> bool:
    """Whether our parent is the PyInstaller one-file bootloader of this very binary."""
    if not getattr(sys, "frozen", False):
        return False
    try:
        parent_exe = psutil.Process(ppid).exe()
    except (psutil.Error, OSError):
        return False
    return bool(parent_exe) and _same_file(parent_exe, sys.executable)


def set_parent_death_signal(signum: int = signal.SIGTERM) -> bool:
    """Ask Linux to send `signum` when the parent dies; False where that is not available."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, int(signum), 0, 0, 0) != 0:
            log.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
            return False
    except (OSError, AttributeError) as exc:
        log.warning("prctl(PR_SET_PDEATHSIG) unavailable: %s", exc)
        return False
    return True


def parent_check(ppid: int) -> Callable[[], bool]:
    """A cheap function that answers whether the parent `ppid` is still alive."""
    if sys.platform != "win32":
        # Re-parenting (to init or a subreaper) is how POSIX reports a dead parent.
        return lambda: os.getppid() == ppid
    try:
        created = psutil.Process(ppid).create_time()
    except psutil.Error:
        return lambda: False

    def alive() -> bool:
        # pid_exists looks at the exit code: a dead parent whose handle someone still holds (the
        # app that spawned it, say) keeps its pid and creation time but is not running.
        try:
            return psutil.pid_exists(ppid) and psutil.Process(ppid).create_time() == created
        except psutil.Error:
            return False

    return alive


@dataclass(frozen=True, slots=True)
class OnefileBundle:
    """The folder a one-file bootloader unpacked this program into, and that bootloader's pid."""

    path: Path
    bootloader_pid: int

    @classmethod
    def current(cls) -> OnefileBundle | None:
        """This process's bundle when it runs as a one-file bootloader's child, else None."""
        meipass = getattr(sys, "_MEIPASS", None)
        ppid = os.getppid()
        if meipass is None or not parent_is_onefile_bootloader(ppid):
            return None  # not frozen, or a one-dir build: _MEIPASS is the installed folder
        return cls(Path(meipass), ppid)

    def remove_if_orphaned(self) -> bool:
        """Delete the folder when the bootloader that would have is gone (POSIX only)."""
        if sys.platform == "win32" or os.getppid() == self.bootloader_pid:
            return False
        if not self.path.name.startswith("_MEI"):
            return False  # not the unpacking folder we know; leave it alone
        shutil.rmtree(self.path, ignore_errors=True)
        return not self.path.exists()


def _open_pidfd(pid: int) -> int | None:
    """Linux 5.3+: a pidfd for `pid`, readable once it exits; None where unsupported."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


async def watch_parent(
    stopping: trio.Event,
    *,
    poll_s: float = POLL_S,
    ppid: int | None = None,
    use_pdeathsig: bool | None = None,
) -> None:
    """Set `stopping` when the process that started us is gone.

    `ppid` and `use_pdeathsig` default to this process's parent and to whether that parent is
    the one-file bootloader (on Linux); tests pass them to force a path.
    """
    ppid = os.getppid() if ppid is None else ppid
    if ppid <= 1:
        return  # started by init/launchd itself, or already orphaned before we could look
    if use_pdeathsig is None:
        use_pdeathsig = sys.platform.startswith("linux") and parent_is_onefile_bootloader(ppid)
    if use_pdeathsig and set_parent_death_signal():
        # The parent may have died before prctl took effect; then no signal will ever come.
        if os.getppid() != ppid:
            log.info("parent process %d is gone; stopping", ppid)
            stopping.set()
        return
    pidfd = _open_pidfd(ppid) if sys.platform.startswith("linux") else None
    if pidfd is not None:
        # No wake-ups until the parent exits. The pidfd is held before checking that `ppid`
        # is still our parent, so it cannot name a later process that reused the pid.
        try:
            async with trio.open_nursery() as race:
                race.start_soon(cancel_when_set, stopping, race.cancel_scope)
                if os.getppid() == ppid:
                    await trio.lowlevel.wait_readable(pidfd)
                log.info("parent process %d is gone; stopping", ppid)
                stopping.set()
        finally:
            os.close(pidfd)
        return
    alive = parent_check(ppid)
    while not stopping.is_set():
        if not alive():
            log.info("parent process %d is gone; stopping", ppid)
            stopping.set()
            return
        await trio.sleep(poll_s)
