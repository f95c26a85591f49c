"""Unit tests for sidecar.queue.store: the SQLite queue on real files in tmp_path."""

from __future__ import annotations

import os
import random
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import psutil
import pytest
from support import store_probe as probe

from sidecar.delivery import policy
from sidecar.queue import store as store_module
from sidecar.queue.store import (
    SCHEMA_VERSION,
    STALE_LEASE_S,
    Claim,
    DropReason,
    LeaseOwner,
    StorageUnavailable,
    Store,
    open_store,
)

T0 = 1_800_000_000.0
WALL = datetime(2030, 1, 1, tzinfo=UTC)
BIG = 1 << 30


def body(n: int) -> str:
    """A small stored event body numbered `n`."""
    return f'{{"event":"e{n}","distinct_id":"u"}}'


def bodies(*numbers: int) -> list[str]:
    """Bodies for the given numbers."""
    return [body(n) for n in numbers]


def dead_owner() -> LeaseOwner:
    """A lease owner whose process no longer exists (a child that has exited and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not psutil.pid_exists(child.pid)
    return LeaseOwner(child.pid, T0)


def impostor_owner() -> LeaseOwner:
    """This process's pid with the wrong start time: a reused pid, so a dead owner."""
    real = LeaseOwner.current()
    return LeaseOwner(real.pid, real.started_at - 1000.0)


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """Where the queue lives, in a folder that does not exist yet."""
    return tmp_path / "data" / "telemetry.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    """A fresh store, closed after the test."""
    s = Store(db_path)
    yield s
    s.close()


def all_rows(path: Path) -> list[tuple[int, str, str, int, str | None]]:
    """Every queue row as (id, api_key, body, retry_count, lease_owner), through a new reader."""
    reader = sqlite3.connect(path)
    try:
        return reader.execute(
            "SELECT id, api_key, body, retry_count, lease_owner FROM ph_event_queue ORDER BY id"
        ).fetchall()
    finally:
        reader.close()


def queued_bodies(s: Store) -> list[str]:
    """Bodies still in the queue, oldest first."""
    return [row[2] for row in all_rows(s.path)]


def accounted(s: Store) -> int:
    """delivered + queued + every drop counter."""
    status = s.status()
    return status.delivered + status.queued + sum(status.dropped.values())


# --- creation ----------------------------------------------------------------------------


def test_creates_private_folder_and_file(db_path: Path, store: Store) -> None:
    """The folder is created 0700 and the database file 0600."""
    assert stat.S_IMODE(db_path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(db_path.stat().st_mode) == 0o600


def test_wal_files_are_private_too(db_path: Path, store: Store) -> None:
    """After a write, the -wal and -shm files share the database's 0600 mode."""
    store.enqueue("k", bodies(1), max_queue=10)
    for suffix in ("-wal", "-shm"):
        side = Path(f"{db_path}{suffix}")
        assert side.exists()
        assert stat.S_IMODE(side.stat().st_mode) == 0o600


def test_wal_mode_and_schema_version(db_path: Path, store: Store) -> None:
    """The database is in WAL mode with the current user_version."""
    reader = sqlite3.connect(db_path)
    try:
        assert reader.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert reader.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        reader.close()
    assert probe.quick_check(store.path) == "ok"


def test_an_earlier_builds_lease_index_is_dropped_and_its_rows_kept(db_path: Path) -> None:
    """A database made with the lease index of earlier builds opens without it, at the same
    schema version (so an earlier build can still open it), with its queued and leased rows."""
    first = Store(db_path, owner=dead_owner())
    first.enqueue("k", bodies(1, 2, 3), max_queue=10)
    assert probe.claim(first, 1, max_bytes=BIG) is not None
    first.close()
    with sqlite3.connect(db_path) as old:
        old.execute("CREATE INDEX ph_event_queue_lease ON ph_event_queue (lease_owner, id)")
    reopened = Store(db_path)
    try:
        indexes = reopened._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = 'ph_event_queue'"
        ).fetchall()
        assert indexes == []
        assert reopened._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert reopened.recover_leases() == 1
        claim = probe.claim(reopened, 10, max_bytes=BIG)
        assert claim is not None and [e.body for e in claim.events] == bodies(1, 2, 3)
    finally:
        reopened.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    """A database from a newer sidecar is not touched: StorageUnavailable."""
    Store(db_path).close()
    writer = sqlite3.connect(db_path)
    writer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    writer.close()
    with pytest.raises(StorageUnavailable, match="newer"):
        Store(db_path)
    still_open = [f.path for f in psutil.Process().open_files() if f.path.startswith(str(db_path))]
    assert still_open == []


