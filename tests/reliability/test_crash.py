"""Crash consistency: SIGKILL the real process at random points, restart it, and count.

Each run of the loop starts the sidecar on one data folder and kills it (the whole process tree,
SIGKILL) at a random moment of one kind of work:

* ``startup``: anywhere from spawn on, while it imports, opens and checks the database, takes
  back dead leases and starts the backlog (events are already being fed);
* ``ingest``: during pipelined ``ph_send_batch`` calls, server down;
* ``deliver``: during ingest and delivery to a server that is up;
* ``backlog``: during the delivery of an earlier run's backlog, no new events;
* ``commit-checkpoint``: during a big batch whose commit pushes the WAL past SQLite's automatic
  checkpoint (1000 pages), server down;
* ``close-checkpoint``: after a big batch was acknowledged, during the clean shutdown's
  ``wal_checkpoint(TRUNCATE)`` of a large WAL.

After every kill the database is opened read-only and must pass ``PRAGMA quick_check``. At the
end a last run delivers everything to the fake server. Events acknowledged (their answer reached
stdout) must all be delivered; events written but not acknowledged may or may not be. A
duplicate is a second delivery of a uuid; it is blamed on the kill that ended the run that
delivered the uuid first (the run died after the server took the batch, before deleting it).

``CRASH_KILLS`` (default 25) sets the number of kills and ``CRASH_SEED`` the random seed;
``bench/reliability/crash.py --kills 200`` runs the published figure.
"""

from __future__ import annotations

import collections
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from crashkit import (
    Accounts,
    Feeder,
    accounts,
    delivery_counts,
    depth_counter,
    drain,
    extra_deliveries,
    never_delivered,
    quick_check,
    redeliveries,
    spawn,
)

from sidecar_dev.capture import CaptureServer
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import FAST_RETRIES, free_port, reaping

KINDS = ("startup", "ingest", "deliver", "backlog", "commit-checkpoint", "close-checkpoint")
WEIGHTS = (2, 3, 4, 2, 1, 1)
BATCH_SIZE = 50  # the sidecar's default --batch-size: the most one kill may re-deliver
# Big enough that the queue bound never drops anything: every acknowledged event must arrive.
MAX_QUEUE = "10000000"
# One big batch: ~1500 events of ~3 KB is ~1100 WAL pages, past the automatic checkpoint.
BIG_BATCH = 1500
BIG_PADDING = 2800
# ~800 pages: below the automatic checkpoint, so the shutdown's checkpoint has them all to copy.
CLOSE_BATCH = 800


