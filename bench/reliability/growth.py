"""Print the bounded-growth figures (suite 7): a long offline period compressed into minutes.

    .venv/bin/python bench/reliability/growth.py                       # 100,000 events, 1,000 calls
    .venv/bin/python bench/reliability/growth.py --events 1000000 --calls 10000

The capture host is down while `ph_send_batch` calls arrive at the default --max-queue 500 and
the sender keeps retrying; the database and WAL sizes are sampled as events go in. Then the
server comes up on the same port, the queue drains, and the sizes are taken once the sender has
gone idle (it gives free pages and the WAL back then) and after a clean exit. A second run sends
calls of 4,000 large events, ten times the queue bound each.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from test_growth import (  # noqa: E402
    DRAINED_BOUND,
    STEADY_BOUND,
    GrowthReport,
    MiB,
    run_offline_week,
)


def show(title: str, report: GrowthReport, bound: int) -> bool:
    """Print one run; returns whether it kept its bounds and its accounts."""
    print(f"\n## {title}\n")
    print("| events sent | db KiB | WAL KiB | db+WAL KiB |")
    print("|---:|---:|---:|---:|")
    step = max(1, len(report.samples) // 10)
    for sent, db, wal in report.samples[::step]:
        print(f"| {sent} | {db // 1024} | {wal // 1024} | {(db + wal) // 1024} |")
    print(f"\npeak db+WAL {report.peak / MiB:.2f} MiB (bound {bound / MiB:.0f} MiB); "
          f"drained and idle {sum(report.drained_sizes) // 1024} KiB "
          f"(db {report.drained_sizes[0]} B, WAL {report.drained_sizes[1]} B); "
          f"after exit db {report.stopped_sizes[0]} B, WAL {report.stopped_sizes[1]} B")
    final = report.final_accounts
    print(f"counters offline: {report.offline_accounts}")
    print(f"counters at the end: {final}; inserted == delivered + queued + dropped: "
          f"{final is not None and final.balanced}; {report.seconds:.0f} s")
    return (report.peak <= bound and sum(report.drained_sizes) <= DRAINED_BOUND
            and final is not None and final.balanced)


def main() -> int:
    """Run both periods and print the figures; exit 1 when a bound or the accounts fail."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--calls", type=int, default=1_000)
    parser.add_argument("--padding", type=int, default=200, help="bytes of filler per event")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="growth-") as workdir:
        steady = run_offline_week(Path(workdir) / "steady", events=args.events,
                                  calls=args.calls, padding=args.padding)
        bursts = run_offline_week(Path(workdir) / "bursts", events=24_000, calls=6,
                                  padding=2000, samples=6)
    ok = show(f"{args.events} events in {args.calls} calls, {args.padding}-byte padding",
              steady, STEADY_BOUND)
    ok &= show("24,000 events in 6 calls of 4,000, 2000-byte padding", bursts, 16 * MiB)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
