"""Two processes on one data folder (two app windows, or a quick restart): the leases keep them
from sending the same rows, and a crash re-sends at most the one batch the dead process had out.

``TWO_PROCESS_CRASHES`` (default 5) sets the number of crashes; ``bench/reliability/
two_processes.py --crashes 50`` runs the published figure.
"""

from __future__ import annotations

import collections
import os
import random
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from crashkit import (
    Accounts,
    Feeder,
    accounts,
    connect_read_only,
    delivery_counts,
    drain,
    extra_deliveries,
    never_delivered,
    redeliveries,
    spawn,
)

from sidecar_dev.capture import CaptureServer, Delay
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import FAST_RETRIES, reaping, wait_until

BATCH_SIZE = 50  # the sidecar's default --batch-size
# Each request waits this long on the server, so a process has a batch out most of the time.
SERVER_DELAY_S = 0.2


def leased_by(db: Path, pids: list[int]) -> int:
    """Rows any of `pids` holds a lease on, read from outside."""
    conn = connect_read_only(db)
    try:
        owners = [str(row[0]) for row in conn.execute(
            "SELECT lease_owner FROM ph_event_queue WHERE lease_owner IS NOT NULL"
        )]
    finally:
        conn.close()
    return sum(1 for owner in owners if int(owner.partition(":")[0]) in pids)


def mid_delivery(db: Path, sidecar: SidecarProcess) -> bool:
    """Whether the sidecar holds a lease (or is gone, so waiting is over)."""
    pids = [process.pid for process in sidecar.tree()]
    return not pids or not sidecar.running or leased_by(db, pids) > 0


@dataclass
class TwoProcessReport:
    """What the two-process runs did and found."""

    crashes: int
    seed: int
    acknowledged: set[int] = field(default_factory=set)
    delivered: collections.Counter[int] = field(default_factory=collections.Counter)
    duplicates_per_crash: list[int] = field(default_factory=list)
    batches_per_crash: list[int] = field(default_factory=list)
    duplicates_without_crash: int = 0
    final_accounts: Accounts | None = None
    seconds: float = 0.0

    @property
    def lost(self) -> list[int]:
        """Acknowledged events never delivered."""
        return never_delivered(self.acknowledged, self.delivered)

    @property
    def duplicates(self) -> int:
        """Deliveries beyond the first of each uuid."""
        return extra_deliveries(self.delivered)

    def summary(self) -> str:
        """One paragraph of figures."""
        per = self.duplicates_per_crash
        return (
            f"seed {self.seed}: {self.crashes} SIGKILLs mid-delivery beside a live second "
            f"process, in {self.seconds:.0f} s; {len(self.acknowledged)} events acknowledged, "
            f"{len(self.delivered)} distinct delivered, lost {len(self.lost)}; duplicates "
            f"{self.duplicates} ({self.duplicates_without_crash} while no process crashed; "
            f"per crash max {max(per, default=0)} events in at most "
            f"{max(self.batches_per_crash, default=0)} batch(es), "
            f"mean {sum(per) / max(1, len(per)):.1f}, "
            f"crashes followed by any {sum(1 for d in per if d)}); final {self.final_accounts}"
        )


def run_two_processes(crashes: int, seed: int, workdir: Path) -> TwoProcessReport:
    """Phase 1: two processes share the load, no crash. Phase 2: `crashes` times, one of them is
    killed while it holds a lease and a replacement starts at once, beside a live second one."""
    report = TwoProcessReport(crashes=crashes, seed=seed)
    rng = random.Random(seed)
    data_dir = workdir / "data"
    db = data_dir / "telemetry.db"
    started_at = time.monotonic()
    args = ("--max-queue", "1000000", *FAST_RETRIES)
    next_number = 0

    def feed(sidecar: SidecarProcess, batches: int, *, wait: bool) -> Feeder:
        nonlocal next_number
        feeder = Feeder(sidecar, next_number, [rng.randint(1, 60) for _ in range(batches)],
                        await_answers=wait)
        # Reserve the numbers now so two feeders never share one.
        next_number += sum(feeder.plan)
        return feeder.start()

    with CaptureServer() as server, reaping() as started:
        # Phase 1: two windows at once, both fed, both delivering; nobody crashes.
        first = spawn(started, data_dir, server.url, *args)
        second = spawn(started, data_dir, server.url, *args)
        feeders = [feed(first, 40, wait=True), feed(second, 40, wait=True)]
        for feeder in feeders:
            feeder.join()
        drain(first)
        drain(second)
        assert first.stop() == 0, first.stderr
        for feeder in feeders:
            report.acknowledged |= feeder.acknowledged()

        # Phase 2: `second` lives on; a victim is killed mid-delivery and restarted at once.
        server.set_default(Delay(SERVER_DELAY_S))
        cuts = [time.monotonic()]  # phase 1 ends here
        victim = spawn(started, data_dir, server.url, *args)
        for _ in range(crashes):
            feeders = [feed(victim, 12, wait=True), feed(second, 3, wait=True)]
            # Mid-delivery: it holds a lease, so a batch is claimed, on the wire or answered.
            wait_until(partial(mid_delivery, db, victim), "a lease held by the victim")
            time.sleep(rng.uniform(0.0, SERVER_DELAY_S * 1.5))
            victim.kill()
            cuts.append(time.monotonic())
            for feeder in feeders:
                feeder.join()
                report.acknowledged |= feeder.acknowledged()
            victim = spawn(started, data_dir, server.url, *args)  # the quick restart
        server.set_default(None)
        drain(victim)
        drain(second)
        assert victim.stop() == 0, victim.stderr
        assert second.stop() == 0, second.stderr
        # In arrival order: a killed process's last request may be recorded after the resend
        # of its rows by the process that took them over, when both wait on the server.
        requests = sorted(server.requests, key=lambda request: request.received_at)
    report.seconds = time.monotonic() - started_at
    report.delivered = delivery_counts(e for r in requests for e in r.events)
    report.final_accounts = accounts(db)
    # Period 0 is phase 1, period k the round ended by crash k, the last one the final drain.
    again = redeliveries(requests, cuts)
    report.duplicates_without_crash = again.events[0] + again.events[-1]
    report.duplicates_per_crash = again.events[1:-1]
    report.batches_per_crash = again.batches[1:-1]
    return report


def test_two_processes_on_one_folder_send_each_event_once_and_a_crash_at_most_one_batch_again(
    tmp_path: Path,
) -> None:
    """Two processes on one database send each event once; a crash re-sends at most one batch."""
    crashes = int(os.environ.get("TWO_PROCESS_CRASHES", "5"))
    seed = int(os.environ.get("CRASH_SEED", str(random.SystemRandom().randrange(2**32))))
    report = run_two_processes(crashes, seed, tmp_path)
    print(report.summary())
    assert report.acknowledged, report.summary()
    assert report.lost == [], report.summary()
    assert report.duplicates_without_crash == 0, report.summary()
    assert max(report.duplicates_per_crash) <= BATCH_SIZE, report.summary()
    assert max(report.batches_per_crash) <= 1, report.summary()
    assert report.duplicates == sum(report.duplicates_per_crash), report.summary()
    final = report.final_accounts
    assert final is not None
    assert final.balanced, final
    assert final.queued == 0
    assert final.delivered == final.inserted == len(report.delivered), report.summary()
