"""Per-row leases against one sender per queue: the store's cost per request while a backlog drains.

    .venv/bin/python bench/ownership.py [--events 20000] [--rounds 3]

Each run drains a copy of one queue file through `complete_and_claim` at batch 50, as the sender
does (delete the delivered batch and take the next in one transaction), and prints the store's
CPU, wall time and write-ahead-log bytes per request. The two designs run in turns on identical
copies, at both durability levels:

- `leases`: the product's `Store`. A claim writes its owner on each row (`UPDATE … SET
  lease_owner`), a completion deletes the rows still leased to it.
- `owner`: a prototype of one sender per queue. The sending process is recorded once in `ph_meta`
  (pid and start time, taken over when that process is gone, given up when the queue is empty);
  a claim only reads the oldest rows, a completion deletes them. Other processes only enqueue.

- `ranges`: a third design for comparison: each process leases one range of ids of one key,
  recorded as one `ph_meta` entry, so processes still send side by side without writing every row.

The log is never checkpointed during a run, so its size is everything the runs wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Collection, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT)]

from sidecar.queue.durability import Durability  # noqa: E402
from sidecar.queue.store import (  # noqa: E402
    _PUT_META,
    Claim,
    LeaseOwner,
    Store,
    _marks,
    fill_batch,
)
from sidecar_dev.harness import TEST_KEY, pageviews  # noqa: E402

BATCH = 50
MAX_BYTES = 5 * 1024 * 1024
_SENDER = "sender"  # ph_meta key of the owner token in the prototype


def _delete_rows(db: sqlite3.Connection, ids: Sequence[int]) -> int:
    """Delete rows by id alone: in the prototypes a row carries no lease to check."""
    if not ids:
        return 0
    return db.execute(
        f"DELETE FROM ph_event_queue WHERE id IN ({_marks(len(ids))})",
        list(ids),
    ).rowcount


class OwnedStore(Store):
    """The prototype: rows carry no lease; the queue has one sending process at a time."""

    def _claim(
        self,
        db: sqlite3.Connection,
        limit: int,
        max_bytes: int,
        exclude_keys: Collection[str],
        now: float | None,
    ) -> Claim | None:
        row = db.execute("SELECT value FROM ph_meta WHERE key = ?", (_SENDER,)).fetchone()
        sender = None if row is None else row[0]
        if sender != self._owner_token:
            if sender is not None and LeaseOwner.is_alive(str(sender)):
                return None  # another process sends; this one only enqueues
            db.execute(_PUT_META, (_SENDER, self._owner_token))
        excluded = list(exclude_keys)
        key_filter = f"WHERE api_key NOT IN ({_marks(len(excluded))})" if excluded else ""
        first = db.execute(
            f"SELECT id, api_key FROM ph_event_queue {key_filter} ORDER BY id LIMIT 1",
            excluded,
        ).fetchone()
        if first is None:
            db.execute(_PUT_META, (_SENDER, None))  # nothing to send: let another take over
            return None
        first_id, api_key = int(first[0]), str(first[1])
        candidates = db.execute(
            "SELECT id, body, retry_count FROM ph_event_queue "
            "WHERE id >= ? AND api_key = ? ORDER BY id LIMIT ?",
            (first_id, api_key, limit),
        ).fetchall()
        chosen = fill_batch(candidates, max_bytes)
        return Claim(api_key, tuple(chosen))

    def _delete_mine(self, db: sqlite3.Connection, ids: Sequence[int]) -> int:
        return _delete_rows(db, ids)


class RangeStore(Store):
    """A third design, for comparison: each process leases one range of ids of one key, kept
    as one `ph_meta` entry (`lease:<owner>`), instead of writing its owner on every row. Claims
    skip the other processes' ranges and rows leased the per-row way."""

    def _claim(
        self,
        db: sqlite3.Connection,
        limit: int,
        max_bytes: int,
        exclude_keys: Collection[str],
        now: float | None,
    ) -> Claim | None:
        mine = f"lease:{self._owner_token}"
        ranges = [
            (str(key), *str(value).split("\x1f")[:3])
            for key, value in db.execute(
                "SELECT key, value FROM ph_meta WHERE key >= 'lease:' AND key < 'lease;'"
            )
            if key != mine
        ]
        excluded = list(exclude_keys)
        key_filter = f"AND api_key NOT IN ({_marks(len(excluded))})" if excluded else ""
        skip = "".join(" AND NOT (api_key = ? AND id BETWEEN ? AND ?)" for _ in ranges)
        skip_args = [arg for _, key, first, last in ranges for arg in (key, int(first), int(last))]
        first_row = db.execute(
            f"SELECT id, api_key FROM ph_event_queue WHERE lease_owner IS NULL {key_filter}"
            f"{skip} ORDER BY id LIMIT 1",
            [*excluded, *skip_args],
        ).fetchone()
        if first_row is None:
            db.execute("DELETE FROM ph_meta WHERE key = ?", (mine,))
            return None
        first_id, api_key = int(first_row[0]), str(first_row[1])
        candidates = db.execute(
            "SELECT id, body, retry_count FROM ph_event_queue "
            f"WHERE id >= ? AND lease_owner IS NULL AND api_key = ?{skip} ORDER BY id LIMIT ?",
            (first_id, api_key, *skip_args, limit),
        ).fetchall()
        chosen = fill_batch(candidates, max_bytes)
        leased_at = time.time() if now is None else now
        record = f"{api_key}\x1f{chosen[0].id}\x1f{chosen[-1].id}\x1f{leased_at}"
        db.execute(_PUT_META, (mine, record))
        return Claim(api_key, tuple(chosen))

    def _delete_mine(self, db: sqlite3.Connection, ids: Sequence[int]) -> int:
        return _delete_rows(db, ids)


