"""Power-loss rounds: the real sidecar on `lazyfs.py`, SIGKILL and a cut, then count survivors.

Each round mounts the same backing folder (what survived the cuts before: a laptop that loses
power again and again), starts the sidecar on the mount with a capture host nobody listens on (so
every accepted event stays queued), pipelines `ph_send_batch` calls of numbered events, and
SIGKILLs the process tree once a seeded number of answers has reached stdout (zero: during
start-up; all: once idle). Then the power goes (a cut), the file system is unmounted, and plain
sqlite3 reads a copy of the backing folder's `telemetry.db` (and `-wal`): `PRAGMA quick_check`
and the uuids queued in `ph_event_queue`. An event is acknowledged when its batch's answer reached
stdout before the kill; an acknowledged event missing from any later survey is lost.

Import with `tests/reliability` on `sys.path` (its `crashkit` feeds the process).
"""

from __future__ import annotations

import json
import random
import shutil
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from crashkit import Feeder, responses, spawn
from lazymount import LazyMount, SyncCounts

from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import free_port, number_of, reaping, wait_until

DB_NAME = "telemetry.db"
# Big enough that the queue bound never drops an event: every acknowledged one must stay.
MAX_QUEUE = "10000000"


class RoundError(Exception):
    """A round could not be run as planned (the sidecar exited by itself)."""


@dataclass(frozen=True, slots=True)
class Survey:
    """What plain sqlite3 finds in a backing folder after a cut."""

    queued: frozenset[int]
    """Event numbers in `ph_event_queue`."""
    check: str
    """'ok', the first problem `quick_check` reported, or 'missing' when there is no database."""


def survey(backing: Path, scratch: Path) -> Survey:
    """Open a copy of the database and its WAL (the backing folder stays as the cut left it)."""
    database = backing / DB_NAME
    if not database.exists():
        return Survey(frozenset(), "missing")
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    shutil.copyfile(database, scratch / DB_NAME)
    wal = backing / f"{DB_NAME}-wal"
    if wal.exists():
        shutil.copyfile(wal, scratch / f"{DB_NAME}-wal")
    conn = sqlite3.connect(scratch / DB_NAME)
    try:
        try:
            check = "\n".join(str(row[0]) for row in conn.execute("PRAGMA quick_check"))
        except sqlite3.DatabaseError as exc:
            return Survey(frozenset(), f"error: {exc}")
        try:
            bodies = [row[0] for row in conn.execute("SELECT body FROM ph_event_queue")]
        except sqlite3.OperationalError:
            bodies = []  # a valid database without the queue: the schema was lost
        return Survey(frozenset(number_of(json.loads(b)["uuid"]) for b in bodies), check)
    finally:
        conn.close()


@dataclass(frozen=True, slots=True)
class RoundResult:
    """One round: the plan, what the app saw, what survived."""

    index: int
    calls_planned: int
    kill_after: int
    calls_acknowledged: int
    events_acknowledged: int
    lost_now: int
    """Acknowledged events (of this round or earlier ones) first found missing after this cut."""
    check: str
    syncs: int
    file_syncs: dict[str, int]
    dir_syncs: dict[str, int]


@dataclass
class PowerLossReport:
    """The rounds of one run and their totals."""

    seed: int
    durability: str | None
    cut: bool
    rounds: list[RoundResult] = field(default_factory=list)
    acknowledged: set[int] = field(default_factory=set)
    lost: set[int] = field(default_factory=set)
    seconds: float = 0.0

    @property
    def bad_checks(self) -> list[RoundResult]:
        """Rounds whose database did not pass `quick_check` (a missing one is not counted)."""
        return [r for r in self.rounds if r.check not in ("ok", "missing")]

    @property
    def calls_acknowledged(self) -> int:
        """`ph_send_batch` calls answered before a kill, over all rounds."""
        return sum(r.calls_acknowledged for r in self.rounds)

    @property
    def syncs(self) -> int:
        """fsync/fdatasync calls on files and directories, over all rounds."""
        return sum(r.syncs for r in self.rounds)

    @property
    def syncs_per_call(self) -> float:
        """Sync calls per acknowledged `ph_send_batch` call (start-up syncs included)."""
        return self.syncs / max(1, self.calls_acknowledged)

    def syncs_by_file(self) -> dict[str, int]:
        """Sync calls per file name (and directory) over all rounds."""
        totals: dict[str, int] = {}
        for r in self.rounds:
            for path, count in [*r.file_syncs.items(),
                                *((f"{p} (dir)", c) for p, c in r.dir_syncs.items())]:
                totals[path] = totals.get(path, 0) + count
        return totals