def test_close_twice_is_safe(db_path: Path) -> None:
    """Closing a store a second time does not raise."""
    s = Store(db_path)
    s.close()
    s.close()


# --- enqueue / claim / complete / release / drop -----------------------------------------


def test_enqueue_then_claim_complete(store: Store) -> None:
    """Enqueued events are claimed oldest first and completing them counts them delivered."""
    result = store.enqueue("k", bodies(1, 2, 3), max_queue=10)
    assert (result.accepted, result.dropped_overflow, result.queued) == (3, 0, 3)
    assert not result.opted_out
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    assert claim.api_key == "k"
    assert [e.body for e in claim.events] == bodies(1, 2, 3)
    assert claim.ids == sorted(claim.ids)
    assert all(e.retry_count == 0 for e in claim.events)
    assert probe.claim(store, 10, max_bytes=BIG) is None  # all leased
    assert store.complete(claim.ids) == 3
    assert store.depth() == 0
    assert store.status().delivered == 3
    assert probe.inserted_total(store.path) == 3


def test_claim_on_empty_queue_is_none(store: Store) -> None:
    """Nothing queued: claim returns None."""
    assert probe.claim(store, 5, max_bytes=BIG) is None


def test_leases_are_recorded_with_owner(store: Store) -> None:
    """A claimed row carries this store's owner token; released rows carry none."""
    store.enqueue("k", bodies(1, 2), max_queue=10)
    claim = probe.claim(store, 1, max_bytes=BIG)
    assert claim is not None
    rows = all_rows(store.path)
    assert [r[4] for r in rows] == [store.owner.token, None]
    store.release(claim.ids, count_retry=False)
    assert [r[4] for r in all_rows(store.path)] == [None, None]


def test_release_without_retry_count_keeps_rows(store: Store) -> None:
    """An uncounted release (offline) frees the rows with retry_count unchanged."""
    store.enqueue("k", bodies(1), max_queue=10)
    for _ in range(10):
        claim = probe.claim(store, 5, max_bytes=BIG)
        assert claim is not None
        assert store.release(claim.ids, count_retry=False) == 0
    claim = probe.claim(store, 5, max_bytes=BIG)
    assert claim is not None
    assert claim.events[0].retry_count == 0


def test_drop_counts_under_its_reason(store: Store) -> None:
    """Dropping claimed rows removes them and counts them under the given reason."""
    store.enqueue("k", bodies(1, 2, 3), max_queue=10)
    claim = probe.claim(store, 2, max_bytes=BIG)
    assert claim is not None
    assert store.drop(claim.ids, DropReason.REJECTED) == 2
    status = store.status()
    assert status.dropped == {"overflow": 0, "rejected": 2, "retries_exhausted": 0, "opt_out": 0}
    assert queued_bodies(store) == bodies(3)


def test_complete_and_drop_ignore_unleased_rows(store: Store) -> None:
    """complete/drop only touch rows this store has leased."""
    store.enqueue("k", bodies(1, 2), max_queue=10)
    ids = [row[0] for row in all_rows(store.path)]
    assert store.complete(ids) == 0
    assert store.drop(ids, DropReason.REJECTED) == 0
    assert store.depth() == 2
    assert store.status().delivered == 0
    assert store.complete([]) == 0
    assert store.release([], count_retry=True, exhausted=[]) == 0


def test_complete_and_claim_settles_one_request_and_leases_the_next(store: Store) -> None:
    """complete_and_claim counts the delivered rows and leases the next batch, oldest first,
    with the same rules as claim (one key, the limit, excluded keys); nothing left is None."""
    store.enqueue("a", bodies(1, 2), max_queue=100)
    store.enqueue("b", bodies(3), max_queue=100)
    store.enqueue("a", bodies(4, 5), max_queue=100)
    store.set_last_error("HTTP 503 from capture")
    first = probe.claim(store, 2, max_bytes=BIG)
    assert first is not None and [e.body for e in first.events] == bodies(1, 2)
    done, second = store.complete_and_claim(first.ids, 2, max_bytes=BIG, exclude_keys=["b"])
    assert done == 2
    assert second is not None
    assert (second.api_key, [e.body for e in second.events]) == ("a", bodies(4, 5))
    status = store.status()
    assert (status.delivered, status.queued, status.last_error) == (2, 3, None)
    done, third = store.complete_and_claim(second.ids, 2, max_bytes=BIG)
    assert done == 2 and third is not None and [e.body for e in third.events] == bodies(3)
    assert store.complete_and_claim(third.ids, 2, max_bytes=BIG) == (1, None)
    assert store.complete_and_claim([], 2, max_bytes=BIG) == (0, None)
    assert accounted(store) == probe.inserted_total(store.path) == 5


