"""Unit tests for sidecar.process.unpacked: which unpack folders a one-file sidecar marks and
which it removes (the process-level proof, a killed binary's folder removed by the next start,
is in tests/integration/test_frozen.py)."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.process import unpacked
from sidecar.process.unpacked import MARK, mark, own_folder, stale_folders, tidy
from sidecar.queue.store import LeaseOwner

GONE = "gone"
ALIVE = "alive"


def is_alive(token: str) -> bool:
    return token == ALIVE


def unpack_folder(temp: Path, name: str, owner: str | None, files: int = 2) -> Path:
    folder = temp / name
    (folder / "lib").mkdir(parents=True)
    for n in range(files):
        (folder / "lib" / f"lib{n}.so").write_bytes(b"\0" * 1000)
    if owner is not None:
        (folder / MARK).write_text(owner, encoding="ascii")
    return folder


def test_only_marked_folders_of_gone_owners_are_stale(tmp_path: Path) -> None:
    """Stale: a `_MEI…` folder beside ours whose mark names only processes that are gone.
    Never our own, an unmarked one (another PyInstaller program, or one still unpacking), one
    with an owner alive (a program that outlived its bootloader), an empty or unreadable mark,
    a file, a symlink, or a folder of another name."""
    own = unpack_folder(tmp_path, "_MEI000own", GONE)
    dead = unpack_folder(tmp_path, "_MEI000dead", f"{GONE}\n{GONE}")
    unpack_folder(tmp_path, "_MEI000live", ALIVE)
    unpack_folder(tmp_path, "_MEI000orphan", f"{GONE}\n{ALIVE}")
    unpack_folder(tmp_path, "_MEI000other", None)
    unpack_folder(tmp_path, "_MEI000empty", "")
    (unpack_folder(tmp_path, "_MEI000binary", None) / MARK).write_bytes(b"\xff\xfe")
    unpack_folder(tmp_path, "not-an-unpack", GONE)
    (tmp_path / "_MEI000file").write_text(GONE, encoding="ascii")
    with contextlib.suppress(OSError):  # Windows allows symlinks only with a privilege
        (tmp_path / "_MEI000link").symlink_to(dead)

    assert stale_folders(own, is_alive) == [dead]


def test_a_missing_temp_folder_has_nothing_stale(tmp_path: Path) -> None:
    assert stale_folders(tmp_path / "gone" / "_MEI000own", is_alive) == []


def test_the_mark_is_written_whole(tmp_path: Path) -> None:
    """The mark appears by rename: a reader sees the whole token or no file; no draft stays."""
    mark(tmp_path, ["1234:1700000000.125", "1235:1700000000.250"])
    assert (tmp_path / MARK).read_text(encoding="ascii").split() == [
        "1234:1700000000.125", "1235:1700000000.250"]
    assert [p.name for p in tmp_path.iterdir()] == [MARK]


def test_tidy_marks_its_own_folder_and_removes_the_dead_ones(tmp_path: Path) -> None:
    """With real processes: our folder gets the bootloader's token and ours; a folder marked
    by a process that has exited goes, with its bytes counted; a live process's stays."""
    exited = subprocess.Popen(  # runs until its stdin closes: its token is read while it runs
        [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
    )
    exited_token = LeaseOwner.of(exited.pid).token
    exited.communicate()
    live = LeaseOwner.current().token
    own = unpack_folder(tmp_path, "_MEI000own", None)
    dead = unpack_folder(tmp_path, "_MEI000dead", exited_token, files=3)
    kept = unpack_folder(tmp_path, "_MEI000live", live)

    removed, freed = tidy(own, os.getpid())

    assert (removed, freed) == (1, 3000 + len(exited_token))
    assert not dead.exists()
    assert kept.exists() and own.exists()
    assert (own / MARK).read_text(encoding="ascii").split() == [live, live]  # pid = bootloader


def test_tidy_does_nothing_when_the_bootloader_is_gone(tmp_path: Path) -> None:
    """A bootloader that already exited means this process is stopping: no mark, no removal."""
    exited = subprocess.Popen([sys.executable, "-c", "pass"])
    exited.wait()
    own = unpack_folder(tmp_path, "_MEI000own", None)
    dead = unpack_folder(tmp_path, "_MEI000dead", "1:0.000")
    assert tidy(own, exited.pid) == (0, 0)
    assert dead.exists() and not (own / MARK).exists()


@pytest.mark.parametrize(
    ("frozen", "meipass", "expected"),
    [
        (False, None, None),
        (True, None, None),
        (True, "/tmp/_MEIabc123", "/tmp/_MEIabc123"),
        (True, "/opt/app/_internal", None),  # onedir: nothing is unpacked
    ],
)
def test_own_folder_is_only_a_one_file_unpack_folder(
    monkeypatch: pytest.MonkeyPatch, frozen: bool, meipass: str | None, expected: str | None
) -> None:
    monkeypatch.setattr(sys, "frozen", frozen, raising=False)
    if meipass is None:
        monkeypatch.delattr(sys, "_MEIPASS", raising=False)
    else:
        monkeypatch.setattr(sys, "_MEIPASS", meipass, raising=False)
    assert own_folder() == (None if expected is None else Path(expected))


async def test_the_task_does_nothing_from_source(tmp_path: Path) -> None:
    """Run from source the task returns at once, touching nothing."""
    assert own_folder() is None
    await unpacked.tidy_unpack_folders()
