"""Print the two-process figures (suite 5): two sidecars on one data folder, one killed often.

    .venv/bin/python bench/reliability/two_processes.py --crashes 50

Phase 1: two processes on one database, both fed, both delivering, neither crashes: every event
must arrive exactly once. Phase 2: one process lives on while the other is SIGKILLed whenever it
holds a lease (a batch claimed, on the wire or answered; the server holds each request 0.2 s)
and is restarted at once, as a quick relaunch of the app. Duplicates are blamed on the crash of
the run whose request first delivered the uuid.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from figures import print_table, run_args  # noqa: E402
from test_two_processes import BATCH_SIZE, run_two_processes  # noqa: E402


def main() -> int:
    """Run both phases and print the figures; exit 1 on a loss or a rule broken."""
    crashes, seed = run_args(__doc__.splitlines()[0], "crashes", 50)
    with tempfile.TemporaryDirectory(prefix="two-") as workdir:
        report = run_two_processes(crashes, seed, Path(workdir))
    per = report.duplicates_per_crash
    rows: list[tuple[str, object]] = [
        ("events acknowledged", len(report.acknowledged)),
        ("acknowledged events lost", len(report.lost)),
        ("distinct events delivered", len(report.delivered)),
        ("duplicates while no process crashed", report.duplicates_without_crash),
        ("duplicates after crashes", sum(per)),
        ("duplicates per crash: max / mean",
         f"{max(per, default=0)} / {sum(per) / max(1, len(per)):.1f}"),
        ("batches re-sent per crash: max", max(report.batches_per_crash, default=0)),
        ("crashes followed by a re-sent batch", sum(1 for d in per if d)),
        ("final counters", report.final_accounts),
    ]
    print_table(f"two processes: {crashes} crashes, seed {seed}, {report.seconds:.0f} s", rows)
    failed = (report.lost or report.duplicates_without_crash
              or max(per, default=0) > BATCH_SIZE or max(report.batches_per_crash, default=0) > 1)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