def make_backlog(path: Path, events: int, pad: int) -> None:
    """A queue file holding `events` page views of one key (each with `pad` more characters),
    checkpointed into the main file."""
    views = pageviews(events)
    for view in views:
        view["properties"]["pad"] = "x" * pad
    bodies = [json.dumps(e, separators=(",", ":")) for e in views]
    store = Store(path, durability=Durability.NORMAL)
    try:
        store.enqueue(TEST_KEY, bodies, max_queue=events)
    finally:
        store.close()


def drain_once(
    design: str, source: Path, workdir: Path, durability: Durability
) -> dict[str, float]:
    """Drain a fresh copy of `source` with one design; per-request figures."""
    target = workdir / f"{design}-{durability.value}.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    shutil.copyfile(source, target)
    kind = {"leases": Store, "owner": OwnedStore, "ranges": RangeStore}[design]
    store = kind(target, durability=durability)
    store._db.execute("PRAGMA wal_autocheckpoint = 0")
    wal_before = os.stat(f"{target}-wal").st_size
    requests = 0
    ids: list[int] = []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    while True:
        _, claim = store.complete_and_claim(ids, BATCH, max_bytes=MAX_BYTES)
        if claim is None:
            break
        ids = claim.ids
        requests += 1
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    wal = os.stat(f"{target}-wal").st_size - wal_before
    assert store.depth() == 0
    store._db.close()
    return {"cpu_ms": 1000 * cpu / requests, "wall_ms": 1000 * wall / requests,
            "wal_kib": wal / requests / 1024}


def main() -> int:
    """Run both designs in turns and print a table of medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pad", type=int, default=0,
                        help="characters added to each ~400-byte page view")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="ownership-") as folder:
        workdir = Path(folder)
        source = workdir / "backlog.db"
        make_backlog(source, args.events, args.pad)
        results: dict[tuple[str, str], list[dict[str, float]]] = {}
        for _ in range(args.rounds):
            for durability in (Durability.NORMAL, Durability.FULL):
                for design in ("leases", "owner", "ranges"):
                    figures = drain_once(design, source, workdir, durability)
                    results.setdefault((design, durability.value), []).append(figures)
    print(f"# store cost per request: {args.events:,} events (+{args.pad} B each), "
          f"batch {BATCH}, {args.rounds} rounds in turns, medians\n")
    print("| design | durability | store CPU ms/request | wall ms/request | WAL KiB/request |")
    print("|---|---|---|---|---|")
    for (design, level), runs in sorted(results.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        def med(name: str, runs: list[dict[str, float]] = runs) -> float:
            return statistics.median(run[name] for run in runs)

        print(f"| {design} | {level} | {med('cpu_ms'):.3f} | {med('wall_ms'):.3f} | "
              f"{med('wal_kib'):.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
