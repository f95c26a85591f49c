"""Shared by the crash, storage-fault, two-process and growth suites and by their figure scripts
(`bench/reliability/*.py`): numbered events with uuids we assign, a feeder that pipelines
`ph_send_batch` calls and learns afterwards which were acknowledged, a SIGKILL that takes the
whole process tree (a one-file frozen build runs the sidecar as a grandchild), and read-only
looks at the database from outside the process.
"""

from __future__ import annotations

import bisect
import collections
import contextlib
import json
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from sidecar.client import SidecarProcess
from sidecar_dev.capture import ReceivedRequest

KEY = "phc_reliability_suite_key"
DB_NAME = "telemetry.db"
# Hang guard for waits on a process or the server; never a timing assertion.
GUARD_S = 60.0
# Short backoffs so a process retries at once when the server comes back.
FAST_RETRIES = ("--backoff-base", "0.05", "--backoff-max", "0.2")


# ---- events --------------------------------------------------------------------------------


def event_uuid(n: int) -> str:
    """The uuid we give event number `n` (a valid UUIDv4 layout, readable back with `number_of`)."""
    return f"00000000-0000-4000-8000-{n:012x}"


def number_of(uuid_text: str) -> int:
    """The event number inside a uuid made by `event_uuid`."""
    return int(uuid_text[-12:], 16)


def numbered_events(start: int, count: int, *, padding: int = 0) -> list[dict[str, Any]]:
    """Valid PostHog events numbered `start`..`start+count-1`, each with its own uuid."""
    return [
        {
            "event": "reliability",
            "distinct_id": "user-1",
            "uuid": event_uuid(n),
            "properties": {"n": n, "pad": "x" * padding} if padding else {"n": n},
        }
        for n in range(start, start + count)
    ]


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


def kill_tree(sidecar: SidecarProcess) -> None:
    """SIGKILL the sidecar and every process under it at once (a crash), then reap it."""
    try:
        root = psutil.Process(sidecar.process.pid)
        victims = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        victims = []
    for victim in reversed(victims):
        with contextlib.suppress(psutil.NoSuchProcess):
            victim.kill()
    sidecar.process.kill()
    sidecar.wait(GUARD_S)


def responses(sidecar: SidecarProcess) -> list[dict[str, Any]]:
    """Every response object the process wrote (call after it exited, so nothing is missing)."""
    found: list[dict[str, Any]] = []
    for line in sidecar.raw_stdout:
        if not line.endswith(b"\n"):
            continue  # cut short by the kill: not an answer the app could have read
        message = json.loads(line)
        found.extend(message if isinstance(message, list) else [message])
    return found


def free_port() -> int:
    """A loopback port nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def reaping() -> Iterator[list[SidecarProcess]]:
    """A list to put started sidecars in; any still running at the end is killed."""
    started: list[SidecarProcess] = []
    try:
        yield started
    finally:
        for sidecar in started:
            if sidecar.process.poll() is None:
                kill_tree(sidecar)


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
                batch = numbered_events(numbers.start, size, padding=self.padding)
                request_id = self.sidecar.request("ph_send_batch", {"batch": batch})
                self.sent[request_id] = numbers
                self.next_number = numbers.stop
                outstanding += 1
            while self.await_answers and outstanding:
                answered = self._take_answer()
                if answered is None:
                    return
                outstanding -= answered
        except (BrokenPipeError, OSError):
            return  # the process died under us: the point of the exercise

    def _take_answer(self) -> int | None:
        """Wait briefly for one answer: 1 if it came, 0 if not yet, None if the process died."""
        try:
            self.sidecar.read_line(timeout=0.2)
        except AssertionError:
            return None if self.sidecar.process.poll() is not None else 0
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


def call(
    sidecar: SidecarProcess, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A request and its response object; a process that died says so, with its stderr."""
    try:
        return sidecar.call(method, params)
    except (BrokenPipeError, AssertionError) as exc:
        try:
            code = sidecar.wait(5)
        except Exception:
            raise exc from None
        raise AssertionError(
            f"the sidecar exited ({code}) during {method}; stderr:\n{sidecar.stderr}"
        ) from exc


def result(
    sidecar: SidecarProcess, method: str, params: dict[str, Any] | None = None
) -> dict[str, Any]:
    """A request's `result`, failing on an error response or a dead process."""
    response = call(sidecar, method, params)
    assert "result" in response, response
    answer: dict[str, Any] = response["result"]
    return answer


def drain(sidecar: SidecarProcess, *, rounds: int = 20) -> dict[str, Any]:
    """Flush until the queue is empty (hang-guarded), then return `ph_status`."""
    for _ in range(rounds):
        if result(sidecar, "ph_flush", {"timeout": 30})["queued"] == 0:
            break
    return result(sidecar, "ph_status")


def spawn(
    started: list[SidecarProcess],
    data_dir: Path,
    host: str,
    *args: str,
    env: dict[str, str] | None = None,
) -> SidecarProcess:
    """Start a sidecar with the suite's api key, remembered in `started` for reaping."""
    sidecar = SidecarProcess(
        data_dir, host, "--log-level", "warning", *args, api_key=KEY, env=env
    )
    started.append(sidecar)
    return sidecar


def wait_until(predicate: Callable[[], bool], timeout: float = GUARD_S, step: float = 0.05) -> bool:
    """Poll `predicate` until true or `timeout` passes (a hang guard for outside observations)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
    return True


__all__ = [
    "FAST_RETRIES",
    "GUARD_S",
    "KEY",
    "Accounts",
    "Feeder",
    "Redeliveries",
    "accounts",
    "call",
    "connect_read_only",
    "delivery_counts",
    "depth_counter",
    "drain",
    "event_uuid",
    "file_sizes",
    "free_port",
    "kill_tree",
    "number_of",
    "numbered_events",
    "queued_numbers",
    "quick_check",
    "reaping",
    "redeliveries",
    "responses",
    "result",
    "spawn",
    "wait_until",
]
