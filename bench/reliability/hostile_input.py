"""Print the hostile-input figures (suite 3): the real process fed junk on stdin.

    .venv/bin/python bench/reliability/hostile_input.py            # ~1 min
    .venv/bin/python bench/reliability/hostile_input.py --random 20000

1. The hostile corpus, one line at a time: lines by kind, answers owed and given, answers that
   broke the oracle (hostile_oracle.py), -32603 answers (bugs), events accepted, whether the 5
   events queued before are still there, peak RSS growth.
2. Floods written without reading stdout: lines written before the sidecar stopped reading,
   VmHWM growth while blocked and at the end, answers received once stdout is read.
3. The worst single lines: a JSON-RPC batch of 1,000,000 junk members (refused whole), and the
   largest batch allowed (32 calls of 10,000 invalid events each).
Memory is /proc/<pid>/status (Linux); elsewhere those columns are empty.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "tests" / "reliability")]

from fm_support import OFFLINE_HOST, Flood, flood_lines, unread_sidecar  # noqa: E402
from hostile_corpus import (  # noqa: E402
    long_number_cases,
    random_lines,
    special_lines,
    surrogate_cases,
    wrong_types_everywhere,
)
from hostile_oracle import check_answer, expected_for_line, loads  # noqa: E402

from sidecar_dev.driver import SidecarProcess  # noqa: E402
from sidecar_dev.harness import TEST_KEY, numbered, proc_status_kib  # noqa: E402


def _mib(kib: int | None, base: int | None) -> str:
    return "-" if kib is None or base is None else f"{(kib - base) / 1024:.1f}"


def corpus_figures(folder: Path, random_count: int) -> None:
    """The corpus against the real process, one line at a time."""
    kinds = {
        "special (nesting, huge numbers, NaN, junk batches, dup ids)": list(special_lines()),
        "wrong type in every field of every method": list(wrong_types_everywhere()),
        "random bytes / text / mutated requests": list(random_lines(random.Random(4),
                                                                     random_count)),
        "lone surrogate in every string param and event field":
            [case.line for case in surrogate_cases()],
        "integer past int()'s 4,300-digit text limit in every position":
            [case.line for case in long_number_cases()],
    }
    print("\n## Hostile corpus, one line at a time\n")
    print("| kind | lines | answers owed | answered as owed | broke the oracle | -32603 |")
    print("|---|---|---|---|---|---|")
    with SidecarProcess(folder, OFFLINE_HOST, "--max-queue", "1000000", api_key=TEST_KEY) as proc:
        seeded = proc.result("ph_send_batch", {"batch": numbered(5, scenario="seed")})
        base = proc_status_kib(proc.process.pid, "VmHWM")
        accepted = 0
        for kind, chunks in kinds.items():
            lines = [ln for chunk in chunks for ln in chunk.split(b"\n")[:-1]]
            owed = ok = bad = internal = 0
            for line in lines:
                expected = expected_for_line(line)
                proc.send_raw(line + b"\n")
                if expected.kind == "none":
                    continue
                owed += 1
                raw = proc.read_line()
                decoded = loads(raw)
                internal += raw.count(b'"code":-32603')
                try:
                    check_answer(expected, decoded)
                    ok += 1
                except AssertionError:
                    bad += 1
                for item in decoded if isinstance(decoded, list) else [decoded]:
                    result = item.get("result")
                    if isinstance(result, dict) and "rejected" in result:
                        accepted += result["accepted"]
            print(f"| {kind} | {len(lines)} | {owed} | {ok} | {bad} | {internal} |")
        status = proc.result("ph_status")
        peak = proc_status_kib(proc.process.pid, "VmHWM")
        alive = proc.process.poll() is None
        code = proc.stop()
    print(f"\nProcess up throughout: {alive}; exit code {code}. Queue: {seeded['queued']} "
          f"before + {accepted} accepted by the corpus = {status['queued']} queued after. "
          f"Peak RSS growth: {_mib(peak, base)} MiB.")


def flood_figures(folder: Path) -> None:
    """Floods nobody reads, then read."""
    print("\n## Floods written without reading stdout\n")
    print("| flood | lines | written before it stopped reading | VmHWM + while blocked MiB "
          "| VmHWM + peak MiB | answers read |")
    print("|---|---|---|---|---|---|")
    cases = (("ping", 50_000, 0), ("ph_send_batch of 1,000 invalid events", 1_000, 1_000),
             ("ph_send_batch of 10,000 invalid events", 600, 10_000))
    for i, (label, count, events) in enumerate(cases):
        with unread_sidecar(folder / f"flood{i}") as raw:
            raw.ask(b'{"jsonrpc":"2.0","id":-1,"method":"ping"}\n')
            base = proc_status_kib(raw.process.pid, "VmHWM")
            writer = Flood(raw, flood_lines(count, events))
            written = writer.wait_blocked()
            blocked = proc_status_kib(raw.process.pid, "VmHWM")
            answers = sum(1 for _ in range(count) if raw.read_line())
            writer.join(30)
            peak = proc_status_kib(raw.process.pid, "VmHWM")
            print(f"| {label} | {count} | {written} | {_mib(blocked, base)} | "
                  f"{_mib(peak, base)} | {answers} |")


def worst_line_figures(folder: Path) -> None:
    """The largest single lines."""
    print("\n## Worst single lines (read normally)\n")
    print("| line | line MiB | answer MiB | seconds | VmHWM + MiB |")
    print("|---|---|---|---|---|")
    call = ('{"jsonrpc":"2.0","id":1,"method":"ph_send_batch","params":{"batch":['
            + ",".join(["{}"] * 10_000) + "]}}")
    cases = (
        ("JSON-RPC batch of 1,000,000 junk members (refused whole)",
         b"[" + b",".join([b"0"] * 1_000_000) + b"]\n"),
        ("JSON-RPC batch of 32 calls x 10,000 invalid events (the largest allowed)",
         ("[" + ",".join([call] * 32) + "]\n").encode()),
        ("one call of 10,000 invalid events", (call + "\n").encode()),
    )
    for i, (label, line) in enumerate(cases):
        with unread_sidecar(folder / f"worst{i}") as raw:
            raw.ask(b'{"jsonrpc":"2.0","id":-1,"method":"ping"}\n')
            base = proc_status_kib(raw.process.pid, "VmHWM")
            started = time.monotonic()
            answer = raw.ask(line)
            took = time.monotonic() - started
            peak = proc_status_kib(raw.process.pid, "VmHWM")
            print(f"| {label} | {len(line) / 2**20:.2f} | {len(answer) / 2**20:.2f} | "
                  f"{took:.2f} | {_mib(peak, base)} |")


def main() -> int:
    """Print every table."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--random", type=int, default=3000, help="random lines (default 3000)")
    args = parser.parse_args()
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        print("# Hostile input on stdin (the real sidecar)")
        corpus_figures(Path(tmp) / "corpus", args.random)
        flood_figures(Path(tmp))
        worst_line_figures(Path(tmp))
    print(f"\n{time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