@dataclass(frozen=True, slots=True)
class _Killed:
    """What one killed process left: the app's view and the file system's sync counts."""

    acknowledged: set[int]
    calls_acknowledged: int
    next_number: int
    syncs: SyncCounts


def _answered_or_gone(sidecar: SidecarProcess, answers: int) -> bool:
    return len(sidecar.raw_stdout) >= answers or sidecar.process.poll() is not None


def _feed_and_kill(mount: LazyMount, args: Sequence[str], first: int, plan: Sequence[int],
                   kill_after: int, *, cut: bool) -> _Killed:
    """Start the sidecar on the mount, feed `plan`, SIGKILL it after `kill_after` answers,
    then cut the power (`cut`) or shut the machine down cleanly."""
    with reaping() as started:
        sidecar = spawn(started, mount.mountpoint, *args)
        feeder = Feeder(sidecar, first, plan, window=4).start()
        wait_until(partial(_answered_or_gone, sidecar, kill_after), f"{kill_after} answers",
                   step=0.002, explain=lambda: sidecar.stderr)
        exited = sidecar.process.poll()
        sidecar.kill()
        feeder.join()
        if exited is not None:
            raise RoundError(f"the sidecar exited ({exited}) before the kill; stderr:\n"
                             f"{sidecar.stderr}")
        answered = sum(1 for r in responses(sidecar) if r.get("id") in feeder.sent
                       and "result" in r)
        killed = _Killed(feeder.acknowledged(), answered, feeder.next_number, mount.syncs())
    if cut:
        mount.cut()
    else:
        mount.sync_all()
    return killed


def run_rounds(
    rounds: int,
    seed: int,
    workdir: Path,
    *,
    durability: str | None = None,
    cut: bool = True,
    max_calls: int = 40,
    max_batch: int = 50,
) -> PowerLossReport:
    """Run `rounds` rounds on one backing folder under `workdir` and count.

    `durability` is passed as `--durability` only when given. `cut=False` replaces the power
    loss by a clean shutdown of the machine after the SIGKILL (everything written becomes
    durable): the control that shows the counting itself loses nothing.
    """
    rng = random.Random(seed)
    report = PowerLossReport(seed=seed, durability=durability, cut=cut)
    backing, mountpoint, scratch = workdir / "disk", workdir / "mnt", workdir / "check"
    args = [f"http://127.0.0.1:{free_port()}", "--max-queue", MAX_QUEUE]
    if durability:
        args += ["--durability", durability]
    next_number = 0
    started_at = time.monotonic()
    for index in range(rounds):
        plan = [rng.randint(1, max_batch) for _ in range(rng.randint(1, max_calls))]
        kill_after = rng.randint(0, len(plan))
        with LazyMount(backing, mountpoint) as mount:
            killed = _feed_and_kill(mount, args, next_number, plan, kill_after, cut=cut)
        next_number = killed.next_number
        found = survey(backing, scratch)
        report.acknowledged |= killed.acknowledged
        missing = report.acknowledged - found.queued - report.lost
        report.lost |= missing
        report.rounds.append(RoundResult(
            index=index, calls_planned=len(plan), kill_after=kill_after,
            calls_acknowledged=killed.calls_acknowledged,
            events_acknowledged=len(killed.acknowledged), lost_now=len(missing),
            check=found.check, syncs=killed.syncs.total, file_syncs=killed.syncs.files,
            dir_syncs=killed.syncs.directories,
        ))
    report.seconds = time.monotonic() - started_at
    return report
