"""Spawn -> first `ping` answer, median of N starts, for each way of running the sidecar.

    .venv/bin/python bench/startup.py                 # python -m sidecar, and dist/ builds found
    .venv/bin/python bench/startup.py -n 5 --command dist/telemetry-sidecar-x86_64-unknown-linux-gnu

Each start writes a `ping` the moment the process exists (as a Tauri app does right after
`spawn()`), times the answer, then closes stdin and waits for the exit. One unmeasured start per
command comes first, so the database exists and the OS caches are warm, as on a user's second
launch. Figures are wall-clock on this machine; other load on it shows up in them.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PING = b'{"jsonrpc":"2.0","id":1,"method":"ping"}\n'
# Nothing listens there; the sidecar never connects with an empty queue.
HOST = "http://127.0.0.1:9"
# `python -m sidecar` is measured with its bytecode cached, as on a developer's machine (the
# warm-up start writes it): an environment that disables the cache would measure compiling.
ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def frozen_builds() -> list[tuple[str, list[str]]]:
    """The frozen builds present in dist/ (build/build.py's names), labelled."""
    found = []
    for path in sorted((ROOT / "dist").glob("telemetry-sidecar-*")):
        if path.is_file() and os.access(path, os.X_OK):
            found.append(("one-file", [str(path)]))
        elif path.is_dir() and path.name.endswith("-onedir"):
            inner = path / path.name.removesuffix("-onedir")
            inner = inner if inner.exists() else inner.with_name(inner.name + ".exe")
            if inner.exists():
                found.append(("onedir", [str(inner)]))
    return found


def time_start(command: list[str], data_dir: Path) -> tuple[float, float]:
    """Seconds from spawn to the complete answer line, and the CPU seconds of the whole run.

    The CPU time (user + system, the process and the children it waited for, so both processes
    of a one-file binary; start, one answer, clean exit) is far less sensitive than the wall
    clock to other load on the machine. POSIX only; NaN elsewhere.
    """
    started = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--data-dir", str(data_dir), "--host", HOST, "--log-level", "warning"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=ENV,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    process.stdin.write(PING)
    process.stdin.flush()
    line = process.stdout.readline()
    elapsed = time.perf_counter() - started
    process.stdin.close()
    cpu = float("nan")
    if hasattr(os, "wait4"):
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu = usage.ru_utime + usage.ru_stime
    code = process.wait(30)
    process.stdout.close()
    if b'"result"' not in line or code != 0:
        raise SystemExit(f"{shlex.join(command)}: bad start (exit {code}): {line!r}")
    return elapsed, cpu


def measure(commands: list[list[str]], runs: int) -> list[list[tuple[float, float]]]:
    """`runs` timed starts of each command after one warm-up start each.

    The commands take turns, so a burst of load from elsewhere on the machine falls on all of
    them alike rather than on whichever happened to be running.
    """
    times: list[list[tuple[float, float]]] = [[] for _ in commands]
    with tempfile.TemporaryDirectory(prefix="tsc-bench-") as tmp:
        folders = [Path(tmp) / str(i) for i in range(len(commands))]
        for command, folder in zip(commands, folders, strict=True):
            time_start(command, folder)
        for _ in range(runs):
            for command, folder, samples in zip(commands, folders, times, strict=True):
                samples.append(time_start(command, folder))
    return times


def size_of(command: list[str]) -> str:
    """The on-disk size of a frozen build (the file, or the folder for onedir)."""
    path = Path(command[0])
    if path.name.startswith("python") or not path.exists():
        return "-"
    if path.parent.name.endswith("-onedir"):
        total = sum(p.stat().st_size for p in path.parent.rglob("*") if p.is_file())
        return f"{total / 1e6:.1f} MB"
    return f"{path.stat().st_size / 1e6:.1f} MB"


def main() -> int:
    """Print one line per command: median, min and max start time, CPU time, and size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--runs", type=int, default=20)
    parser.add_argument(
        "--command", action="append", default=[], help="a command to measure (repeatable)"
    )
    args = parser.parse_args()
    commands = [(Path(shlex.split(c)[0]).name[:20], shlex.split(c)) for c in args.command] or [
        ("python -m sidecar", [sys.executable, "-m", "sidecar"]),
        *frozen_builds(),
    ]
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"spawn -> first ping answer, median of {args.runs} starts (load average {load:.2f})")
    print(f"{'how':<20} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8} {'size':>9}  command")
    results = measure([command for _, command in commands], args.runs)
    for (label, command), samples in zip(commands, results, strict=True):
        wall = [w for w, _ in samples]
        cpu = statistics.median(c for _, c in samples)
        print(
            f"{label:<20} {statistics.median(wall) * 1e3:>6.0f}ms {min(wall) * 1e3:>6.0f}ms"
            f" {max(wall) * 1e3:>6.0f}ms {cpu * 1e3:>6.0f}ms {size_of(command):>9}"
            f"  {shlex.join(command)}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
