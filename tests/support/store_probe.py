"""What tests ask of a queue database that the product never asks: a bare claim, SQLite's
consistency check, and the `inserted` counter, read the way a test can trust.

The product leases through `Store.complete_and_claim` only; `claim` is that with nothing to
complete. The two reads go through a connection of their own, so they see what is committed on
disk rather than anything the store under test holds in memory.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Collection
from pathlib import Path

from sidecar.queue.store import Claim, Store


def claim(
    store: Store,
    limit: int,
    *,
    max_bytes: int,
    exclude_keys: Collection[str] = (),
    now: float | None = None,
) -> Claim | None:
    """Lease the oldest free events of one api key (see `Store.complete_and_claim`)."""
    completed, leased = store.complete_and_claim(
        (), limit, max_bytes=max_bytes, exclude_keys=exclude_keys, now=now
    )
    assert completed == 0
    return leased


def quick_check(path: Path) -> str:
    """SQLite's `PRAGMA quick_check` of the database at `path`: 'ok' or the first problem."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("PRAGMA quick_check").fetchone()
    return str(row[0]) if row else "no answer"


def inserted_total(path: Path) -> int:
    """Events ever handed to `enqueue` (stored, or refused while opted out): it equals
    delivered + queued + the sum of the drop counters."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        row = db.execute("SELECT value FROM ph_meta WHERE key = 'inserted'").fetchone()
    return int(row[0]) if row and isinstance(row[0], int) else 0
