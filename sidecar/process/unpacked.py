"""The unpack folders that killed one-file sidecars leave behind, found and removed.

A one-file binary unpacks its native libraries into a new `_MEI…` folder in the temp folder at
every start, and its bootloader removes it at exit. Killed together with the program it runs (a
SIGKILL of the process tree, the OOM killer, Windows ending a job), the bootloader cannot, and
the folder stays: on Windows, whose temp folder nothing empties, that adds up with every kill.

So each one-file sidecar marks its own folder with its bootloader's identity and its own (pid
and start time of each), and, a little after start, removes the folders whose mark names only
processes that are gone (a program outliving its bootloader still uses its folder). A folder
without the mark (another program built with PyInstaller, or a sidecar still unpacking or older
than this) is never touched, nor is one whose mark cannot be read.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from sidecar.queue.store import LeaseOwner

log = logging.getLogger(__name__)

# The file in an unpack folder naming the processes that use it: `LeaseOwner` tokens, one a line.
MARK = ".telemetry-sidecar-owner"
# What a one-file bootloader names the folder it unpacks into.
FOLDER_PREFIX = "_MEI"
# Housekeeping waits this long after start, so it never competes with the first answers.
TIDY_AFTER_S = 2.0


def own_folder() -> Path | None:
    """This process's unpack folder, when it runs from a one-file binary (a onedir build's
    `_MEIPASS` is its `_internal` folder, which is not unpacked and never removed)."""
    unpacked = getattr(sys, "_MEIPASS", None)
    if not getattr(sys, "frozen", False) or unpacked is None:
        return None
    folder = Path(unpacked)
    return folder if folder.name.startswith(FOLDER_PREFIX) else None


def mark(folder: Path, owners: list[str]) -> None:
    """Name `owners` (`LeaseOwner` tokens) in `folder`'s mark, whole or not at all."""
    draft = folder / f"{MARK}.{os.getpid()}"
    draft.write_text("\n".join(owners), encoding="ascii")
    draft.replace(folder / MARK)


def stale_folders(own: Path, is_alive: Callable[[str], bool]) -> list[Path]:
    """The marked unpack folders beside `own` whose owners are all gone."""
    stale = []
    try:
        siblings = list(own.parent.iterdir())
    except OSError:
        return []
    for folder in siblings:
        if folder == own or not folder.name.startswith(FOLDER_PREFIX):
            continue
        try:
            if folder.is_symlink() or not folder.is_dir():
                continue
            owners = (folder / MARK).read_text(encoding="ascii").split()
        except (OSError, UnicodeDecodeError):
            continue  # not ours, still unpacking, or unreadable: left alone
        if owners and not any(is_alive(owner) for owner in owners):
            stale.append(folder)
    return stale


def folder_bytes(folder: Path) -> int:
    """The size of the files under `folder` (what removing it gives back)."""
    total = 0
    for root, _, files in os.walk(folder):
        for name in files:
            with contextlib.suppress(OSError):  # gone meanwhile: nothing to count
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def tidy(own: Path, bootloader_pid: int) -> tuple[int, int]:
    """Mark `own` as the bootloader's and this process's, then remove the stale folders
    beside it; returns the folders removed and their bytes. Removal is best effort: what cannot
    go now (a file still open on Windows, a permission) is tried again at the next start."""
    import psutil  # noqa: PLC0415 - never before the first answer

    try:
        owners = [LeaseOwner.of(bootloader_pid).token, LeaseOwner.current().token]
    except psutil.Error:
        return 0, 0  # the bootloader is gone already, so this process is stopping too
    mark(own, owners)
    removed = freed = 0
    for folder in stale_folders(own, LeaseOwner.is_alive):
        size = folder_bytes(folder)
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed += 1
            freed += size
    return removed, freed


async def tidy_unpack_folders() -> None:
    """The task: in a one-file sidecar, a little after start, mark this one's unpack folder and
    remove those of one-file sidecars that were killed; elsewhere nothing."""
    own = own_folder()
    if own is None:
        return
    bootloader = os.getppid()
    await trio.sleep(TIDY_AFTER_S)
    try:
        removed, freed = await trio.to_thread.run_sync(tidy, own, bootloader)
    except OSError as exc:
        log.warning("could not mark or tidy the unpack folders in %s: %s", own.parent, exc)
        return
    if removed:
        log.info(
            "removed %d unpack folder(s) of killed sidecars from %s (%.1f MB)",
            removed, own.parent, freed / 1e6,
        )
