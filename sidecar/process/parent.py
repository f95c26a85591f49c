"""Exit with the parent: the sidecar must not outlive the app that spawned it.

A closed stdin already stops the sidecar when the app exits or crashes, but not when the app kills
the sidecar's process and keeps its end of the pipe: Tauri's `child.kill()` SIGKILLs the direct
child only, and the direct child of a PyInstaller one-file binary is the bootloader, which runs
this Python program as *its* child. The ways to notice the parent's death, each a `Watcher`, in
the order `choose_watchers` tries them on each platform:

- Linux, parent is the one-file bootloader: `prctl(PR_SET_PDEATHSIG, SIGTERM)`. The kernel sends
  SIGTERM when the parent dies, and the app's signal watcher turns it into the usual clean stop.
  It is used only there because the kernel means the parent *thread*: a process spawned from a
  short-lived thread of a long-lived app (a pool thread that retires) would be told its parent
  died while the app is well. The bootloader forks from its main thread and then waits for us,
  so for it the thread and the process die together.
- Linux otherwise (`python -m sidecar`, a one-dir build): a pidfd of the parent, which trio
  waits on like a socket.
- macOS (and the BSDs): kqueue's `EVFILT_PROC`/`NOTE_EXIT` on the parent's pid, registered on
  trio's own kqueue, so the event loop is woken by the exit itself.
- Windows: a handle of the parent process (`OpenProcess(SYNCHRONIZE, …)`), waited on by trio's
  `WaitForSingleObject`.
- Where none of those can be set up (a Linux kernel before 5.3, a process the OS will not let
  us open): a task wakes every `poll_s` seconds and checks that the parent is still the same
  process (POSIX: `getppid()` changes when we are re-parented; Windows never re-parents, so
  the pid is checked for a running process with the same creation time, as pids are reused).

All but the last wait without a single wake-up until the parent exits. Each is set up before
checking that the pid is still our parent, so it cannot follow a later process that reused it.

A SIGKILLed bootloader also cannot delete the folder it unpacked the program into (`_MEI...` in
the temp folder, about 20 MB), so on POSIX the program deletes it on its way out when the
bootloader is gone (`OnefileBundle`). Windows cannot delete files of a running program; there the
folder stays, as with any killed PyInstaller one-file program.
"""

from __future__ import annotations

import contextlib
import ctypes
import enum
import logging
import os
import shutil
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from sidecar.process.waits import cancel_when_set

log = logging.getLogger(__name__)

POLL_S = 1.0
_PR_SET_PDEATHSIG = 1


class Watcher(enum.Enum):
    """A way to learn that the parent process is gone."""

    PDEATHSIG = "parent-death signal"
    PIDFD = "pidfd"
    KQUEUE = "kqueue"
    PROCESS_HANDLE = "process handle"
    POLL = "poll"


@dataclass(frozen=True, slots=True)
class PlatformFacts:
    """What the choice of watcher depends on."""

    platform: str
    """`sys.platform`."""
    parent_is_onefile_bootloader: bool
    pidfd_open: bool
    """`os.pidfd_open` exists (Linux, Python 3.9+); the kernel may still refuse it."""
    trio_kqueue: bool
    """trio's event loop runs on a kqueue (macOS, the BSDs)."""

    @classmethod
    def current(cls, ppid: int) -> PlatformFacts:
        """The facts of this process, whose parent is `ppid`."""
        linux = sys.platform.startswith("linux")
        return cls(
            platform=sys.platform,
            parent_is_onefile_bootloader=linux and parent_is_onefile_bootloader(ppid),
            pidfd_open=hasattr(os, "pidfd_open"),
            trio_kqueue=hasattr(trio.lowlevel, "current_kqueue"),
        )


def choose_watchers(facts: PlatformFacts) -> tuple[Watcher, ...]:
    """The watchers to try, best first; the first that can be set up is used. The poll comes
    last everywhere, for when none of the others can."""
    chosen: list[Watcher] = []
    if facts.platform.startswith("linux"):
        if facts.parent_is_onefile_bootloader:
            chosen.append(Watcher.PDEATHSIG)
        if facts.pidfd_open:
            chosen.append(Watcher.PIDFD)
    elif facts.platform == "win32":
        chosen.append(Watcher.PROCESS_HANDLE)
    elif facts.trio_kqueue:
        chosen.append(Watcher.KQUEUE)
    chosen.append(Watcher.POLL)
    return tuple(chosen)


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def parent_is_onefile_bootloader(ppid: int) -> bool:
    """Whether our parent is the PyInstaller one-file bootloader of this very binary."""
    if not getattr(sys, "frozen", False):
        return False
    if sys.platform.startswith("linux"):
        # The kernel's link to the parent's executable, as psutil itself would read it.
        return _same_file(f"/proc/{ppid}/exe", sys.executable)
    import psutil  # noqa: PLC0415 - only a frozen program outside Linux asks

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
    import psutil  # noqa: PLC0415 - the Windows poll is a last resort

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


class _Seen(enum.Enum):
    """How a watcher ended."""

    UNAVAILABLE = "cannot be set up here; try the next"
    ARMED = "armed; the parent's death arrives as a signal"
    GONE = "the parent is gone"


async def _by_pdeathsig(ppid: int, poll_s: float) -> _Seen:
    if not set_parent_death_signal():
        return _Seen.UNAVAILABLE
    # The parent may have died before prctl took effect; then no signal will ever come.
    return _Seen.GONE if os.getppid() != ppid else _Seen.ARMED


