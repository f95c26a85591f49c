"""Shared by the crash, storage-fault, two-process and growth suites and by their figure scripts
(`bench/reliability/*.py`): delivery counts by the numbers in the uuids `harness.numbered`
assigns, a feeder that pipelines `ph_send_batch` calls and learns afterwards which were
acknowledged, and read-only looks at the database from outside the process. The driver, the
events, the waits and the reaping are `sidecar_dev`'s.
"""

from __future__ import annotations

import bisect
import collections
import json
import sqlite3
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sidecar_dev.capture import ReceivedRequest
from sidecar_dev.driver import AnswerTimeout, SidecarDied, SidecarProcess
from sidecar_dev.harness import GUARD_S, TEST_KEY, number_of, numbered

DB_NAME = "telemetry.db"
# ---- deliveries ----------------------------------------------------------------------------


def delivery_counts(events: Iterable[dict[str, Any]]) -> collections.Counter[int]:
    """How many times each event number reached the server."""
    return collections.Counter(number_of(e["uuid"]) for e in events)


def never_delivered(acknowledged: set[int], delivered: collections.Counter[int]) -> list[int]:
    """Acknowledged event numbers that never reached the server, in order."""
    return sorted(acknowledged - set(delivered))


def extra_deliveries(delivered: collections.Counter[int]) -> int:
    """Deliveries beyond the first of each event."""
    return sum(count - 1 for count in delivered.values())


@dataclass(frozen=True, slots=True)
class Redeliveries:
    """Deliveries beyond the first of each uuid, each blamed on the period (between cut times,
    e.g. kills) in which the request that delivered that uuid the time before arrived: the
    process that sent it died before deleting the rows."""

    events: list[int]
    """Per period: events delivered again later."""
    batches: list[int]
    """Per period: requests some of whose events were delivered again later."""


def redeliveries(requests: Sequence[ReceivedRequest], cuts: Sequence[float]) -> Redeliveries:
    """Blame each re-delivery on a period: before `cuts[0]`, between cuts, after the last.

    `cuts` are `time.monotonic()` readings taken after each kill; a request from a killed
    process arrived before its kill, so it falls in its own process's period.
    """
    previous: dict[int, tuple[int, int]] = {}  # number -> (period, request index)
    events = [0] * (len(cuts) + 1)
    batches: list[set[int]] = [set() for _ in range(len(cuts) + 1)]
    for index, request in enumerate(requests):
        period = bisect.bisect_right(cuts, request.received_at)
        for event in request.events:
            number = number_of(event["uuid"])
            if number in previous:
                blamed, origin = previous[number]
                events[blamed] += 1
                batches[blamed].add(origin)
            previous[number] = (period, index)
    return Redeliveries(events, [len(b) for b in batches])


# ---- the database, from outside ----------------------------------------------------------------


def connect_read_only(db: Path) -> sqlite3.Connection:
    """A read-only connection: it never checkpoints or deletes the WAL, so a crash's files stay."""
    return sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)


def quick_check(db: Path) -> str:
    """`PRAGMA quick_check` through a read-only connection: 'ok' or the first problem."""
    conn = connect_read_only(db)
    try:
        return "\n".join(str(row[0]) for row in conn.execute("PRAGMA quick_check"))
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class Accounts:
    """The persistent counters and the queue depth, read in one snapshot."""

    inserted: int
    delivered: int
    queued: int
    dropped: dict[str, int]

    @property
    def balanced(self) -> bool:
        """inserted == delivered + queued + sum(dropped)."""
        return self.inserted == self.delivered + self.queued + sum(self.dropped.values())


def accounts(db: Path) -> Accounts:
    """Read the counters straight from the file (read-only)."""
    conn = connect_read_only(db)
    try:
        conn.execute("BEGIN")
        meta = dict(conn.execute("SELECT key, value FROM ph_meta").fetchall())
        queued = int(conn.execute("SELECT COUNT(*) FROM ph_event_queue").fetchone()[0])
        conn.execute("COMMIT")
    finally:
        conn.close()

    def count(name: str) -> int:
        value = meta.get(name)
        return int(value) if isinstance(value, int) else 0

    reasons = ("overflow", "rejected", "retries_exhausted", "opt_out")
    return Accounts(
        inserted=count("inserted"),
        delivered=count("delivered"),
        queued=queued,
        dropped={reason: count(reason) for reason in reasons},
    )


def depth_counter(db: Path) -> tuple[int, int]:
    """(the queue depth the store keeps in `ph_meta`, the rows actually queued)."""
    conn = connect_read_only(db)
    try:
        conn.execute("BEGIN")
        row = conn.execute("SELECT value FROM ph_meta WHERE key = 'queued'").fetchone()
        actual = int(conn.execute("SELECT COUNT(*) FROM ph_event_queue").fetchone()[0])
        conn.execute("COMMIT")
    finally:
        conn.close()
    return (int(row[0]) if row and isinstance(row[0], int) else 0), actual


