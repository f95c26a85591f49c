"""Bounded growth: a long time offline at a steady event rate keeps the database and its WAL
under a stated size, the counters add up exactly, and the files shrink back once the queue drains.

A week cannot be waited for, so the week is compressed: 100,000 events over 1,000 `ph_send_batch`
calls at the default `--max-queue 500`, the capture host down all along while the sender keeps
failing to connect and retrying (fast backoff), then the server comes back on the same port.
The figures script is `bench/reliability/growth.py`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from crashkit import (
    Accounts,
    accounts,
    delivery_counts,
    drain,
    file_sizes,
    spawn,
)

from sidecar_dev.capture import CaptureServer
from sidecar_dev.harness import FAST_RETRIES, free_port, numbered, reaping, wait_until

MiB = 1024 * 1024
MAX_QUEUE = 500  # the default
# Stated bounds. SQLite checkpoints the WAL automatically at 1000 pages (4 MiB) and reuses it,
# so while events flow the WAL reaches ~4.1 MiB; the rest is the queue itself plus one call's
# churn (at most `--max-queue` rows inserted and as many freed in one transaction).
STEADY_BOUND = 6 * MiB
# Drained and idle: the free pages and the WAL are given back.
DRAINED_BOUND = 64 * 1024


@dataclass
class GrowthReport:
    """Sizes over a compressed offline period, and what the counters said."""

    events: int
    calls: int
    padding: int
    samples: list[tuple[int, int, int]] = field(default_factory=list)  # (events sent, db, wal)
    offline_accounts: Accounts | None = None
    offline_status: dict[str, object] = field(default_factory=dict)
    drained_status: dict[str, object] = field(default_factory=dict)
    drained_sizes: tuple[int, int] = (0, 0)
    stopped_sizes: tuple[int, int] = (0, 0)
    final_accounts: Accounts | None = None
    delivered: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def peak(self) -> int:
        """Largest database + WAL seen while offline."""
        return max(db + wal for _, db, wal in self.samples)

    def summary(self) -> str:
        """One paragraph of figures."""
        peak_db = max(db for _, db, _ in self.samples)
        peak_wal = max(wal for _, _, wal in self.samples)
        return (
            f"{self.events} events ({self.padding}-byte padding) in {self.calls} calls offline, "
            f"max-queue {MAX_QUEUE}, {self.seconds:.0f} s: peak db+WAL {self.peak / MiB:.2f} MiB "
            f"(db {peak_db / MiB:.2f}, WAL {peak_wal / MiB:.2f}); offline counters "
            f"{self.offline_accounts}; drained and idle: db {self.drained_sizes[0]} B, WAL "
            f"{self.drained_sizes[1]} B; after a clean exit: db {self.stopped_sizes[0]} B, WAL "
            f"{self.stopped_sizes[1]} B; final counters {self.final_accounts}"
        )


def run_offline_week(
    workdir: Path, *, events: int = 100_000, calls: int = 1_000, padding: int = 200,
    samples: int = 50,
) -> GrowthReport:
    """Feed `events` over `calls` calls with the server down, then bring it up and drain."""
    report = GrowthReport(events=events, calls=calls, padding=padding)
    data_dir = workdir / "data"
    db = data_dir / "telemetry.db"
    port = free_port()
    per_call = events // calls
    every = max(1, calls // samples)
    started_at = time.monotonic()
    with reaping() as started:
        sidecar = spawn(started, data_dir, f"http://127.0.0.1:{port}", *FAST_RETRIES)
        for call in range(calls):
            batch = numbered(per_call, call * per_call, with_uuids=True, padding=padding)
            answer = sidecar.result("ph_send_batch", {"batch": batch})
            assert answer["accepted"] == per_call, answer
            if call % every == every - 1:
                report.samples.append(((call + 1) * per_call, *file_sizes(data_dir)))
        report.offline_status = sidecar.result("ph_status")
        report.offline_accounts = accounts(db)
        with CaptureServer(port=port) as server:
            report.drained_status = drain(sidecar)
            # The sender gives space back when it finds nothing left to send.
            wait_until(lambda: sum(file_sizes(data_dir)) <= DRAINED_BOUND, "the space given back")
            report.drained_sizes = file_sizes(data_dir)
            assert sidecar.stop() == 0, sidecar.stderr
            report.delivered = dict(delivery_counts(server.events))
    report.stopped_sizes = file_sizes(data_dir)
    report.final_accounts = accounts(db)
    report.seconds = time.monotonic() - started_at
    return report


def test_a_compressed_week_offline_stays_bounded_and_adds_up(tmp_path: Path) -> None:
    """100,000 events offline stay under 6 MiB, add up exactly, and shrink back once drained."""
    report = run_offline_week(tmp_path)
    print(report.summary())
    assert len(report.samples) >= 50
    assert report.peak <= STEADY_BOUND, report.summary()

    offline = report.offline_accounts
    assert offline is not None
    assert offline.inserted == report.events
    assert offline.queued == MAX_QUEUE
    assert offline.delivered == 0
    assert offline.dropped == {
        "overflow": report.events - MAX_QUEUE, "rejected": 0, "retries_exhausted": 0, "opt_out": 0
    }
    assert offline.balanced
    status = report.offline_status
    assert status["queued"] == offline.queued
    assert status["dropped"] == offline.dropped

    final = report.final_accounts
    assert final is not None
    assert final.balanced, final
    assert final.inserted == report.events
    assert (final.delivered, final.queued) == (MAX_QUEUE, 0)
    assert report.drained_status["delivered"] == MAX_QUEUE
    newest = range(report.events - MAX_QUEUE, report.events)
    assert report.delivered == dict.fromkeys(newest, 1)

    assert sum(report.drained_sizes) <= DRAINED_BOUND, report.summary()
    assert report.stopped_sizes[1] == 0, report.summary()


def test_batches_bigger_than_the_bound_do_not_grow_the_files(tmp_path: Path) -> None:
    """Calls ten times the queue bound leave the files bounded by the queue, not by the call."""
    # 4,000 events of ~2 KB a call (48 MB in all) at --max-queue 500: under 16 MiB.
    report = run_offline_week(tmp_path, events=24_000, calls=6, padding=2000, samples=6)
    print(report.summary())
    assert report.peak <= 16 * MiB, report.summary()
    final = report.final_accounts
    assert final is not None
    assert final.balanced, final
    assert (final.inserted, final.delivered) == (24_000, MAX_QUEUE)
    assert final.dropped["overflow"] == 24_000 - MAX_QUEUE
    assert sum(report.drained_sizes) <= DRAINED_BOUND, report.summary()
