"""Print the power-loss figures: SIGKILL the real sidecar and cut the power at random points.

    .venv/bin/python bench/reliability/powerloss.py --rounds 50                      # default
    .venv/bin/python bench/reliability/powerloss.py --rounds 50 --durability normal  # a level
    .venv/bin/python bench/reliability/powerloss.py --rounds 50 --seed 7             # replay

Each round mounts `tests/powerloss/lazyfs.py` (a FUSE file system that keeps every unsynced
write and directory change in memory) over one backing folder, starts `python -m sidecar` (or
`SIDECAR_COMMAND`) on the mount with an unreachable capture host, pipelines `ph_send_batch`
calls and SIGKILLs the process tree after a seeded number of answers; then the power goes (the
file system drops what was not synced) and plain sqlite3 reads the backing folder: `PRAGMA
quick_check` and the uuids still queued. Acknowledged means the batch's answer reached stdout
before the kill; an acknowledged event missing after any later cut is lost. `--durability` is
passed to the sidecar only when given. Needs root (or FUSE access), /dev/fuse, fusermount3 and
pyfuse3. Exits 1 when an acknowledged event was lost or a database failed `quick_check`.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability"), str(ROOT / "tests" / "powerloss")]

from lazymount import fuse_missing  # type: ignore[import-not-found]  # noqa: E402
from powerloss_rounds import run_rounds  # type: ignore[import-not-found]  # noqa: E402


def main() -> int:
    """Run the rounds and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=50)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--durability", choices=("full", "normal"), default=None,
                        help="passed to the sidecar as --durability (default: not passed)")
    args = parser.parse_args()
    missing = fuse_missing()
    if missing is not None:
        print(f"cannot mount the power-loss file system: {missing}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="powerloss-") as workdir:
        report = run_rounds(args.rounds, seed, Path(workdir), durability=args.durability)
    level = args.durability or "the default"
    print(f"# power loss: {args.rounds} rounds, durability {level}, seed {seed}, "
          f"{report.seconds:.0f} s\n")
    lossy = [r for r in report.rounds if r.lost_now]
    rows = [
        ("rounds (SIGKILL + power cut)", len(report.rounds)),
        ("... killed before any answer", sum(1 for r in report.rounds if r.kill_after == 0)),
        ("ph_send_batch calls acknowledged", report.calls_acknowledged),
        ("events acknowledged", len(report.acknowledged)),
        ("acknowledged events lost", len(report.lost)),
        ("rounds that lost acknowledged events", len(lossy)),
        ("quick_check failures", len(report.bad_checks)),
        ("no database after a cut", sum(1 for r in report.rounds if r.check == "missing")),
        ("sync calls (fsync, fdatasync, directory fsync)", report.syncs),
        ("syncs per acknowledged call", f"{report.syncs_per_call:.2f}"),
    ]
    print("| figure | value |")
    print("|---|---|")
    for name, value in rows:
        print(f"| {name} | {value} |")
    by_file = report.syncs_by_file()
    print("\nsyncs by file: " + ", ".join(f"{path} {count}" for path, count in sorted(
        by_file.items(), key=lambda item: -item[1])))
    for r in report.bad_checks:
        print(f"round {r.index}: quick_check said {r.check}")
    return 1 if report.lost or report.bad_checks else 0


if __name__ == "__main__":
    raise SystemExit(main())
