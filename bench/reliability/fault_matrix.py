"""Print the delivery fault matrix: every scenario of suite 2 against the real process.

    .venv/bin/python bench/reliability/fault_matrix.py            # the whole matrix (~1 min)
    .venv/bin/python bench/reliability/fault_matrix.py --down 60  # count attempts over 60 s

Columns: the scenario, the answers the server gave in arrival order, requests made, events
delivered (and duplicates), events dropped and why, the shortest wait after a failure against
the floor it had to respect (backoff or Retry-After, capped by --retry-after-max), and whether
anything went out again after a 2xx or after being dropped. The backoff is shortened
(--backoff-base 0.05 --backoff-max 0.2 --retry-after-max 2.5) so the run takes about a minute;
the rules are the same at the defaults, only slower. The last table counts attempts while the
host is down, and scales them to the defaults (--backoff-max 30: at most 4 a minute).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from fault_scenarios import (  # noqa: E402
    RETRY_AFTER_MAX_S,
    DownRow,
    Row,
    run_auth,
    run_connection,
    run_down_closed_port,
    run_down_hangup,
    run_other_statuses,
    run_poison,
    run_sizes,
    run_status_matrix,
)

from sidecar_dev.harness import FAST_BACKOFF_MAX_S  # noqa: E402


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _statuses(row: Row) -> str:
    shown = row.statuses if len(row.statuses) <= 9 else [*row.statuses[:8], "…"]
    return ",".join(shown)


def print_rows(title: str, rows: list[Row]) -> int:
    """One table; returns how many rows broke a rule."""
    print(f"\n## {title}\n")
    header = ("scenario", "answers", "req", "deliv", "dup", "dropped (why)",
              "min wait s", "floor s", "resent", "ok")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    bad = 0
    for row in rows:
        dropped = ", ".join(f"{n} {why}" for why, n in row.dropped.items()) or "0"
        floor = max(row.floors) if row.floors else None
        resent = row.resent_after_2xx + row.resent_after_drop
        ok = (
            not row.floor_violations
            and row.resent_after_drop == 0
            and row.resent_after_2xx == row.expect.expect_resent_after_2xx
            and row.delivered + sum(row.dropped.values()) == row.sent
        )
        bad += not ok
        cells = (
            row.scenario, _statuses(row), str(row.requests), str(row.delivered),
            str(row.duplicates), dropped, _seconds(row.min_gap_s), _seconds(floor),
            str(resent), "yes" if ok else "NO",
        )
        print("| " + " | ".join(cells) + " |")
        if row.note:
            print(f"|   ({row.note}) |" + " |" * (len(header) - 1))
    return bad


def print_down(rows: list[DownRow]) -> int:
    """The attempts-while-down table; returns how many rows broke the bound."""
    print("\n## Host down: attempts per window (no tight loop)\n")
    header = ("scenario", "window s", "attempts", "bound", "per min", "min gap s",
              "counted by", "delivered when back")
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    bad = 0
    for row in rows:
        bad += not row.attempts <= row.bound
        back = "-" if row.delivered_after_recovery is None else str(row.delivered_after_recovery)
        print(f"| {row.scenario} | {row.window_s:g} | {row.attempts} | {row.bound} | "
              f"{row.per_minute:.0f} | {row.min_gap_s:.3f} | {row.counted_by} | {back} |")
    floor = FAST_BACKOFF_MAX_S / 2
    print(f"\nWith --backoff-max {FAST_BACKOFF_MAX_S:g} the floor between attempts is "
          f"{floor:g} s (at most {60 / floor:.0f}/min); at the default "
          "--backoff-max 30 it is 15 s (at most 4/min). New events sent every ~20 ms during "
          "the window did not hurry the retries.")
    return bad


def main() -> int:
    """Run every series and print the tables; exit 1 if any row broke a rule."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--down", type=float, default=10.0,
                        help="seconds to count attempts while the host is down (default 10)")
    args = parser.parse_args()
    started = time.monotonic()
    bad = 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print("# Delivery fault matrix (the real sidecar against the fake capture server)")
        print(f"\nRetry-After cap for this run: --retry-after-max {RETRY_AFTER_MAX_S:g} s.")
        bad += print_rows("Retryable statuses x Retry-After (then --max-retries 1 exhausted)",
                          run_status_matrix(folder / "status"))
        bad += print_rows("2xx and unexpected statuses", run_other_statuses(folder / "other"))
        bad += print_rows("400: isolating poisoned events", run_poison(folder / "poison"))
        bad += print_rows("413: mixed sizes, body cap 6,000 bytes", run_sizes(folder / "sizes"))
        bad += print_rows("401/403: holds", run_auth(folder / "auth"))
        bad += print_rows("Connection faults (--request-timeout 1)",
                          run_connection(folder / "conn"))
        bad += print_down([
            run_down_hangup(folder / "hangup", window_s=args.down),
            run_down_closed_port(folder / "closed", window_s=args.down),
        ])
    print(f"\n{bad} rows broke a rule; {time.monotonic() - started:.0f} s")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