def test_complete_clears_last_error(store: Store) -> None:
    """A delivery clears the last error; without one, it stays."""
    store.set_last_error("HTTP 503 from capture")
    assert store.status().last_error == "HTTP 503 from capture"
    store.enqueue("k", bodies(1), max_queue=10)
    assert store.complete([]) == 0
    assert store.status().last_error == "HTTP 503 from capture"
    claim = probe.claim(store, 1, max_bytes=BIG)
    assert claim is not None
    store.complete(claim.ids)
    assert store.status().last_error is None


# --- overflow --------------------------------------------------------------------------------


def test_overflow_drops_the_oldest(store: Store) -> None:
    """Past max_queue, the oldest events are dropped and counted."""
    store.enqueue("k", bodies(1, 2, 3), max_queue=4)
    result = store.enqueue("k", bodies(4, 5, 6), max_queue=4)
    assert (result.accepted, result.dropped_overflow, result.queued) == (3, 2, 4)
    assert queued_bodies(store) == bodies(3, 4, 5, 6)
    assert store.status().dropped["overflow"] == 2


def test_overflow_within_one_batch_keeps_the_newest(store: Store) -> None:
    """A single batch larger than the bound keeps only its newest events."""
    result = store.enqueue("k", bodies(*range(10)), max_queue=3)
    assert (result.accepted, result.dropped_overflow, result.queued) == (10, 7, 3)
    assert queued_bodies(store) == bodies(7, 8, 9)


def test_overflow_drops_the_oldest_even_when_in_flight(store: Store) -> None:
    """The oldest rows go first whether or not they are on the wire, as the contract says."""
    store.enqueue("k", bodies(1, 2, 3), max_queue=5)
    claim = probe.claim(store, 2, max_bytes=BIG)  # 1 and 2 are in flight
    assert claim is not None
    store.enqueue("k", bodies(4, 5, 6), max_queue=5)
    assert queued_bodies(store) == bodies(2, 3, 4, 5, 6)
    store.enqueue("k", bodies(7), max_queue=4)
    assert queued_bodies(store) == bodies(4, 5, 6, 7)
    assert store.status().dropped["overflow"] == 1 + 2
    assert store.complete(claim.ids) == 0  # dropped rows are counted once, as overflow
    assert store.status().delivered == 0


# --- claim rules ---------------------------------------------------------------------------


def test_claim_takes_one_api_key_at_a_time_oldest_first(store: Store) -> None:
    """A claim holds only the key of the oldest free event, in id order."""
    store.enqueue("a", bodies(1), max_queue=100)
    store.enqueue("b", bodies(2), max_queue=100)
    store.enqueue("a", bodies(3), max_queue=100)
    first = probe.claim(store, 10, max_bytes=BIG)
    assert first is not None
    assert (first.api_key, [e.body for e in first.events]) == ("a", bodies(1, 3))
    second = probe.claim(store, 10, max_bytes=BIG)
    assert second is not None
    assert (second.api_key, [e.body for e in second.events]) == ("b", bodies(2))


def test_claim_respects_limit(store: Store) -> None:
    """At most `limit` events are leased per claim, the oldest ones."""
    store.enqueue("k", bodies(*range(7)), max_queue=100)
    sizes = []
    while (claim := probe.claim(store, 3, max_bytes=BIG)) is not None:
        sizes.append([e.body for e in claim.events])
    assert sizes == [bodies(0, 1, 2), bodies(3, 4, 5), bodies(6)]


def test_claim_respects_max_bytes(store: Store) -> None:
    """Events are added while the total stays within max_bytes (sizes in UTF-8 bytes)."""
    events = ["a" * 40, "é" * 20, "c" * 40, "d" * 10]  # é is two bytes: 40 bytes
    store.enqueue("k", events, max_queue=100)
    claim = probe.claim(store, 10, max_bytes=80)
    assert claim is not None
    assert [e.body for e in claim.events] == events[:2]
    claim = probe.claim(store, 10, max_bytes=50)
    assert claim is not None
    assert [e.body for e in claim.events] == events[2:]


