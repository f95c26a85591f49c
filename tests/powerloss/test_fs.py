"""The power-loss file system itself: what a cut keeps and what it drops (see lazyfs.py's model).

Each test drives the real mount with ordinary system calls, then looks both through the mount
(after the cut, as a rebooted machine would) and at the backing folder (what plain sqlite3 reads
once the file system is gone).
"""

from __future__ import annotations

import os
import random
import sqlite3
from pathlib import Path

import pytest
from lazyfs import PAGE, iter_tree
from lazymount import LazyMount


def write_file(path: Path, data: bytes, *, offset: int = 0, sync: bool = False,
               create: bool = False) -> None:
    """pwrite `data` at `offset` (creating the file when asked), fsync if asked, close."""
    flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if create else 0)
    fd = os.open(path, flags, 0o600)
    try:
        os.pwrite(fd, data, offset)
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every entry under `root`: file contents, None for directories."""
    return dict(iter_tree(str(root)))


def both_views(mount: LazyMount) -> tuple[dict[str, bytes | None], dict[str, bytes | None]]:
    """(what the mount shows, what the backing folder holds)."""
    return tree(mount.mountpoint), tree(mount.backing)


def durable_file(mount: LazyMount, name: str, data: bytes) -> Path:
    """A file whose content and entry are both durable."""
    path = mount.mountpoint / name
    write_file(path, data, create=True, sync=True)
    fsync_path(mount.mountpoint)
    return path


def test_unsynced_write_is_gone_after_a_cut(mount: LazyMount) -> None:
    """A write with no fsync after it shows through the mount, and a cut takes it back."""
    path = durable_file(mount, "f", b"synced")
    write_file(path, b"UNSYNCED", offset=3)
    assert path.read_bytes() == b"synUNSYNCED"
    assert (mount.backing / "f").read_bytes() == b"synced"
    mount.cut()
    assert both_views(mount) == ({"f": b"synced"}, {"f": b"synced"})


def test_synced_write_survives_a_cut(mount: LazyMount) -> None:
    """fsync makes the whole file durable at once, across pages, without a directory fsync."""
    path = durable_file(mount, "f", b"a" * 10)
    data = bytes(range(256)) * 40
    write_file(path, data, offset=PAGE - 7, sync=True)
    expected = b"a" * 10 + bytes(PAGE - 17) + data
    mount.cut()
    assert both_views(mount) == ({"f": expected}, {"f": expected})


def test_fdatasync_counts_as_a_sync(mount: LazyMount) -> None:
    """fdatasync makes data durable like fsync, and both are counted per path."""
    path = durable_file(mount, "f", b"")
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, b"kept", 0)
        os.fdatasync(fd)
        os.pwrite(fd, b"gone", 4)
    finally:
        os.close(fd)
    syncs = mount.syncs()
    assert syncs.files == {"/f": 2} and syncs.directories == {"/": 1}
    mount.reset_syncs()
    assert mount.syncs().total == 0
    mount.cut()
    assert both_views(mount) == ({"f": b"kept"}, {"f": b"kept"})


def test_created_file_is_gone_without_a_directory_fsync(mount: LazyMount) -> None:
    """A new file's entry needs an fsync of its folder: syncing the file alone is not enough."""
    write_file(mount.mountpoint / "new", b"data", create=True, sync=True)
    assert (mount.mountpoint / "new").read_bytes() == b"data"
    assert not (mount.backing / "new").exists()
    mount.cut()
    assert both_views(mount) == ({}, {})


def test_directory_fsync_keeps_the_entry_but_not_unsynced_data(mount: LazyMount) -> None:
    """An fsync of the folder makes a new entry durable with the file's synced content only."""
    write_file(mount.mountpoint / "a", b"never synced", create=True)
    write_file(mount.mountpoint / "b", b"synced", create=True, sync=True)
    write_file(mount.mountpoint / "b", b"SYNCED and more")
    fsync_path(mount.mountpoint)
    mount.cut()
    assert both_views(mount) == ({"a": b"", "b": b"synced"}, {"a": b"", "b": b"synced"})


