"""The driver of `lazyfs.py`: mount it in a child process, cut, count syncs, unmount.

Shared by the file system's own tests, the power-loss rounds and `bench/reliability/powerloss.py`.
Every wait is bounded by `GUARD_S`, a hang guard and never a timing assertion.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LAZYFS = Path(__file__).with_name("lazyfs.py")
GUARD_S = 60.0


class MountError(Exception):
    """The file system did not mount, answer or unmount as it should."""


def fuse_missing() -> str | None:
    """Why this machine cannot mount the file system, or None when it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse does not exist"
    if not os.access("/dev/fuse", os.R_OK | os.W_OK):
        return "/dev/fuse is not readable and writable by this user"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is missing (Debian package fuse3)"
    try:
        import pyfuse3  # noqa: F401
    except ImportError as exc:
        return f"pyfuse3 does not import: {exc}"
    return None


@dataclass(frozen=True, slots=True)
class SyncCounts:
    """Sync calls the file system served, by path as the mount named it at the call."""

    files: dict[str, int]
    directories: dict[str, int]

    @property
    def total(self) -> int:
        """All fsync/fdatasync calls, on files and directories."""
        return sum(self.files.values()) + sum(self.directories.values())


class LazyMount:
    """One mounted `lazyfs.py`: `backing` holds what is durable, `mountpoint` shows it all."""

    def __init__(self, backing: Path, mountpoint: Path) -> None:
        self.backing = backing
        self.mountpoint = mountpoint
        backing.mkdir(parents=True, exist_ok=True)
        mountpoint.mkdir(parents=True, exist_ok=True)
        self._stderr = open(  # noqa: SIM115 (closed in unmount)
            backing.parent / f"{mountpoint.name}.lazyfs.log", "wb"
        )
        self.process = subprocess.Popen(
            [sys.executable, str(LAZYFS), str(backing), str(mountpoint)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        try:
            ready = self._answer()
            if ready != {"ready": True} or not os.path.ismount(mountpoint):
                raise MountError(f"lazyfs did not mount: {ready}; {self.log()}")
        except BaseException:
            self.unmount()
            raise

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(b"")

    def _answer(self) -> dict[str, Any]:
        try:
            line = self._lines.get(timeout=GUARD_S)
        except queue.Empty:
            raise MountError(f"lazyfs did not answer within {GUARD_S}s") from None
        if not line:
            raise MountError(f"lazyfs exited: {self.log()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def command(self, name: str) -> dict[str, Any]:
        """Send one control command and return its answer."""
        assert self.process.stdin is not None
        try:
            self.process.stdin.write(name.encode() + b"\n")
            self.process.stdin.flush()
        except OSError as exc:
            raise MountError(f"lazyfs is gone: {self.log()}") from exc
        return self._answer()

    def cut(self) -> dict[str, Any]:
        """The power goes: every unsynced change is dropped."""
        return self.command("cut")

    def sync_all(self) -> dict[str, Any]:
        """Everything becomes durable, as at a clean shutdown (not counted as sync calls)."""
        return self.command("sync")

    def syncs(self) -> SyncCounts:
        """Sync calls since the mount or the last `reset_syncs`."""
        answer = self.command("stats")
        return SyncCounts(answer["file_syncs"], answer["dir_syncs"])

    def reset_syncs(self) -> None:
        """Count syncs from zero again."""
        self.command("reset")

    def log(self) -> str:
        """What the file system wrote to stderr."""
        with contextlib.suppress(OSError):
            return (self.backing.parent / f"{self.mountpoint.name}.lazyfs.log").read_text(
                errors="replace"
            )
        return ""

    def unmount(self) -> None:
        """End stdin (the file system unmounts and exits); force it if it does not."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        try:
            self.process.wait(GUARD_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(GUARD_S)
        if os.path.ismount(self.mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mountpoint)],
                           check=False, timeout=GUARD_S, capture_output=True)
        self._reader.join(GUARD_S)
        self._stderr.close()

    def __enter__(self) -> LazyMount:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unmount()


@contextlib.contextmanager
def lazy_mount(workdir: Path, name: str = "mnt") -> Iterator[LazyMount]:
    """A mount of `workdir/<name>.backing` on `workdir/<name>`, unmounted at the end."""
    mount = LazyMount(workdir / f"{name}.backing", workdir / name)
    try:
        yield mount
    finally:
        mount.unmount()
