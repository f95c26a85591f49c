"""The durable queue: plain synchronous SQLite, one connection, explicit transactions.

Every write happens in `BEGIN IMMEDIATE`, so two processes on one database serialise on the
write lock instead of failing halfway. Rows being sent carry a lease (the owner's pid and
start time); a lease whose owner no longer runs is taken back at the next start.
The trio side calls this through `AsyncStore` (see `sidecar.queue.astore`).
"""

from __future__ import annotations

import contextlib
import enum
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from sidecar.queue.durability import Durability, connection_pragmas

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_QUEUED = "queued"  # ph_meta key of the queue depth
BUSY_TIMEOUT_MS = 5000
# A lease held this long by a live process is a hang or a bug; take it back anyway.
STALE_LEASE_S = 600.0
# `compact` gives space back only past these: 64 free pages (256 KiB), a 256 KiB WAL.
COMPACT_FREE_PAGES = 64
COMPACT_WAL_BYTES = 256 * 1024

# The queue's tables, also used by bench/ingest.py for its plain-sqlite3 ceiling.
SCHEMA = """
CREATE TABLE IF NOT EXISTS ph_event_queue (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    api_key     TEXT    NOT NULL,
    body        TEXT    NOT NULL,
    created_at  REAL    NOT NULL,
    retry_count INTEGER NOT NULL DEFAULT 0,
    lease_owner TEXT,
    leased_at   REAL
);
CREATE TABLE IF NOT EXISTS ph_meta (
    key   TEXT PRIMARY KEY,
    value
) WITHOUT ROWID;
"""

# SQLite primary result codes that mean "the disk or the file will not take writes".
_UNAVAILABLE_CODES = {
    sqlite3.SQLITE_FULL,
    sqlite3.SQLITE_READONLY,
    sqlite3.SQLITE_CANTOPEN,
    sqlite3.SQLITE_IOERR,
    sqlite3.SQLITE_PERM,
    sqlite3.SQLITE_NOTADB,
    sqlite3.SQLITE_CORRUPT,
}


class StorageUnavailable(Exception):
    """The queue cannot take writes now (disk full, read-only, unopenable); nothing was stored."""


class DropReason(enum.StrEnum):
    """Why events left the queue without being delivered; each has a persistent counter."""

    OVERFLOW = "overflow"
    REJECTED = "rejected"
    RETRIES_EXHAUSTED = "retries_exhausted"
    OPT_OUT = "opt_out"


@dataclass(frozen=True, slots=True)
class QueuedEvent:
    """One stored event: its row id, its normalised JSON text and its counted failures."""

    id: int
    body: str
    retry_count: int


@dataclass(frozen=True, slots=True)
class Claim:
    """Events leased for one request: all of one api key, oldest first."""

    api_key: str
    events: tuple[QueuedEvent, ...]

    @property
    def ids(self) -> list[int]:
        """The row ids, for completing or releasing the claim."""
        return [event.id for event in self.events]


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """What `enqueue` did: rows added, oldest rows pushed out, depth after, opt-out refusal."""

    accepted: int
    dropped_overflow: int
    queued: int
    opted_out: bool


@dataclass(frozen=True, slots=True)
class StoreStatus:
    """A consistent snapshot for `ph_status`."""

    queued: int
    oldest_created_at: float | None
    delivered: int
    dropped: dict[str, int]
    opted_out: bool
    last_error: str | None


@dataclass(frozen=True, slots=True)
class Holdings:
    """Who may send what, as an idle sender sees the queue: whether rows are free to lease,
    and the other processes holding leases, each with the `leased_at` of its oldest lease."""

    free: bool
    holders: dict[str, float]