def test_rename_is_durable_only_after_a_directory_fsync(mount: LazyMount) -> None:
    """A rename (replacing a file) is undone by a cut until its folder is fsynced."""
    durable_file(mount, "a", b"A")
    durable_file(mount, "b", b"B")
    os.rename(mount.mountpoint / "a", mount.mountpoint / "b")
    assert tree(mount.mountpoint) == {"b": b"A"}
    mount.cut()
    assert both_views(mount) == ({"a": b"A", "b": b"B"}, {"a": b"A", "b": b"B"})
    os.rename(mount.mountpoint / "a", mount.mountpoint / "b")
    fsync_path(mount.mountpoint)
    mount.cut()
    assert both_views(mount) == ({"b": b"A"}, {"b": b"A"})


def test_unlink_is_durable_only_after_a_directory_fsync(mount: LazyMount) -> None:
    """An unlinked file comes back after a cut unless its folder was fsynced."""
    durable_file(mount, "f", b"F")
    os.unlink(mount.mountpoint / "f")
    mount.cut()
    assert both_views(mount) == ({"f": b"F"}, {"f": b"F"})
    os.unlink(mount.mountpoint / "f")
    fsync_path(mount.mountpoint)
    mount.cut()
    assert both_views(mount) == ({}, {})


def test_truncate_is_undone_and_shrink_then_grow_leaves_zeros(mount: LazyMount) -> None:
    """An unsynced truncate is undone by a cut; a synced shrink and regrow keeps no old bytes."""
    path = durable_file(mount, "f", b"x" * (3 * PAGE))
    os.truncate(path, 5)
    mount.cut()
    assert tree(mount.backing) == {"f": b"x" * (3 * PAGE)}
    os.truncate(path, 5)
    write_file(path, b"end", offset=2 * PAGE, sync=True)
    expected = b"x" * 5 + bytes(2 * PAGE - 5) + b"end"
    mount.cut()
    assert both_views(mount) == ({"f": expected}, {"f": expected})


def test_directory_changes_become_durable_in_order(mount: LazyMount) -> None:
    """An fsync of a new subfolder makes durable the earlier mkdir in its parent too (journal
    order); a later change elsewhere stays volatile; a move between folders needs either."""
    os.mkdir(mount.mountpoint / "d")
    write_file(mount.mountpoint / "d" / "f", b"F", create=True, sync=True)
    write_file(mount.mountpoint / "later", b"L", create=True, sync=True)
    fsync_path(mount.mountpoint / "d")
    mount.cut()
    assert both_views(mount) == ({"d": None, "d/f": b"F"}, {"d": None, "d/f": b"F"})
    os.rename(mount.mountpoint / "d" / "f", mount.mountpoint / "moved")
    fsync_path(mount.mountpoint / "d")
    mount.cut()
    assert both_views(mount) == ({"d": None, "moved": b"F"}, {"d": None, "moved": b"F"})
    os.rmdir(mount.mountpoint / "d")
    mount.cut()
    assert "d" in tree(mount.backing)


def test_full_sync_makes_everything_durable(mount: LazyMount) -> None:
    """The clean-shutdown command keeps every change, in subfolders too, and counts no sync."""
    durable_file(mount, "gone", b"G")
    os.mkdir(mount.mountpoint / "d")
    write_file(mount.mountpoint / "d" / "f", b"F", create=True)
    os.unlink(mount.mountpoint / "gone")
    mount.reset_syncs()
    mount.sync_all()
    assert mount.syncs().total == 0
    mount.cut()
    assert both_views(mount) == ({"d": None, "d/f": b"F"}, {"d": None, "d/f": b"F"})