def test_claim_always_takes_the_first_event(store: Store) -> None:
    """An event bigger than max_bytes is still claimed, alone, so it cannot block the queue."""
    store.enqueue("k", ["x" * 500, "y"], max_queue=100)
    claim = probe.claim(store, 10, max_bytes=100)
    assert claim is not None
    assert [e.body for e in claim.events] == ["x" * 500]


def test_claim_excludes_keys(store: Store) -> None:
    """exclude_keys skips held keys; with every key excluded, nothing is claimed."""
    store.enqueue("held", bodies(1), max_queue=100)
    store.enqueue("ok", bodies(2), max_queue=100)
    store.enqueue("other", bodies(3), max_queue=100)
    claim = probe.claim(store, 10, max_bytes=BIG, exclude_keys={"held"})
    assert claim is not None
    assert (claim.api_key, [e.body for e in claim.events]) == ("ok", bodies(2))
    assert probe.claim(store, 10, max_bytes=BIG, exclude_keys=["held", "other"]) is None
    claim = probe.claim(store, 10, max_bytes=BIG, exclude_keys=["ok"])
    assert claim is not None
    assert claim.api_key == "held"


# --- retries -------------------------------------------------------------------------------


def fail_counted(s: Store, leased: Claim, max_retries: int) -> int:
    """A counted failure (HTTP 503) of `leased`, carried out as the sender does: the delivery
    policy names the rows past max_retries, the store drops them and releases the rest."""
    decision = policy.decide(
        policy.Response(503), leased.events, failures=0,
        rules=policy.Rules(max_retries=max_retries), wall=lambda: WALL, rng=random.Random(0),
    )
    assert isinstance(decision, policy.Retry) and decision.counted
    return s.release(leased.ids, count_retry=True, exhausted=decision.exhausted)


def test_release_drops_the_exhausted_rows_and_counts_a_retry_on_the_rest(store: Store) -> None:
    """A counted release drops exactly the rows named exhausted (counted as retries exhausted)
    and gives the others back with one more failure; an uncounted one changes no count."""
    store.enqueue("k", bodies(1, 2, 3), max_queue=10)
    leased = probe.claim(store, 10, max_bytes=BIG)
    assert leased is not None
    first, second, third = leased.ids
    assert store.release(leased.ids, count_retry=True, exhausted=[second]) == 1
    rows = [(r[0], r[3], r[4]) for r in all_rows(store.path)]
    assert rows == [(first, 1, None), (third, 1, None)]
    assert store.status().dropped["retries_exhausted"] == 1
    assert store.depth() == 2
    again = probe.claim(store, 10, max_bytes=BIG)
    assert again is not None
    assert store.release(again.ids, count_retry=False) == 0
    assert [(r[3], r[4]) for r in all_rows(store.path)] == [(1, None), (1, None)]


def fail_until_dropped(s: Store, max_retries: int) -> int:
    """Claim and fail the one queued event (counted) until it is dropped; return attempts."""
    attempts = 0
    while (claim := probe.claim(s, 1, max_bytes=BIG)) is not None:
        attempts += 1
        assert claim.events[0].retry_count == attempts - 1
        fail_counted(s, claim, max_retries)
        assert attempts <= 100
    return attempts


@pytest.mark.parametrize("max_retries", [0, 1, 2, 5])
def test_max_retries_bounds_attempts(store: Store, max_retries: int) -> None:
    """With --max-retries N an event is sent N+1 times, then dropped as retries_exhausted."""
    store.enqueue("k", bodies(1), max_queue=10)
    assert fail_until_dropped(store, max_retries) == max_retries + 1
    status = store.status()
    assert status.queued == 0
    assert status.dropped["retries_exhausted"] == 1


def test_max_retries_zero_drops_after_first_failure(store: Store) -> None:
    """max_retries=0: the first counted failure drops the events and returns how many."""
    store.enqueue("k", bodies(1, 2), max_queue=10)
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    assert fail_counted(store, claim, 0) == 2
    assert store.depth() == 0


def test_max_retries_two_drops_after_third_failure(store: Store) -> None:
    """max_retries=2: two counted failures keep the event, the third drops it."""
    store.enqueue("k", bodies(1), max_queue=10)
    for expected_drop in (0, 0, 1):
        claim = probe.claim(store, 1, max_bytes=BIG)
        assert claim is not None
        assert fail_counted(store, claim, 2) == expected_drop
    assert store.depth() == 0