@dataclass
class CrashReport:
    """What a crash loop did and found."""

    seed: int
    kills: int
    kinds: collections.Counter[str] = field(default_factory=collections.Counter)
    sent: int = 0
    acknowledged: set[int] = field(default_factory=set)
    delivered: collections.Counter[int] = field(default_factory=collections.Counter)
    duplicates_per_kill: list[int] = field(default_factory=list)
    batches_per_kill: list[int] = field(default_factory=list)
    depth_mismatches: list[tuple[int, int, int]] = field(default_factory=list)
    bad_checks: list[tuple[int, str, str]] = field(default_factory=list)
    final_accounts: Accounts | None = None
    final_status: dict[str, object] = field(default_factory=dict)
    final_exit: int | None = None
    seconds: float = 0.0

    @property
    def lost(self) -> list[int]:
        """Acknowledged events that never reached the server."""
        return never_delivered(self.acknowledged, self.delivered)

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each uuid."""
        return extra_deliveries(self.delivered)

    @property
    def unacknowledged_delivered(self) -> int:
        """Events written but not acknowledged before a kill that were delivered anyway."""
        return len(set(self.delivered) - self.acknowledged)

    def summary(self) -> str:
        """One paragraph of figures."""
        per_kill = self.duplicates_per_kill
        with_dups = sum(1 for d in per_kill if d)
        batches = max(self.batches_per_kill, default=0)
        kinds = ", ".join(f"{k} {self.kinds[k]}" for k in KINDS)
        return (
            f"seed {self.seed}: {self.kills} kills ({kinds}) in {self.seconds:.0f} s; "
            f"{self.sent} events sent, {len(self.acknowledged)} acknowledged, "
            f"{len(self.delivered)} distinct delivered "
            f"({self.unacknowledged_delivered} of them unacknowledged); "
            f"lost {len(self.lost)}; duplicates {self.duplicates} "
            f"(kills followed by any: {with_dups}, max per kill {max(per_kill, default=0)} "
            f"events in at most {batches} batch(es), "
            f"mean per kill {self.duplicates / max(1, self.kills):.2f}); "
            f"quick_check failures {len(self.bad_checks)}; final accounts {self.final_accounts}"
        )


def _run_once(
    kind: str,
    rng: random.Random,
    *,
    data_dir: Path,
    server: CaptureServer,
    offline: str,
    first: int,
    started: list[SidecarProcess],
) -> Feeder | None:
    """One run of the sidecar, ended by SIGKILL at a random point of `kind` work."""
    host = server.url if kind in ("deliver", "backlog") else offline
    if kind == "startup":
        host = rng.choice((server.url, offline))
    sidecar = spawn(started, data_dir, host, "--max-queue", MAX_QUEUE, *FAST_RETRIES)
    feeder: Feeder | None = None
    if kind == "startup":
        plan = [rng.randint(1, 50) for _ in range(rng.randint(1, 20))]
        feeder = Feeder(sidecar, first, plan).start()
        time.sleep(rng.uniform(0.0, 1.5))
    else:
        sidecar.result("ping")  # ready: the database is open and checked
        if kind in ("ingest", "deliver"):
            plan = [rng.randint(1, 100) for _ in range(rng.randint(1, 40))]
            feeder = Feeder(sidecar, first, plan).start()
            time.sleep(rng.uniform(0.0, 0.4))
        elif kind == "backlog":
            time.sleep(rng.uniform(0.0, 0.3))
        elif kind == "commit-checkpoint":
            feeder = Feeder(sidecar, first, [BIG_BATCH], padding=BIG_PADDING).start()
            time.sleep(rng.uniform(0.0, 0.8))
        else:  # close-checkpoint
            feeder = Feeder(
                sidecar, first, [CLOSE_BATCH], padding=BIG_PADDING, await_answers=True
            ).start()
            feeder.join()
            sidecar.request("shutdown")  # a clean stop takes ~0.5 s, the checkpoint last
            time.sleep(rng.uniform(0.0, 0.6))
    sidecar.kill()
    if feeder is not None:
        feeder.join()
    return feeder


def run_crash_loop(kills: int, seed: int, workdir: Path) -> CrashReport:
    """Kill the sidecar `kills` times at random points, then deliver everything and count."""
    report = CrashReport(seed=seed, kills=kills)
    rng = random.Random(seed)
    data_dir = workdir / "data"
    db = data_dir / "telemetry.db"
    offline = f"http://127.0.0.1:{free_port()}"
    started_at = time.monotonic()
    next_number = 0
    with CaptureServer() as server, reaping() as started:
        kill_times: list[float] = []
        for index in range(kills):
            # Every kind once first, so even a short run covers them all; then at random.
            kind = KINDS[index] if index < len(KINDS) else rng.choices(KINDS, WEIGHTS)[0]
            report.kinds[kind] += 1
            feeder = _run_once(
                kind,
                rng,
                data_dir=data_dir,
                server=server,
                offline=offline,
                first=next_number,
                started=started,
            )
            kill_times.append(time.monotonic())
            if feeder is not None:
                report.sent += feeder.next_number - next_number
                report.acknowledged |= feeder.acknowledged()
                next_number = feeder.next_number
            if db.exists():
                check = quick_check(db)
                if check != "ok":
                    report.bad_checks.append((index, kind, check))
                counted, actual = depth_counter(db)
                if counted != actual:
                    report.depth_mismatches.append((index, counted, actual))
        final = spawn(started, data_dir, server.url, "--max-queue", MAX_QUEUE, *FAST_RETRIES)
        report.final_status = drain(final)
        report.final_exit = final.stop()
        requests = server.requests
    report.seconds = time.monotonic() - started_at
    report.delivered = delivery_counts(e for r in requests for e in r.events)
    report.final_accounts = accounts(db)
    again = redeliveries(requests, kill_times)
    report.duplicates_per_kill = again.events[:kills]
    report.batches_per_kill = again.batches[:kills]
    assert again.events[kills] == 0, "the final run, which was not killed, re-sent events"
    return report


def test_no_acknowledged_event_is_lost_across_random_sigkills(tmp_path: Path) -> None:
    """SIGKILLs at random points lose no acknowledged event and re-send at most one batch each."""
    # Also: quick_check passes and the depth counter matches the rows after every kill.
    kills = int(os.environ.get("CRASH_KILLS", "25"))
    seed = int(os.environ.get("CRASH_SEED", str(random.SystemRandom().randrange(2**32))))
    report = run_crash_loop(kills, seed, tmp_path)
    print(report.summary())
    assert report.acknowledged, report.summary()
    assert report.lost == [], report.summary()
    assert report.bad_checks == [], report.summary()
    assert max(report.duplicates_per_kill) <= BATCH_SIZE, report.summary()
    assert max(report.batches_per_kill) <= 1, report.summary()
    assert report.depth_mismatches == [], report.summary()
    assert report.final_exit == 0
    final = report.final_accounts
    assert final is not None
    # Nothing was dropped, so every event ever committed was delivered exactly once by the
    # queue's own count, and the server saw each of them.
    assert final.queued == 0, report.summary()
    assert final.dropped == dict.fromkeys(final.dropped, 0), report.summary()
    assert final.balanced, report.summary()
    assert final.delivered == final.inserted == len(report.delivered), report.summary()
    assert report.final_status["delivered"] == final.delivered