def test_sqlite_wal_works_and_normal_synchronous_loses_commits(mount: LazyMount) -> None:
    """SQLite runs in WAL mode on the mount (the -shm file is mapped); commits with
    synchronous=FULL survive a cut, and those with NORMAL since the last checkpoint do not."""
    db = mount.mountpoint / "t.db"
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        assert conn.execute("PRAGMA journal_mode = WAL").fetchone() == ("wal",)
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute("CREATE TABLE t (x INTEGER)")
        for x in range(20):
            conn.execute("INSERT INTO t VALUES (?)", (x,))
        conn.execute("PRAGMA synchronous = NORMAL")
        for x in range(20, 30):
            conn.execute("INSERT INTO t VALUES (?)", (x,))
        other = sqlite3.connect(db)
        try:
            assert other.execute("SELECT COUNT(*) FROM t").fetchone() == (30,)
        finally:
            other.close()
        assert mount.syncs().files.get("/t.db-wal", 0) >= 20
        mount.cut()
    finally:
        conn.close()
    mount.unmount()
    check = sqlite3.connect(mount.backing / "t.db")
    try:
        assert check.execute("PRAGMA quick_check").fetchone() == ("ok",)
        assert check.execute("SELECT COUNT(*) FROM t").fetchone() == (20,)
    finally:
        check.close()


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_operations_match_a_model(mount: LazyMount, seed: int) -> None:
    """Seeded random writes, truncates, creates, renames, unlinks, syncs and cuts in one folder:
    the mount always shows the model's current files, and after each cut both the mount and the
    backing folder hold exactly the model's durable ones."""
    rng = random.Random(seed)
    root = mount.mountpoint
    names = ["a", "b", "c", "d"]
    # The model: names -> inode, inode -> content, now and as durable.
    current: dict[str, int] = {}
    content: dict[int, bytes] = {}
    durable_names: dict[str, int] = {}
    durable_content: dict[int, bytes] = {}
    inodes = iter(range(1, 1_000_000))
    cuts = 0
    for _step in range(400):
        present = sorted(current)
        roll = rng.random()
        if roll < 0.30 and present:
            name = rng.choice(present)
            offset = rng.randrange(0, 3 * PAGE)
            data = bytes([rng.randrange(256)]) * rng.randrange(1, 2 * PAGE)
            write_file(root / name, data, offset=offset)
            old = content[current[name]]
            padded = old + bytes(max(0, offset - len(old)))
            content[current[name]] = padded[:offset] + data + padded[offset + len(data):]
        elif roll < 0.38 and present:
            name = rng.choice(present)
            size = rng.randrange(0, 3 * PAGE)
            os.truncate(root / name, size)
            old = content[current[name]]
            content[current[name]] = old[:size] + bytes(max(0, size - len(old)))
        elif roll < 0.55 and present:
            name = rng.choice(present)
            fsync_path(root / name)
            durable_content[current[name]] = content[current[name]]
        elif roll < 0.65:
            name = rng.choice(names)
            if name not in current:
                write_file(root / name, b"", create=True)
                current[name] = next(inodes)
                content[current[name]] = b""
        elif roll < 0.72 and present:
            name = rng.choice(present)
            os.unlink(root / name)
            del content[current.pop(name)]
        elif roll < 0.80 and present:
            source, target = rng.choice(present), rng.choice(names)
            os.rename(root / source, root / target)
            if source != target:
                replaced = current.get(target)
                current[target] = current.pop(source)
                if replaced is not None:
                    del content[replaced]
        elif roll < 0.92:
            fsync_path(root)
            durable_names = dict(current)
        else:
            mount.cut()
            cuts += 1
            current = dict(durable_names)
            content = {i: durable_content.get(i, b"") for i in current.values()}
            durable_content = dict(content)
            expected = {name: content[i] for name, i in current.items()}
            assert both_views(mount) == (expected, expected)
        assert tree(root) == {name: content[i] for name, i in current.items()}
    assert cuts > 0
