"""Print the crash-consistency figures (suite 1): SIGKILL the real sidecar at random points.

    .venv/bin/python bench/reliability/crash.py --kills 200            # the published run (~6 min)
    .venv/bin/python bench/reliability/crash.py --kills 200 --seed 7   # replay a seed's choices

Each run of the loop starts `python -m sidecar` (or `SIDECAR_COMMAND`) on one data folder and
SIGKILLs its process tree during one kind of work: start-up, ingest with the server down,
ingest and delivery with it up, delivery of an earlier backlog, a big commit that crosses SQLite's
automatic checkpoint, or the clean shutdown's WAL checkpoint. After each kill the database is
opened read-only for `PRAGMA quick_check` and the queue-depth counter is compared with the rows.
A last run delivers everything. Acknowledged means the batch's answer reached stdout before the
kill. Kill timing is random, so two runs with one seed make the same choices, not the same cuts.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from figures import print_table, run_args  # noqa: E402
from test_crash import BATCH_SIZE, KINDS, run_crash_loop  # noqa: E402


def main() -> int:
    """Run the loop and print the figures; exit 1 when an acknowledged event was lost."""
    kills, seed = run_args(__doc__.splitlines()[0], "kills", 200)
    with tempfile.TemporaryDirectory(prefix="crash-") as workdir:
        report = run_crash_loop(kills, seed, Path(workdir))
    per_kill = report.duplicates_per_kill
    rows: list[tuple[str, object]] = [
        ("kills by kind", ", ".join(f"{k} {report.kinds[k]}" for k in KINDS)),
        ("events sent (written to stdin)", report.sent),
        ("events acknowledged before a kill", len(report.acknowledged)),
        ("acknowledged events lost", len(report.lost)),
        ("distinct events delivered", len(report.delivered)),
        ("... of which unacknowledged (written, answer cut off)",
         report.unacknowledged_delivered),
        ("duplicate deliveries (same uuid)", report.duplicates),
        ("kills followed by duplicates", sum(1 for d in per_kill if d)),
        ("duplicates per kill: max / mean",
         f"{max(per_kill, default=0)} / {report.duplicates / max(1, report.kills):.2f}"),
        ("batches re-sent per kill: max", max(report.batches_per_kill, default=0)),
        ("quick_check not ok after a kill", len(report.bad_checks)),
        ("queue-depth counter off after a kill", len(report.depth_mismatches)),
        ("final counters", report.final_accounts),
    ]
    print_table(f"crash consistency: {kills} SIGKILLs, seed {seed}, {report.seconds:.0f} s", rows)
    histogram: dict[int, int] = {}
    for count in per_kill:
        histogram[count] = histogram.get(count, 0) + 1
    print("\nduplicates after a kill -> kills: "
          + ", ".join(f"{n} -> {k}" for n, k in sorted(histogram.items())))
    for index, kind, check in report.bad_checks:
        print(f"kill {index} ({kind}): quick_check said {check}")
    failed = (report.lost or report.bad_checks or report.depth_mismatches
              or max(per_kill, default=0) > BATCH_SIZE)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
