"""Unit tests for durability: the SQLite settings per level and platform, the option, what a
new database syncs, and enqueue_many against enqueue."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from sidecar.process.config import ConfigError, parse_config
from sidecar.queue import store as store_module
from sidecar.queue.durability import Durability, connection_pragmas
from sidecar.queue.store import LeaseOwner, Store


def test_full_syncs_every_commit_and_uses_fullfsync_on_macos_only() -> None:
    """FULL is synchronous=FULL everywhere, plus F_FULLFSYNC for commits and checkpoints on
    macOS, where plain fsync stops at the drive's cache; NORMAL is synchronous=NORMAL."""
    assert connection_pragmas(Durability.FULL, "linux") == ["PRAGMA synchronous = FULL"]
    assert connection_pragmas(Durability.FULL, "win32") == ["PRAGMA synchronous = FULL"]
    assert connection_pragmas(Durability.FULL, "darwin") == [
        "PRAGMA synchronous = FULL",
        "PRAGMA fullfsync = ON",
        "PRAGMA checkpoint_fullfsync = ON",
    ]
    for platform in ("linux", "darwin", "win32"):
        assert connection_pragmas(Durability.NORMAL, platform) == ["PRAGMA synchronous = NORMAL"]


def test_durability_option_defaults_to_full_and_the_option_wins(tmp_path: Path) -> None:
    """No option and no variable: full; the variable sets it; the option wins over it."""
    base = ["--data-dir", str(tmp_path)]
    assert parse_config(base, {}).durability is Durability.FULL
    env = {"TELEMETRY_SIDECAR_DURABILITY": "Normal"}
    assert parse_config(base, env).durability is Durability.NORMAL
    assert parse_config([*base, "--durability", "full"], env).durability is Durability.FULL


def test_a_bad_durability_in_the_environment_is_a_config_error(tmp_path: Path) -> None:
    """An unknown level in TELEMETRY_SIDECAR_DURABILITY is refused before any data is touched."""
    with pytest.raises(ConfigError, match="TELEMETRY_SIDECAR_DURABILITY"):
        parse_config(["--data-dir", str(tmp_path)], {"TELEMETRY_SIDECAR_DURABILITY": "max"})


@pytest.mark.parametrize(("durability", "level"), [(Durability.FULL, 2), (Durability.NORMAL, 1)])
def test_the_store_opens_with_its_level(tmp_path: Path, durability: Durability, level: int) -> None:
    """The connection runs with the synchronous level its durability names."""
    store = Store(tmp_path / "q.db", durability=durability)
    try:
        assert store._db.execute("PRAGMA synchronous").fetchone()[0] == level
    finally:
        store.close()


def test_a_new_database_and_its_new_folders_are_synced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With FULL, creating the queue syncs the new file, its folder and each folder made on
    the way, so the file cannot vanish after an answer; an existing file syncs nothing."""
    synced: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(store_module.os, "fsync", recording_fsync)
    path = tmp_path / "a" / "b" / "telemetry.db"
    store_module._create_private(path, sync=True)
    assert synced == [str(path), str(tmp_path / "a" / "b"), str(tmp_path / "a"), str(tmp_path)]
    synced.clear()
    store_module._create_private(path, sync=True)
    store_module._create_private(tmp_path / "c" / "telemetry.db", sync=False)
    assert synced == []
    assert (tmp_path / "c" / "telemetry.db").stat().st_mode & 0o777 == 0o600


def test_enqueue_many_gives_what_enqueue_gives_call_by_call(tmp_path: Path) -> None:
    """Several calls in one transaction: the same rows in the same order, and each call's
    result (accepted, overflow, depth) as if it had been committed alone at its turn."""
    calls = [("k1", ["a", "b", "c"]), ("k2", ["d"]), ("k1", ["e", "f", "g", "h"]), ("k2", [])]
    one_by_one = Store(tmp_path / "one.db")
    grouped = Store(tmp_path / "many.db")
    try:
        expected = [one_by_one.enqueue(k, b, max_queue=5, now=1.0) for k, b in calls]
        assert grouped.enqueue_many(calls, max_queue=5, now=1.0) == expected
        rows = "SELECT api_key, body FROM ph_event_queue ORDER BY id"
        assert grouped._db.execute(rows).fetchall() == one_by_one._db.execute(rows).fetchall()
        assert grouped.status() == one_by_one.status()
    finally:
        one_by_one.close()
        grouped.close()


def test_enqueue_many_while_opted_out_refuses_every_call(tmp_path: Path) -> None:
    """Opted out, each call of a group answers accepted 0 and counts under opt_out."""
    store = Store(tmp_path / "q.db")
    try:
        store.set_opt_out(True)
        results = store.enqueue_many([("k", ["a"]), ("k", ["b", "c"])], max_queue=10)
        assert [(r.accepted, r.opted_out) for r in results] == [(0, True), (0, True)]
        assert store.status().dropped["opt_out"] == 3
        with sqlite3.connect(tmp_path / "q.db") as db:
            assert db.execute("SELECT COUNT(*) FROM ph_event_queue").fetchone()[0] == 0
    finally:
        store.close()


@pytest.mark.skipif(sys.platform == "win32", reason="zombies are a POSIX state")
def test_a_killed_process_not_yet_reaped_holds_no_lease() -> None:
    """A process that has exited but is still a zombie (its parent has not reaped it yet, as
    with a one-file binary's orphan before init reaps it) counts as gone."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    token = LeaseOwner(child.pid, __import__("psutil").Process(child.pid).create_time()).token
    try:
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)  # exited, left unreaped
        assert LeaseOwner.is_alive(token) is False
    finally:
        child.wait()
    assert LeaseOwner.is_alive(LeaseOwner.current().token) is True