def test_retry_counts_are_per_row(store: Store) -> None:
    """Only rows that failed often enough are dropped; newer rows stay."""
    store.enqueue("k", bodies(1), max_queue=10)
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    fail_counted(store, claim, 1)  # row 1 at 1
    store.enqueue("k", bodies(2), max_queue=10)
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    assert [e.retry_count for e in claim.events] == [1, 0]
    assert fail_counted(store, claim, 1) == 1
    assert queued_bodies(store) == bodies(2)


# --- two processes on one file ---------------------------------------------------------------


def test_two_stores_never_claim_the_same_rows(db_path: Path) -> None:
    """Two stores with different owners on one file lease disjoint rows."""
    first = Store(db_path, owner=LeaseOwner.current())
    second = Store(db_path, owner=impostor_owner())
    try:
        first.enqueue("k", bodies(*range(10)), max_queue=100)
        claimed: list[list[int]] = []
        for s in (first, second, first, second, second, first):
            claim = probe.claim(s, 3, max_bytes=BIG)
            if claim is not None:
                claimed.append(claim.ids)
        flat = [i for ids in claimed for i in ids]
        assert len(flat) == len(set(flat)) == 10
        assert probe.claim(second, 3, max_bytes=BIG) is None
    finally:
        first.close()
        second.close()


def test_a_store_cannot_complete_another_owners_lease(db_path: Path) -> None:
    """complete/release/drop by a different owner leave the other's leased rows alone."""
    first = Store(db_path, owner=LeaseOwner.current())
    second = Store(db_path, owner=impostor_owner())
    try:
        first.enqueue("k", bodies(1, 2), max_queue=100)
        claim = probe.claim(first, 10, max_bytes=BIG)
        assert claim is not None
        assert second.complete(claim.ids) == 0
        assert second.drop(claim.ids, DropReason.REJECTED) == 0
        assert second.release(claim.ids, count_retry=True, exhausted=claim.ids) == 0
        assert [r[4] for r in all_rows(db_path)] == [first.owner.token] * 2
        assert first.complete(claim.ids) == 2
    finally:
        first.close()
        second.close()


# --- lease recovery -------------------------------------------------------------------------


def test_lease_owner_liveness() -> None:
    """This process is alive; a reaped child, a wrong start time and garbage are not."""
    assert LeaseOwner.is_alive(LeaseOwner.current().token)
    assert not LeaseOwner.is_alive(dead_owner().token)
    assert not LeaseOwner.is_alive(impostor_owner().token)
    assert not LeaseOwner.is_alive("garbage")
    assert not LeaseOwner.is_alive("-1:0")


def test_recover_leases_frees_dead_owners_only(db_path: Path) -> None:
    """Rows leased by dead owners are freed; a live owner's rows stay leased."""
    live = Store(db_path)  # this process: alive
    gone = Store(db_path, owner=dead_owner())
    reused = Store(db_path, owner=impostor_owner())
    recoverer = Store(db_path, owner=dead_owner())
    try:
        live.enqueue("k", bodies(*range(6)), max_queue=100)
        live_claim = probe.claim(live, 2, max_bytes=BIG, now=T0)
        gone_claim = probe.claim(gone, 2, max_bytes=BIG, now=T0)
        reused_claim = probe.claim(reused, 1, max_bytes=BIG, now=T0)
        assert live_claim and gone_claim and reused_claim
        assert recoverer.recover_leases(now=T0 + 1) == 3
        owners = [r[4] for r in all_rows(db_path)]
        assert owners == [live.owner.token] * 2 + [None] * 4
        assert recoverer.recover_leases(now=T0 + 1) == 0
        reclaimed = probe.claim(recoverer, 10, max_bytes=BIG, now=T0 + 2)
        assert reclaimed is not None
        assert reclaimed.ids == gone_claim.ids + reused_claim.ids + [all_rows(db_path)[5][0]]
    finally:
        for s in (live, gone, reused, recoverer):
            s.close()