async def _by_pidfd(ppid: int, poll_s: float) -> _Seen:
    if not sys.platform.startswith("linux"):
        return _Seen.UNAVAILABLE
    try:
        pidfd = os.pidfd_open(ppid)
    except ProcessLookupError:
        return _Seen.GONE
    except OSError:
        return _Seen.UNAVAILABLE  # Linux before 5.3, or a seccomp filter that refuses it
    try:
        if os.getppid() == ppid:
            await trio.lowlevel.wait_readable(pidfd)
    finally:
        os.close(pidfd)
    return _Seen.GONE


async def _by_kqueue(ppid: int, poll_s: float) -> _Seen:
    if sys.platform == "win32" or sys.platform.startswith("linux"):
        return _Seen.UNAVAILABLE
    import select  # noqa: PLC0415 - kqueue symbols exist on kqueue platforms only

    kqueue = trio.lowlevel.current_kqueue()
    note_exit = getattr(select, "KQ_NOTE_EXIT", 0x80000000)  # PyPy lacks the name

    def change(flags: int) -> None:
        kevent = select.kevent(ppid, filter=select.KQ_FILTER_PROC, flags=flags, fflags=note_exit)
        kqueue.control([kevent], 0)

    try:
        change(select.KQ_EV_ADD | select.KQ_EV_ONESHOT)
    except ProcessLookupError:
        return _Seen.GONE
    except OSError:
        return _Seen.UNAVAILABLE

    def unregister() -> None:
        # A registration trio does not expect would reach its loop as an unknown event.
        with contextlib.suppress(OSError):
            change(select.KQ_EV_DELETE)

    def abort(raise_cancel: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
        unregister()
        return trio.lowlevel.Abort.SUCCEEDED

    if os.getppid() != ppid:
        unregister()
        return _Seen.GONE
    await trio.lowlevel.wait_kevent(ppid, select.KQ_FILTER_PROC, abort)
    return _Seen.GONE


async def _by_process_handle(ppid: int, poll_s: float) -> _Seen:
    if sys.platform != "win32":
        return _Seen.UNAVAILABLE
    from ctypes import wintypes  # noqa: PLC0415 - Windows only

    synchronize, query_limited_information = 0x00100000, 0x1000
    error_invalid_parameter = 87  # what OpenProcess answers for a pid that names no process
    kernel32 = ctypes.WinDLL("kernel32", use_last_error=True)
    kernel32.OpenProcess.restype = wintypes.HANDLE
    kernel32.OpenProcess.argtypes = [wintypes.DWORD, wintypes.BOOL, wintypes.DWORD]
    kernel32.GetCurrentProcess.restype = wintypes.HANDLE
    kernel32.CloseHandle.argtypes = [wintypes.HANDLE]
    handle = kernel32.OpenProcess(synchronize | query_limited_information, False, ppid)
    if not handle:
        if ctypes.get_last_error() == error_invalid_parameter:
            return _Seen.GONE
        return _Seen.UNAVAILABLE  # access denied: the poll can still see it through psutil

    def created(process: int) -> int | None:
        times = [wintypes.FILETIME() for _ in range(4)]
        if not kernel32.GetProcessTimes(
            wintypes.HANDLE(process), *(ctypes.byref(t) for t in times)
        ):
            return None
        return (times[0].dwHighDateTime << 32) | times[0].dwLowDateTime

    parent_created, own_created = created(handle), created(kernel32.GetCurrentProcess())
    if parent_created is not None and own_created is not None and parent_created > own_created:
        kernel32.CloseHandle(handle)
        return _Seen.GONE  # a process started after us reuses the pid: ours is gone
    # Cancelled, the handle stays open: trio's waiting thread may still be in its wait on it for
    # a moment, and closing a handle under a pending wait is undefined. The app is stopping
    # then, and the handle goes with the process.
    await trio.lowlevel.WaitForSingleObject(handle)
    kernel32.CloseHandle(handle)
    return _Seen.GONE


async def _by_polling(ppid: int, poll_s: float) -> _Seen:
    alive = parent_check(ppid)
    while True:
        if not alive():
            return _Seen.GONE
        await trio.sleep(poll_s)


_WATCHES: dict[Watcher, Callable[[int, float], Awaitable[_Seen]]] = {
    Watcher.PDEATHSIG: _by_pdeathsig,
    Watcher.PIDFD: _by_pidfd,
    Watcher.KQUEUE: _by_kqueue,
    Watcher.PROCESS_HANDLE: _by_process_handle,
    Watcher.POLL: _by_polling,
}


async def watch_parent(
    stopping: trio.Event,
    *,
    poll_s: float = POLL_S,
    ppid: int | None = None,
    watchers: Sequence[Watcher] | None = None,
) -> None:
    """Set `stopping` when the process that started us is gone.

    `ppid` defaults to this process's parent, and `watchers` to `choose_watchers` for this
    platform; each is tried in turn until one can be set up. Returns once the parent is gone,
    once the app is stopping for another reason, or at once when the parent's death is to come
    as a signal (`Watcher.PDEATHSIG`).
    """
    ppid = os.getppid() if ppid is None else ppid
    if ppid <= 1:
        return  # started by init/launchd itself, or already orphaned before we could look
    if watchers is None:
        watchers = choose_watchers(PlatformFacts.current(ppid))
    async with trio.open_nursery() as race:
        race.start_soon(cancel_when_set, stopping, race.cancel_scope)
        for watcher in watchers:
            seen = await _WATCHES[watcher](ppid, poll_s)
            log.debug("parent process %d, %s: %s", ppid, watcher.value, seen.value)
            if seen is _Seen.GONE:
                log.info("parent process %d is gone; stopping", ppid)
                stopping.set()
            if seen is not _Seen.UNAVAILABLE:
                break
        race.cancel_scope.cancel()