def queued_numbers(db: Path) -> set[int]:
    """The event numbers still queued in the file."""
    conn = connect_read_only(db)
    try:
        bodies = [row[0] for row in conn.execute("SELECT body FROM ph_event_queue")]
    finally:
        conn.close()
    return {number_of(json.loads(body)["uuid"]) for body in bodies}


def file_sizes(data_dir: Path) -> tuple[int, int]:
    """(database bytes, WAL bytes); a missing file counts 0."""

    def size(path: Path) -> int:
        try:
            return path.stat().st_size
        except FileNotFoundError:
            return 0

    db = data_dir / DB_NAME
    return size(db), size(Path(f"{db}-wal"))


# ---- processes -------------------------------------------------------------------------------


def responses(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    """Every response object the process wrote (call after it exited, so nothing is missing)."""
    found: list[dict[str, Any]] = []
    for line in sidecar.raw_stdout:
        if not line.endswith(b"\n"):
            continue  # cut short by the kill: not an answer the app could have read
        message = json.loads(line)
        found.extend(message if isinstance(message, list) else [message])
    return found


@dataclass
class Feeder:
    """Pipelines `ph_send_batch` calls into a sidecar from a thread, a few unanswered at a time.

    It numbers events from `first`; `plan` gives the size of each batch in turn (an empty plan
    ends the feed). After the process has ended, `acknowledged()` tells which events were
    acknowledged: their batch's answer reached stdout, every event accepted.
    """

    sidecar: SidecarProcess
    first: int
    plan: Sequence[int]
    window: int = 4
    padding: int = 0
    await_answers: bool = False
    """After the last batch, wait for every answer (or the process's end) before stopping."""
    sent: dict[int, range] = field(default_factory=dict)
    next_number: int = 0
    _thread: threading.Thread | None = None

    def start(self) -> Feeder:
        """Begin feeding in a background thread."""
        self.next_number = self.first
        self._thread = threading.Thread(target=self._feed, daemon=True)
        self._thread.start()
        return self

    def _feed(self) -> None:
        outstanding = 0
        try:
            for size in self.plan:
                while outstanding >= self.window:
                    answered = self._take_answer()
                    if answered is None:
                        return
                    outstanding -= answered
                numbers = range(self.next_number, self.next_number + size)
                batch = numbered(size, numbers.start, with_uuids=True, padding=self.padding)
                request_id = self.sidecar.request("ph_send_batch", {"batch": batch})
                self.sent[request_id] = numbers
                self.next_number = numbers.stop
                outstanding += 1
            while self.await_answers and outstanding:
                answered = self._take_answer()
                if answered is None:
                    return
                outstanding -= answered
        except SidecarDied:
            return  # the process died under us: the point of the exercise

    def _take_answer(self) -> int | None:
        """Wait briefly for one answer: 1 if it came, 0 if not yet, None if the process died."""
        try:
            self.sidecar.read_line(timeout=0.2)
        except AnswerTimeout:
            return 0
        except SidecarDied:
            return None
        return 1

    def join(self, timeout: float = GUARD_S) -> None:
        """Wait for the feed to end (all sent, or the process gone)."""
        if self._thread is not None:
            self._thread.join(timeout)
            assert not self._thread.is_alive(), "feeder did not stop"

    def acknowledged(self) -> set[int]:
        """Numbers of the events whose batch was acknowledged (call after the process ended)."""
        acked: set[int] = set()
        for response in responses(self.sidecar):
            numbers = self.sent.get(response.get("id"))  # type: ignore[arg-type]
            result = response.get("result")
            if numbers is not None and isinstance(result, dict):
                assert result["accepted"] == len(numbers), response
                acked.update(numbers)
        return acked


def drain(sidecar: SidecarProcess, *, rounds: int = 20) -> dict[str, Any]:
    """Flush until the queue is empty (hang-guarded), then return `ph_status`."""
    for _ in range(rounds):
        if sidecar.result("ph_flush", {"timeout": 30})["queued"] == 0:
            break
    return sidecar.result("ph_status")


def spawn(
    started: list[SidecarProcess],
    data_dir: Path,
    host: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> SidecarProcess:
    """Start a sidecar with the test key, remembered in `started` (a `harness.reaping()` list)."""
    sidecar = SidecarProcess(
        data_dir, host, "--log-level", "warning", *args, api_key=TEST_KEY, env=env
    )
    started.append(sidecar)
    return sidecar


__all__ = [
    "Accounts",
    "Feeder",
    "Redeliveries",
    "accounts",
    "connect_read_only",
    "delivery_counts",
    "depth_counter",
    "drain",
    "file_sizes",
    "queued_numbers",
    "quick_check",
    "redeliveries",
    "responses",
    "spawn",
]