def test_recover_leases_frees_stale_leases_of_live_owners(db_path: Path) -> None:
    """A lease older than STALE_LEASE_S is freed even when its owner lives; a younger one not."""
    live = Store(db_path)
    other = Store(db_path, owner=impostor_owner())
    try:
        live.enqueue("k", bodies(1, 2), max_queue=100)
        old = probe.claim(live, 1, max_bytes=BIG, now=T0)
        young = probe.claim(live, 1, max_bytes=BIG, now=T0 + 100)
        assert old and young
        assert other.recover_leases(now=T0 + STALE_LEASE_S - 1) == 0
        assert other.recover_leases(now=T0 + STALE_LEASE_S + 1) == 1
        assert [r[4] for r in all_rows(db_path)] == [None, live.owner.token]
    finally:
        live.close()
        other.close()


def test_recover_leases_keeps_own_fresh_leases(store: Store) -> None:
    """A store does not free its own in-flight leases."""
    store.enqueue("k", bodies(1), max_queue=10)
    assert probe.claim(store, 1, max_bytes=BIG, now=T0) is not None
    assert store.recover_leases(now=T0 + 1) == 0
    assert probe.claim(store, 1, max_bytes=BIG, now=T0 + 1) is None


def test_holdings_show_free_rows_and_the_other_holders_with_their_oldest_lease(
    db_path: Path,
) -> None:
    """`holdings` says whether rows of keys not excluded are free, and lists every other
    process holding leases with its oldest `leased_at`; the reader's own leases are not listed."""
    reader = Store(db_path)
    first = Store(db_path, owner=impostor_owner())
    second = Store(db_path, owner=dead_owner())
    try:
        reader.enqueue("k", bodies(1, 2, 3), max_queue=100)
        reader.enqueue("other", bodies(4), max_queue=100)
        assert reader.holdings().free
        assert reader.holdings().holders == {}
        assert probe.claim(first, 1, max_bytes=BIG, now=T0) is not None
        assert probe.claim(first, 1, max_bytes=BIG, now=T0 + 5) is not None
        assert probe.claim(second, 1, max_bytes=BIG, now=T0 + 7) is not None
        assert probe.claim(reader, 1, max_bytes=BIG, now=T0 + 9) is not None  # key "other"
        held = reader.holdings()
        assert held.holders == {first.owner.token: T0, second.owner.token: T0 + 7}
        assert not held.free
        reader.enqueue("k", bodies(5), max_queue=100)
        assert reader.holdings().free
        assert not reader.holdings(exclude_keys=["k"]).free
    finally:
        for s in (reader, first, second):
            s.close()


# --- opt-out -------------------------------------------------------------------------------


def test_opt_out_purges_and_refuses(store: Store) -> None:
    """Opting out purges the queue and refuses later events, all counted as opt_out."""
    store.enqueue("k", bodies(1, 2, 3), max_queue=10)
    assert store.set_opt_out(True) == 3
    assert store.opted_out()
    assert store.depth() == 0
    refused = store.enqueue("k", bodies(4, 5), max_queue=10)
    assert (refused.accepted, refused.dropped_overflow, refused.queued) == (0, 0, 0)
    assert refused.opted_out
    assert store.depth() == 0
    status = store.status()
    assert status.opted_out
    assert status.dropped["opt_out"] == 5
    assert store.set_opt_out(False) == 0
    assert not store.opted_out()
    accepted = store.enqueue("k", bodies(6), max_queue=10)
    assert (accepted.accepted, accepted.queued, accepted.opted_out) == (1, 1, False)
    assert store.status().dropped["opt_out"] == 5


def test_opt_out_twice_purges_nothing_more(store: Store) -> None:
    """Opting out when already out purges nothing and counts nothing more."""
    store.set_opt_out(True)
    assert store.set_opt_out(True) == 0
    assert store.status().dropped["opt_out"] == 0


# --- status and persistence -------------------------------------------------------------------


def test_status_snapshot(store: Store) -> None:
    """status() reports depth, oldest created_at, counters, opt-out and last error."""
    empty = store.status()
    assert (empty.queued, empty.oldest_created_at, empty.delivered) == (0, None, 0)
    assert empty.dropped == {"overflow": 0, "rejected": 0, "retries_exhausted": 0, "opt_out": 0}
    assert (empty.opted_out, empty.last_error) == (False, None)
    store.enqueue("k", bodies(1), max_queue=10, now=T0)
    store.enqueue("k", bodies(2, 3), max_queue=10, now=T0 + 5)
    claim = probe.claim(store, 1, max_bytes=BIG)
    assert claim is not None
    store.complete(claim.ids)
    store.set_last_error("HTTP 500 from capture")
    status = store.status()
    assert status.queued == 2
    assert status.oldest_created_at == T0 + 5
    assert status.delivered == 1
    assert status.last_error == "HTTP 500 from capture"
    store.set_last_error(None)
    assert store.status().last_error is None


