"""Spawn -> first `ping` answer, median of N starts, for each way of running the sidecar.

    .venv/bin/python bench/startup.py                 # python -m sidecar, and dist/ builds found
    .venv/bin/python bench/startup.py -n 5 --command dist/telemetry-sidecar-x86_64-unknown-linux-gnu
    .venv/bin/python bench/startup.py --variants      # builds of the spec's variants, side by side

`--variants` builds, in a temporary folder, the one-file binary as shipped, the same with
PyInstaller's default compression (`--compress`), the same without the spec's trimming
(`--no-trim`), and the onedir build, then measures them beside `python -m sidecar`. The one-file
minus the onedir figure is what unpacking the bundle costs at each start.

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


# Builds of build/telemetry-sidecar.spec that --variants measures: label, spec options.
VARIANTS = [
    ("one-file", []),
    ("one-file, compressed", ["--compress"]),
    ("one-file, untrimmed", ["--no-trim"]),
    ("onedir", ["--onedir"]),
]


def build_variant(folder: Path, label: str, options: list[str]) -> list[str]:
    """Build one variant of the spec under `folder`; returns the command that runs it."""
    name = "tsc-" + "".join(c if c.isalnum() else "-" for c in label)
    subprocess.run(
        [sys.executable, "-m", "PyInstaller", str(ROOT / "build" / "telemetry-sidecar.spec"),
         "--noconfirm", "--clean", "--log-level=WARN", f"--distpath={folder / 'dist'}",
         f"--workpath={folder / 'work' / name}", "--", f"--name={name}", *options],
        check=True, cwd=ROOT,
    )
    suffix = ".exe" if sys.platform == "win32" else ""
    if "--onedir" in options:
        return [str(folder / "dist" / f"{name}-onedir" / f"{name}{suffix}")]
    return [str(folder / "dist" / f"{name}{suffix}")]


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
    parser.add_argument(
        "--variants", action="store_true", help="build the spec's variants and measure them"
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="tsc-variants-") as tmp:
        if args.variants:
            commands = [("python -m sidecar", [sys.executable, "-m", "sidecar"])]
            for label, options in VARIANTS:
                print(f"building {label} ...", flush=True)
                commands.append((label, build_variant(Path(tmp), label, options)))
        else:
            commands = [
                (Path(shlex.split(c)[0]).name[:20], shlex.split(c)) for c in args.command
            ] or [("python -m sidecar", [sys.executable, "-m", "sidecar"]), *frozen_builds()]
        report(commands, args.runs)
    return 0


def report(commands: list[tuple[str, list[str]]], runs: int) -> None:
    """Measure `commands` in turns and print one line each."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"spawn -> first ping answer, median of {runs} starts (load average {load:.2f})")
    print(f"{'how':<20} {'median':>8} {'min':>8} {'max':>8} {'cpu':>8} {'size':>9}  command")
    results = measure([command for _, command in commands], runs)
    for (label, command), samples in zip(commands, results, strict=True):
        wall = [w for w, _ in samples]
        cpu = statistics.median(c for _, c in samples)
        print(
            f"{label:<20} {statistics.median(wall) * 1e3:>6.0f}ms {min(wall) * 1e3:>6.0f}ms"
            f" {max(wall) * 1e3:>6.0f}ms {cpu * 1e3:>6.0f}ms {size_of(command):>9}"
            f"  {shlex.join(command)}"
        )


if __name__ == "__main__":
    raise SystemExit(main())