@dataclass(frozen=True, slots=True)
class LeaseOwner:
    """Identifies a process across pid reuse: its pid plus its start time."""

    pid: int
    started_at: float

    @classmethod
    def current(cls) -> LeaseOwner:
        """This process."""
        return cls.of(os.getpid())

    @classmethod
    def of(cls, pid: int) -> LeaseOwner:
        """The process `pid` (raises psutil.NoSuchProcess if there is none)."""
        import psutil  # noqa: PLC0415 - loads with the first lease, not before the first answer

        return cls(pid, psutil.Process(pid).create_time())

    @property
    def token(self) -> str:
        """The text stored in `lease_owner`."""
        return f"{self.pid}:{self.started_at:.3f}"

    @staticmethod
    def is_alive(token: str) -> bool:
        """Whether the process that wrote `token` still runs (same pid and start time)."""
        import psutil  # noqa: PLC0415 - loads with the first lease looked at

        pid_text, _, started_text = token.partition(":")
        try:
            pid, started_at = int(pid_text), float(started_text)
            process = psutil.Process(pid)
            # A killed process stays a zombie until its parent (or init) reaps it; it holds
            # nothing any more.
            if process.status() == psutil.STATUS_ZOMBIE:
                return False
            return abs(process.create_time() - started_at) < 0.01
        except (ValueError, psutil.Error):
            return False