def test_counters_and_queue_persist_after_reopen(db_path: Path) -> None:
    """Counters, opt-out, last error and queued events survive close and reopen."""
    s = Store(db_path)
    s.enqueue("k", bodies(1, 2, 3, 4), max_queue=3)  # one overflow
    claim = probe.claim(s, 1, max_bytes=BIG)
    assert claim is not None
    s.complete(claim.ids)
    claim = probe.claim(s, 1, max_bytes=BIG)
    assert claim is not None
    s.drop(claim.ids, DropReason.REJECTED)
    s.set_last_error("boom")
    before = s.status()
    s.close()
    reopened = Store(db_path)
    try:
        after = reopened.status()
        assert after == before
        assert after.delivered == 1
        assert after.dropped["overflow"] == 1
        assert after.dropped["rejected"] == 1
        assert after.queued == 1
        assert probe.inserted_total(reopened.path) == 4
    finally:
        reopened.close()


def test_opt_out_persists_after_reopen(db_path: Path) -> None:
    """The opt-out flag is kept on disk."""
    s = Store(db_path)
    s.set_opt_out(True)
    s.close()
    reopened = Store(db_path)
    try:
        assert reopened.opted_out()
        assert reopened.enqueue("k", bodies(1), max_queue=10).opted_out
    finally:
        reopened.close()


# --- damaged databases --------------------------------------------------------------------


def test_open_store_on_a_good_database_sets_nothing_aside(db_path: Path) -> None:
    """A healthy database is opened as is, its rows kept."""
    s = Store(db_path)
    s.enqueue("k", bodies(1), max_queue=10)
    s.close()
    reopened, aside = open_store(db_path)
    try:
        assert aside is None
        assert reopened.depth() == 1
    finally:
        reopened.close()


def test_open_store_quarantines_a_garbage_file(db_path: Path) -> None:
    """A file that is not a database is set aside and a working empty store takes its place."""
    db_path.parent.mkdir(parents=True)
    garbage = b"this is not sqlite " * 500
    db_path.write_bytes(garbage)
    Path(f"{db_path}-wal").write_bytes(b"W" * 100)
    Path(f"{db_path}-shm").write_bytes(b"S" * 100)
    fresh, aside = open_store(db_path)
    try:
        assert aside is not None
        assert aside.parent == db_path.parent
        assert aside.name.startswith("telemetry.db.corrupt-")
        assert aside.read_bytes() == garbage
        # The old -wal must not sit beside the new database.
        wal = Path(f"{db_path}-wal")
        assert not wal.exists() or not wal.read_bytes().startswith(b"W" * 100)
        assert probe.quick_check(fresh.path) == "ok"
        fresh.enqueue("k", bodies(1), max_queue=10)
        claim = probe.claim(fresh, 10, max_bytes=BIG)
        assert claim is not None
        assert fresh.complete(claim.ids) == 1
    finally:
        fresh.close()


def test_quarantine_moves_wal_and_shm_with_the_database(tmp_path: Path) -> None:
    """The database and its -wal and -shm are renamed aside together."""
    path = tmp_path / "telemetry.db"
    for suffix, content in (("", b"D"), ("-wal", b"W"), ("-shm", b"S")):
        Path(f"{path}{suffix}").write_bytes(content)
    aside = store_module._quarantine(path)
    assert not path.exists()
    assert not Path(f"{path}-wal").exists()
    assert not Path(f"{path}-shm").exists()
    assert aside.read_bytes() == b"D"
    assert Path(f"{aside}-wal").read_bytes() == b"W"
    assert Path(f"{aside}-shm").read_bytes() == b"S"


def make_full_database(path: Path) -> int:
    """Fill a database with enough rows to span many pages; returns the row count."""
    s = Store(path)
    for _ in range(20):
        s.enqueue("k", ["x" * 3000] * 10, max_queue=10_000)
    s.close()
    return 200