# Upserts of one `ph_meta` entry: add to a counter, or set a value.
_ADD_META = (
    "INSERT INTO ph_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = value + excluded.value"
)
_PUT_META = (
    "INSERT INTO ph_meta (key, value) VALUES (?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)


def fill_batch(
    candidates: Sequence[tuple[int, str, int]], max_bytes: int
) -> list[QueuedEvent]:
    """The rows (id, body, retry_count) that go in one request, oldest first, while their
    UTF-8 size stays within `max_bytes`. The first row always goes, so one big event cannot block
    the queue; the server's 413 decides its fate."""
    chosen: list[QueuedEvent] = []
    total = 0
    for row_id, body, retry_count in candidates:
        size = len(body) if body.isascii() else len(body.encode("utf-8"))
        if chosen and total + size > max_bytes:
            break
        chosen.append(QueuedEvent(row_id, body, retry_count))
        total += size
    return chosen


def _marks(count: int) -> str:
    """The `?, ?, …` of an `IN (…)` list of `count` values."""
    return ",".join("?" * count)


def _unavailable(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in _UNAVAILABLE_CODES


class Store:
    """The queue and its counters in one SQLite database. Not thread-safe: one caller at a time."""

    def __init__(
        self,
        path: Path,
        *,
        durability: Durability = Durability.FULL,
        owner: LeaseOwner | None = None,
    ) -> None:
        """Open (creating if needed) the database at `path`; raises StorageUnavailable."""
        self.path = path
        self.durability = durability
        self._given_owner = owner
        try:
            _create_private(path, sync=durability is Durability.FULL)
            self._db = sqlite3.connect(
                path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_MS / 1000
            )
        except (OSError, sqlite3.Error) as exc:
            raise StorageUnavailable(f"cannot open {path}: {exc}") from exc
        try:
            self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            # Takes effect only in a new database, and only before WAL mode writes its header:
            # lets `compact` give the pages of sent and dropped events back to the disk.
            self._db.execute("PRAGMA auto_vacuum = INCREMENTAL")
            self._db.execute("PRAGMA journal_mode = WAL")
            for pragma in connection_pragmas(durability):
                self._db.execute(pragma)
            self._migrate()
            self._resync_depth()
        except (sqlite3.Error, StorageUnavailable):
            self._db.close()
            raise

    @functools.cached_property
    def owner(self) -> LeaseOwner:
        """Who this store's leases name: the owner given, else this process (found when first
        needed, so that psutil loads with the first lease rather than at start)."""
        return self._given_owner or LeaseOwner.current()

    @functools.cached_property
    def _owner_token(self) -> str:
        return self.owner.token

    def close(self) -> None:
        """Checkpoint the WAL and close. Safe to call twice."""
        with contextlib.suppress(sqlite3.Error):
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self._db.close()

    def compact(self) -> None:
        """Give disk space back, for when the queue has gone quiet: free pages, then the WAL.

        Best effort and cheap below the thresholds (two reads). The WAL is truncated only when
        no other process is reading, without waiting for one.
        """
        with contextlib.suppress(sqlite3.Error):
            free = int(self._db.execute("PRAGMA freelist_count").fetchone()[0])
            if free >= COMPACT_FREE_PAGES:
                # Run to completion (`execute` would step it once, freeing a single page).
                self._db.executescript("PRAGMA incremental_vacuum;")
            try:
                wal_bytes = os.stat(f"{self.path}-wal").st_size
            except OSError:
                return
            if wal_bytes >= COMPACT_WAL_BYTES:
                self._db.execute("PRAGMA busy_timeout = 0")
                try:
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
                finally:
                    self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; disk and permission failures become StorageUnavailable."""
        db = self._db
        try:
            db.execute("BEGIN IMMEDIATE")
            try:
                yield db
            except BaseException:
                # SQLite may have rolled back already (SQLITE_FULL, IOERR): a second ROLLBACK
                # would fail and hide the real error.
                if db.in_transaction:
                    db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            if db.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    db.execute("ROLLBACK")
            if _unavailable(exc):
                raise StorageUnavailable(str(exc)) from exc
            raise

    def _migrate(self) -> None:
        with self._write() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise StorageUnavailable(
                    f"database schema {version} is newer than this sidecar's {SCHEMA_VERSION}"
                )
            if version < SCHEMA_VERSION:
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            # No index on the lease columns (a database from an older build may carry one):
            # every claim and delivery would rewrite it, and the scans it would serve only skip
            # the few rows in flight. Older sidecars work the same without it, so dropping it
            # needs no new schema version and going back to one stays possible.
            db.execute("DROP INDEX IF EXISTS ph_event_queue_lease")

    # ---- counters and flags ---------------------------------------------------------------

    @staticmethod
    def _add_counter(db: sqlite3.Connection, name: str, amount: int) -> None:
        if amount:
            db.execute(_ADD_META, (name, amount))

    @staticmethod
    def _put_meta(db: sqlite3.Connection, name: str, value: object) -> None:
        db.execute(_PUT_META, (name, value))

    def _get_meta(self, name: str) -> object:
        row = self._db.execute("SELECT value FROM ph_meta WHERE key = ?", (name,)).fetchone()
        return None if row is None else row[0]

    def opted_out(self) -> bool:
        """Whether the user opted out of analytics (persisted)."""
        return bool(self._get_meta("opted_out"))

    def set_last_error(self, message: str | None) -> None:
        """Remember the most recent delivery problem (None once delivery works again)."""
        with self._write() as db:
            self._put_meta(db, "last_error", message)

    # ---- the queue --------------------------------------------------------------------------

    def enqueue(
        self, api_key: str, bodies: Sequence[str], *, max_queue: int, now: float | None = None
    ) -> EnqueueResult:
        """Append events atomically; past `max_queue`, drop the oldest and count them."""
        return self.enqueue_many([(api_key, bodies)], max_queue=max_queue, now=now)[0]

    def enqueue_many(
        self,
        calls: Sequence[tuple[str, Sequence[str]]],
        *,
        max_queue: int,
        now: float | None = None,
    ) -> list[EnqueueResult]:
        """Append the events of several calls, in order, in one transaction (one commit, one
        sync): each call's result is what `enqueue` alone would have given at its turn."""
        created_at = time.time() if now is None else now
        with self._write() as db:
            opted_out = self.opted_out()
            return [
                self._enqueue(db, api_key, bodies, max_queue, created_at, opted_out=opted_out)
                for api_key, bodies in calls
            ]

    def _enqueue(
        self,
        db: sqlite3.Connection,
        api_key: str,
        bodies: Sequence[str],
        max_queue: int,
        created_at: float,
        *,
        opted_out: bool,
    ) -> EnqueueResult:
        if opted_out:
            # Refused events count in dropped.opt_out, so they count as inserted too:
            # inserted == delivered + queued + sum(dropped) holds at all times.
            self._add_counter(db, DropReason.OPT_OUT, len(bodies))
            self._add_counter(db, "inserted", len(bodies))
            return EnqueueResult(0, 0, self._depth(db), opted_out=True)
        # A call bigger than the bound keeps only its newest events: inserting rows only to
        # delete them in the same transaction would grow the file and the WAL by the call.
        skipped = max(0, len(bodies) - max_queue)
        db.executemany(
            "INSERT INTO ph_event_queue (api_key, body, created_at) VALUES (?, ?, ?)",
            [(api_key, body, created_at) for body in bodies[skipped:]],
        )
        depth = self._depth(db) + len(bodies) - skipped
        overflow = max(0, depth - max_queue)
        if overflow:
            # The oldest go, on the wire or not, as the contract says. Sparing leased rows
            # would make which events survive depend on whether a request is in flight.
            db.execute(
                "DELETE FROM ph_event_queue WHERE id IN (SELECT id FROM ph_event_queue "
                "ORDER BY id LIMIT ?)",
                (overflow,),
            )
            depth -= overflow
        self._add_counter(db, DropReason.OVERFLOW, skipped + overflow)
        self._add_counter(db, "inserted", len(bodies))
        self._add_counter(db, _QUEUED, len(bodies) - skipped - overflow)
        return EnqueueResult(len(bodies), skipped + overflow, depth, opted_out=False)

    @staticmethod
    def _depth(db: sqlite3.Connection) -> int:
        # A counter kept in step by every insert and delete, since COUNT(*) is O(queue) and
        # enqueue needs the depth each time. `_resync_depth` rebuilds it at open.
        row = db.execute("SELECT value FROM ph_meta WHERE key = ?", (_QUEUED,)).fetchone()
        return int(row[0]) if row and isinstance(row[0], int) else 0

    def _resync_depth(self) -> None:
        with self._write() as db:
            depth = db.execute("SELECT COUNT(*) FROM ph_event_queue").fetchone()[0]
            self._put_meta(db, _QUEUED, depth)

    def depth(self) -> int:
        """Events in the queue, leased or not."""
        return self._depth(self._db)

    def complete(self, ids: Sequence[int]) -> int:
        """Delivered: delete our leased rows and count them. Returns how many were ours."""
        with self._write() as db:
            return self._complete(db, ids)

    def complete_and_claim(
        self,
        ids: Sequence[int],
        limit: int,
        *,
        max_bytes: int,
        exclude_keys: Collection[str] = (),
        now: float | None = None,
    ) -> tuple[int, Claim | None]:
        """Delete our delivered rows `ids` (as `complete`) and lease the oldest free events of
        one api key not in `exclude_keys`, at most `limit` and about `max_bytes`, in one
        transaction: one commit per request while a backlog drains.

        The first event is always taken whatever its size, so one big event cannot block the
        queue; the server's 413 decides its fate. Returns the rows completed and the claim, or
        None when nothing is free.
        """
        with self._write() as db:
            completed = self._complete(db, ids)
            return completed, self._claim(db, limit, max_bytes, exclude_keys, now)

    def _claim(
        self,
        db: sqlite3.Connection,
        limit: int,
        max_bytes: int,
        exclude_keys: Collection[str],
        now: float | None,
    ) -> Claim | None:
        leased_at = time.time() if now is None else now
        excluded = list(exclude_keys)
        key_filter = f"AND api_key NOT IN ({_marks(len(excluded))})" if excluded else ""
        first = db.execute(
            f"SELECT id, api_key FROM ph_event_queue WHERE lease_owner IS NULL {key_filter} "  # noqa: S608
            "ORDER BY id LIMIT 1",
            excluded,
        ).fetchone()
        if first is None:
            return None
        first_id, api_key = int(first[0]), str(first[1])
        candidates = db.execute(
            "SELECT id, body, retry_count FROM ph_event_queue "
            "WHERE id >= ? AND lease_owner IS NULL AND api_key = ? ORDER BY id LIMIT ?",
            (first_id, api_key, limit),
        ).fetchall()
        chosen = fill_batch(candidates, max_bytes)
        ids = [event.id for event in chosen]
        db.execute(
            f"UPDATE ph_event_queue SET lease_owner = ?, leased_at = ? "  # noqa: S608
            f"WHERE id IN ({_marks(len(ids))})",
            [self._owner_token, leased_at, *ids],
        )
        return Claim(api_key, tuple(chosen))

    def _complete(self, db: sqlite3.Connection, ids: Sequence[int]) -> int:
        deleted = self._delete_mine(db, ids)
        if deleted:
            self._add_counter(db, "delivered", deleted)
            self._add_counter(db, _QUEUED, -deleted)
            db.execute("UPDATE ph_meta SET value = NULL WHERE key = 'last_error'")
        return deleted

    def drop(self, ids: Sequence[int], reason: DropReason) -> int:
        """Remove our leased rows without delivering them, counted under `reason`."""
        with self._write() as db:
            deleted = self._delete_mine(db, ids)
            self._add_counter(db, reason, deleted)
            self._add_counter(db, _QUEUED, -deleted)
        return deleted

    def release(
        self, ids: Sequence[int], *, count_retry: bool, exhausted: Sequence[int] = ()
    ) -> int:
        """Give our leased rows `ids` back to the queue after a failed attempt.

        With `count_retry`, the failure counts against each row. The rows in `exhausted` (the
        delivery policy's call: they have now failed more than `--max-retries` times) are
        dropped instead, counted as retries exhausted. Returns how many were dropped.
        """
        if not ids:
            return 0
        with self._write() as db:
            dropped = self._delete_mine(db, exhausted)
            self._add_counter(db, DropReason.RETRIES_EXHAUSTED, dropped)
            self._add_counter(db, _QUEUED, -dropped)
            count = "retry_count = retry_count + 1, " if count_retry else ""
            db.execute(
                f"UPDATE ph_event_queue SET {count}lease_owner = NULL, leased_at = NULL "  # noqa: S608
                f"WHERE lease_owner = ? AND id IN ({_marks(len(ids))})",
                [self._owner_token, *ids],
            )
        return dropped

    def _delete_mine(self, db: sqlite3.Connection, ids: Sequence[int]) -> int:
        if not ids:
            return 0
        return db.execute(
            f"DELETE FROM ph_event_queue WHERE lease_owner = ? AND id IN ({_marks(len(ids))})",  # noqa: S608
            [self._owner_token, *ids],
        ).rowcount

    def recover_leases(self, *, now: float | None = None) -> int:
        """Free leases whose owner process is gone (or that are stale); returns rows freed."""
        current = time.time() if now is None else now
        owners = [
            str(row[0])
            for row in self._db.execute(
                "SELECT DISTINCT lease_owner FROM ph_event_queue WHERE lease_owner IS NOT NULL"
            )
        ]
        dead = [o for o in owners if o != self._owner_token and not LeaseOwner.is_alive(o)]
        freed = 0
        with self._write() as db:
            for owner in dead:
                freed += db.execute(
                    "UPDATE ph_event_queue SET lease_owner = NULL, leased_at = NULL "
                    "WHERE lease_owner = ?",
                    (owner,),
                ).rowcount
            freed += db.execute(
                "UPDATE ph_event_queue SET lease_owner = NULL, leased_at = NULL "
                "WHERE lease_owner IS NOT NULL AND leased_at < ?",
                (current - STALE_LEASE_S,),
            ).rowcount
        return freed

    def holdings(self, exclude_keys: Collection[str] = ()) -> Holdings:
        """Whether rows of keys not in `exclude_keys` are free to lease, and which other
        processes hold leases (each with its oldest `leased_at`), read in one snapshot: rows
        another process hands back are either free here or still held, never neither."""
        db = self._db
        excluded = list(exclude_keys)
        key_filter = f"AND api_key NOT IN ({_marks(len(excluded))})" if excluded else ""
        db.execute("BEGIN")
        try:
            free = db.execute(
                f"SELECT 1 FROM ph_event_queue WHERE lease_owner IS NULL {key_filter} LIMIT 1",  # noqa: S608
                excluded,
            ).fetchone()
            holders = db.execute(
                "SELECT lease_owner, MIN(leased_at) FROM ph_event_queue "
                "WHERE lease_owner IS NOT NULL AND lease_owner != ? GROUP BY lease_owner",
                (self._owner_token,),
            ).fetchall()
        finally:
            db.execute("COMMIT")
        return Holdings(
            free=free is not None,
            holders={str(owner): float(at or 0.0) for owner, at in holders},
        )

    def set_opt_out(self, opt_out: bool) -> int:
        """Persist the opt-out flag; opting out purges the queue. Returns events purged."""
        with self._write() as db:
            self._put_meta(db, "opted_out", int(opt_out))
            purged = db.execute("DELETE FROM ph_event_queue").rowcount if opt_out else 0
            self._add_counter(db, DropReason.OPT_OUT, purged)
            self._add_counter(db, _QUEUED, -purged)
        return purged

    def status(self) -> StoreStatus:
        """Depth, age of the oldest event and the persistent counters, read in one snapshot."""
        db = self._db
        db.execute("BEGIN")
        try:
            # The oldest row by id: created_at follows id except across clock changes.
            oldest_row = db.execute(
                "SELECT created_at FROM ph_event_queue ORDER BY id LIMIT 1"
            ).fetchone()
            meta = dict(db.execute("SELECT key, value FROM ph_meta").fetchall())
        finally:
            db.execute("COMMIT")

        def count(name: str) -> int:
            value = meta.get(name)
            return int(value) if isinstance(value, int) else 0

        last_error = meta.get("last_error")
        return StoreStatus(
            queued=count(_QUEUED),
            oldest_created_at=None if oldest_row is None else float(oldest_row[0]),
            delivered=count("delivered"),
            dropped={reason.value: count(reason.value) for reason in DropReason},
            opted_out=bool(meta.get("opted_out")),
            last_error=None if last_error is None else str(last_error),
        )


def _create_private(path: Path, *, sync: bool) -> None:
    """Create the folder (0700) and an empty database file (0600) if they do not exist.

    With `sync`, whatever this creates reaches the drive before it is used: the new file and
    every new folder entry on the way to it, so an acknowledged write cannot vanish with the
    file that held it. SQLite makes its own `-wal` file's entry durable.
    """
    created: list[Path] = []
    folder = path.parent
    while not folder.exists():
        created.append(folder)
        folder = folder.parent
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    # Opened for writing even when it exists: a read-only file or folder fails here, clearly.
    try:
        fd = os.open(path, os.O_RDWR)
        os.close(fd)
        return
    except FileNotFoundError:
        pass
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another process created it just now, and syncs it
        os.close(os.open(path, os.O_RDWR))
        return
    try:
        if sync:
            os.fsync(fd)
    finally:
        os.close(fd)
    if sync:
        for changed in [path.parent, *(made.parent for made in created)]:
            _fsync_folder(changed)


def _fsync_folder(folder: Path) -> None:
    """Make the entries of `folder` durable (POSIX); Windows has no such call and needs none."""
    if os.name == "nt":
        return
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def open_store(path: Path, durability: Durability = Durability.FULL) -> tuple[Store, Path | None]:
    """Open the queue, setting a damaged database aside (with its -wal and -shm) for a new one.

    Returns the store and, when one was set aside, where it went. Raises StorageUnavailable
    when the folder or disk will not take a database at all.
    """
    problem = _check_read_only(path)
    if problem is None:
        try:
            return Store(path, durability=durability), None
        except StorageUnavailable as exc:
            if not isinstance(exc.__cause__, sqlite3.DatabaseError) or not _damaged(exc.__cause__):
                raise
            problem = str(exc)
    aside = _quarantine(path)
    log.error("database %s failed its check (%s); moved aside to %s", path, problem, aside)
    return Store(path, durability=durability), aside


def _check_read_only(path: Path) -> str | None:
    """What `quick_check` finds wrong with an existing database, or None.

    Read-only on purpose: closing a read-write connection checkpoints the WAL into the damaged
    file and deletes the WAL, so the set aside would not be the files as they were found.
    Failures that are not damage (say the folder is unreadable) are left for `Store` to report.
    """
    try:
        if path.stat().st_size == 0:
            return None
        db = sqlite3.connect(f"{path.absolute().as_uri()}?mode=ro", uri=True,
                             timeout=BUSY_TIMEOUT_MS / 1000)
    except (OSError, sqlite3.Error):
        return None
    try:
        rows = db.execute("PRAGMA quick_check").fetchall()
    except sqlite3.DatabaseError as exc:
        return str(exc) if _damaged(exc) else None
    finally:
        db.close()
    problems = [str(row[0]) for row in rows]
    return None if problems == ["ok"] else "; ".join(problems[:3]) or "no answer"


def _damaged(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and (code & 0xFF) in (sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_CORRUPT)


def _quarantine(path: Path) -> Path:
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    aside = path.with_name(f"{path.name}.corrupt-{stamp}-{os.getpid()}")
    for suffix in ("", "-wal", "-shm"):
        source = Path(f"{path}{suffix}")
        if source.exists():
            source.replace(Path(f"{aside}{suffix}"))
    return aside