def test_open_store_quarantines_a_truncated_file(db_path: Path) -> None:
    """A database cut short is set aside and replaced by a working store."""
    make_full_database(db_path)
    data = db_path.read_bytes()
    db_path.write_bytes(data[: len(data) // 2])
    fresh, aside = open_store(db_path)
    try:
        assert aside is not None
        assert aside.stat().st_size == len(data) // 2
        assert fresh.depth() == 0
        fresh.enqueue("k", bodies(1), max_queue=10)
        assert fresh.depth() == 1
    finally:
        fresh.close()


def test_open_store_closes_a_damaged_database_before_moving_it(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that fails quick_check is closed before it is renamed (Windows needs that)."""
    make_full_database(db_path)
    damaged = bytearray(db_path.read_bytes())
    damaged[4096 * 50 : 4096 * 51] = random.Random(1).randbytes(4096)
    db_path.write_bytes(bytes(damaged))
    real_quarantine = store_module._quarantine
    open_at_rename: list[str] = []

    def checking_quarantine(path: Path) -> Path:
        open_at_rename.extend(
            f.path for f in psutil.Process().open_files() if f.path.startswith(str(path))
        )
        return real_quarantine(path)

    monkeypatch.setattr(store_module, "_quarantine", checking_quarantine)
    fresh, aside = open_store(db_path)
    try:
        assert aside is not None
        assert open_at_rename == []
        assert probe.quick_check(fresh.path) == "ok"
    finally:
        fresh.close()


# --- storage unavailable ------------------------------------------------------------------


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_is_storage_unavailable(tmp_path: Path) -> None:
    """A folder that refuses new files gives StorageUnavailable, not a crash."""
    folder = tmp_path / "ro"
    folder.mkdir(mode=0o500)
    try:
        with pytest.raises(StorageUnavailable):
            Store(folder / "telemetry.db")
    finally:
        folder.chmod(0o700)


def test_unusable_path_is_storage_unavailable(tmp_path: Path) -> None:
    """A data folder path that is a file gives StorageUnavailable."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StorageUnavailable):
        Store(blocker / "telemetry.db")


def test_full_disk_is_storage_unavailable_and_keeps_earlier_rows(store: Store) -> None:
    """When the database cannot grow, enqueue raises StorageUnavailable and stores nothing."""
    store.enqueue("k", bodies(1, 2), max_queue=100)
    before = store.status()
    inserted = probe.inserted_total(store.path)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages + 2}")
    with pytest.raises(StorageUnavailable):
        store.enqueue("k", ["y" * 100_000] * 3, max_queue=100)
    assert queued_bodies(store) == bodies(1, 2)
    assert store.status() == before
    assert probe.inserted_total(store.path) == inserted
    # The store still works once there is room again.
    store._db.execute("PRAGMA max_page_count = 1073741823")
    assert store.enqueue("k", ["y" * 100_000], max_queue=100).queued == 3


# --- accounting ---------------------------------------------------------------------------


def test_accounting_identity_after_a_mixed_sequence(store: Store) -> None:
    """inserted == delivered + queued + sum(dropped) after every step of a mixed run."""
    steps = 0

    def check() -> None:
        nonlocal steps
        steps += 1
        assert probe.inserted_total(store.path) == accounted(store), f"after step {steps}"

    store.enqueue("a", bodies(*range(8)), max_queue=6)  # 2 overflow
    check()
    claim = probe.claim(store, 3, max_bytes=BIG)
    assert claim is not None
    store.complete(claim.ids)
    check()
    store.enqueue("b", bodies(*range(10, 14)), max_queue=6)  # overflow again
    check()
    claim = probe.claim(store, 2, max_bytes=BIG)
    assert claim is not None
    store.drop(claim.ids[:1], DropReason.REJECTED)
    store.release(claim.ids[1:], count_retry=True, exhausted=claim.ids[1:])
    check()
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    store.release(claim.ids, count_retry=False)
    check()
    leased = probe.claim(store, 1, max_bytes=BIG)
    assert leased is not None
    store.enqueue("a", bodies(*range(20, 30)), max_queue=4)
    check()
    store.set_opt_out(True)
    check()
    store.enqueue("a", bodies(40, 41), max_queue=4)  # refused
    check()
    store.set_opt_out(False)
    store.enqueue("b", bodies(50, 51, 52), max_queue=4)
    assert store.complete(leased.ids) == 0  # purged while in flight
    claim = probe.claim(store, 10, max_bytes=BIG)
    assert claim is not None
    store.complete(claim.ids)
    check()
    status = store.status()
    assert status.delivered == 6
    assert status.queued == 0
    assert status.dropped["opt_out"] == 4 + 2
    assert probe.inserted_total(store.path) == 8 + 4 + 10 + 2 + 3
