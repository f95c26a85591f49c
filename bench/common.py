"""Shared pieces of the benchmark suite: request lines, the machine, process figures, stats.

The sidecar is driven by `sidecar_dev.driver.SidecarProcess`, as in the test suites, and the
events come from `profiles.py` (the suites' small page views, or events as posthog-js makes
them). Timestamps that cross processes (this one, the driver's reader thread, the capture
server) all come from `time.monotonic()`, which is CLOCK_MONOTONIC on Linux: one system-wide
clock, so a time taken in the server can be subtracted from one taken here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from profiles import api_key as profile_api_key
from profiles import events as profile_events

from sidecar_dev.driver import SidecarProcess, sidecar_command
from sidecar_dev.harness import OFFLINE_HOST, TEST_KEY

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
HUGE_QUEUE = "100000000"
# A hang guard for one answer while the sidecar works through a pipelined run.
ANSWER_TIMEOUT_S = 60.0

def mean_event_bytes(events: Sequence[dict[str, Any]]) -> float:
    """Mean compact JSON size of the events as the app sends them."""
    return statistics.fmean(len(json.dumps(e, separators=(",", ":"))) for e in events)


def request_lines(
    events: Sequence[dict[str, Any]], batch: int, *, first_id: int = 1,
    api_key: str | None = None,
) -> list[bytes]:
    """`ph_send_batch` request lines carrying `events`, `batch` per line (and `api_key`, if any)."""
    lines = []
    for n, start in enumerate(range(0, len(events), batch)):
        params: dict[str, Any] = {"batch": list(events[start : start + batch])}
        if api_key is not None:
            params["api_key"] = api_key
        message = {
            "jsonrpc": "2.0",
            "id": first_id + n,
            "method": "ph_send_batch",
            "params": params,
        }
        lines.append(json.dumps(message, separators=(",", ":")).encode() + b"\n")
    return lines


# ---- the machine -------------------------------------------------------------------------------


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess elsewhere)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def load_average() -> float:
    """The 1-minute load average (NaN where the OS has none)."""
    return os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "nproc": os.cpu_count(),
        "cpu_model": cpu_model(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "git_commit": _git(["rev-parse", "--short", "HEAD"]),
        "git_dirty_sidecar": bool(_git(["status", "--porcelain", "--", "sidecar"])),
        # The tree may change between runs (uncommitted work): this names the code measured.
        "sidecar_sources_sha256": hashlib.sha256(
            b"".join(p.read_bytes() for p in sorted((ROOT / "sidecar").rglob("*.py")))
        ).hexdigest()[:12],
    }


def _git(args: list[str]) -> str:
    try:
        out = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=False
        )
    except OSError:
        return ""
    return out.stdout.strip()


# ---- statistics --------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    """The median, NaN for no values."""
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), linear between the closest ranks."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(a: float, b: float) -> float:
    """a / b, NaN when b is zero or either is missing."""
    try:
        return a / b if b else float("nan")
    except TypeError:
        return float("nan")


# ---- driving a sidecar -------------------------------------------------------------------------


def spawn(
    data_dir: Path, host: str, *args: str, command: Sequence[str] | None = None
) -> SidecarProcess:
    """A sidecar as the benchmarks run it: the test key, warnings only on stderr."""
    return SidecarProcess(data_dir, host, "--log-level", "warning", *args, api_key=TEST_KEY,
                          command=command)


def rss(sidecar: SidecarProcess) -> int:
    """Resident bytes of the process tree (0 once gone)."""
    total = 0
    for proc in sidecar.tree():
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total


def cpu_seconds(sidecar: SidecarProcess) -> float:
    """User + system CPU seconds of the process tree so far."""
    total = 0.0
    for proc in sidecar.tree():
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def thread_counters(sidecar: SidecarProcess) -> dict[int, tuple[int, int]]:
    """Per live thread id: (nanoseconds on CPU, voluntary context switches).

    From /proc/PID/task/*/schedstat and .../status: far finer than psutil's clock ticks
    (10 ms). A voluntary switch is a thread going to sleep: about one per wake-up from a
    wait. Linux only (empty elsewhere). See `thread_delta` for a window.
    """
    counters: dict[int, tuple[int, int]] = {}
    for proc in sidecar.tree():
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{proc.pid}/task").iterdir():
                with contextlib.suppress(OSError, ValueError, IndexError):
                    cpu_ns = int((task / "schedstat").read_text().split()[0])
                    switches = 0
                    for line in (task / "status").read_text().splitlines():
                        if line.startswith("voluntary_ctxt_switches:"):
                            switches = int(line.split()[1])
                    counters[int(task.name)] = (cpu_ns, switches)
    return counters


def thread_delta(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[str, Any]:
    """CPU seconds and wake-ups between two `thread_counters` readings.

    Threads that exited in between are missing from `after`: what they did after `before` is
    lost (counted in `exited`, so a reader knows the figure is a lower bound then).
    """
    cpu_ns = sum(c - before.get(tid, (0, 0))[0] for tid, (c, _) in after.items())
    switches = sum(s - before.get(tid, (0, 0))[1] for tid, (_, s) in after.items())
    return {
        "cpu_s": cpu_ns / 1e9,
        "wakeups": switches,
        "threads": [len(before), len(after)],
        "exited": len(set(before) - set(after)),
        "started": len(set(after) - set(before)),
    }


def pipelined(
    sidecar: SidecarProcess, lines: Sequence[bytes], batch: int
) -> tuple[float, float]:
    """Write every line from a writer thread while this thread reads every answer.

    Returns (seconds from the first write to the last answer, the last queue depth). Fails if
    an answer is an error or accepted fewer events than were sent.
    """
    blob = b"".join(lines)
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            sidecar.send_raw(blob)
        except BaseException as exc:  # reported by the reader
            failure.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    started = time.monotonic()
    thread.start()
    queued = 0.0
    last = started
    for _ in lines:
        last, line = sidecar.read_timed_line(ANSWER_TIMEOUT_S)
        answer = json.loads(line)
        result = answer.get("result")
        if not result or result.get("accepted") != batch:
            raise RuntimeError(f"bad answer: {line[:300]!r}")
        queued = result["queued"]
    thread.join()
    if failure:
        raise failure[0]
    return last - started, queued


def wait_ready(sidecar: SidecarProcess) -> float:
    """Send `ping` and return seconds from spawn to its answer."""
    sidecar.result("ping")
    return time.monotonic() - sidecar.spawned_at


@contextlib.contextmanager
def workdir(prefix: str = "tsc-bench-") -> Iterator[Path]:
    """A temporary folder, removed afterwards."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def copy_db(source_dir: Path, target_dir: Path) -> None:
    """Copy a closed sidecar's database (and its WAL files, if any) into a fresh data folder."""
    target_dir.mkdir(parents=True, exist_ok=True)
    for name in ("telemetry.db", "telemetry.db-wal", "telemetry.db-shm"):
        if (source_dir / name).exists():
            shutil.copy2(source_dir / name, target_dir / name)


class PeakSampler:
    """Samples a sidecar's resident memory in a thread; `peak` is the largest seen."""

    def __init__(self, sidecar: SidecarProcess, interval: float = 0.02) -> None:
        self._sidecar = sidecar
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss(self._sidecar))
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fill_backlog(
    data_dir: Path, count: int, *, batch: int = 50, seed: int = 7, profile: str = "small"
) -> dict[str, Any]:
    """Queue `count` events of `profile` in a sidecar pointed at no server, then stop it cleanly.

    Returns the fill's own rates, in tenths of the fill: how ingest holds up as the queue deepens.
    """
    if count % batch:
        raise ValueError("the backlog must be a whole number of batches")
    events = profile_events(profile, count, seed=seed)
    lines = request_lines(events, batch, api_key=profile_api_key(profile))
    del events
    tenth = max(1, len(lines) // 10)
    rates = []
    with spawn(data_dir, OFFLINE_HOST, "--max-queue", HUGE_QUEUE) as sidecar:
        wait_ready(sidecar)
        for start in range(0, len(lines), tenth):
            chunk = lines[start : start + tenth]
            seconds, _ = pipelined(sidecar, chunk, batch)
            rates.append(len(chunk) * batch / seconds)
        depth = int(sidecar.result("ph_status")["queued"])
        code = sidecar.stop()
    if depth != count or code != 0:
        raise RuntimeError(f"backlog fill: queued {depth} of {count}, exit {code}")
    return {"events": count, "rates_by_tenth": [round(r) for r in rates]}


# ---- durability levels and syncs --------------------------------------------------------------


def durability_levels(command: Sequence[str] | None = None) -> tuple[list[str], str | None]:
    """The `--durability` levels the sidecar build offers, and a note when it offers none.

    A build whose `--help` names `--durability` gets both levels, `full` (its default) first. An
    older build has one level, its own, measured without the option (labelled `build`).
    """
    out = subprocess.run([*(command or sidecar_command()), "--help"], capture_output=True,
                         text=True, timeout=60, check=False)
    if "--durability" in out.stdout:
        return ["full", "normal"], None
    return ["build"], ("this sidecar build has no --durability option: ingest measured at its "
                       "own level only, the full/normal comparison skipped")


def durability_args(level: str) -> tuple[str, ...]:
    """The sidecar options that select `level` (none for an older build's own level)."""
    return () if level == "build" else ("--durability", level)


_SYNC_CALL = re.compile(rb"\b(?:fsync|fdatasync)\(")


class SyncTrace:
    """A sidecar command run under strace, counting its fsync and fdatasync calls.

    strace's seccomp-bpf filter stops the process only at those two calls, so the rest runs at
    full speed; the count is read from strace's log, one line per call (an interrupted call's
    `<unfinished ...>` line counts, its `resumed` line does not).
    """

    def __init__(self, log_path: Path, command: Sequence[str] | None = None) -> None:
        self.log_path = log_path
        self.command = [
            "strace", "-f", "--seccomp-bpf", "-qq", "-e", "trace=fsync,fdatasync",
            "-e", "signal=none", "-o", str(log_path), *(command or sidecar_command()),
        ]

    @staticmethod
    def available() -> bool:
        """Whether strace is installed."""
        return shutil.which("strace") is not None

    def count(self) -> int:
        """Sync calls logged so far."""
        try:
            return len(_SYNC_CALL.findall(self.log_path.read_bytes()))
        except FileNotFoundError:
            return 0


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the table."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] {message}",
          file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How much of everything to run: `full()` fits about 13 minutes here, `quick()` under 3."""

    quick: bool
    ingest_reps: int
    ingest_lines: dict[str, dict[int, int]]  # event profile -> batch size -> request lines per run
    sdk_capture_events: int
    backlog: int
    posthog_js_backlog: int
    drain_reps: int
    drain_budget_s: float  # stop repeating the sidecar's drain once past this
    big_batch: int
    latency_sends: int
    start_runs: int
    start_backlog: int
    start_backlog_reps: int
    window_s: float
    sdk_latency_sends: int
    capacity_requests: int

    @classmethod
    def full(cls) -> Plan:
        """The published run."""
        return cls(
            quick=False, ingest_reps=5,
            ingest_lines={"small": {1: 2000, 10: 800, 50: 400}, "posthog-js": {50: 400}},
            sdk_capture_events=10_000, backlog=100_000, posthog_js_backlog=100_000, drain_reps=3,
            drain_budget_s=200.0,
            big_batch=500, latency_sends=200, start_runs=10, start_backlog=5_000,
            start_backlog_reps=3, window_s=60.0, sdk_latency_sends=10, capacity_requests=2000,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        """A smoke run: fewer and smaller runs, 20,000 and 10,000 (posthog-js) backlogs, 10 s
        footprint windows."""
        return cls(
            quick=True, ingest_reps=3,
            ingest_lines={"small": {1: 1000, 10: 400, 50: 200}, "posthog-js": {50: 200}},
            sdk_capture_events=5_000, backlog=20_000, posthog_js_backlog=10_000, drain_reps=2,
            drain_budget_s=45.0,
            big_batch=500, latency_sends=100, start_runs=3, start_backlog=5_000,
            start_backlog_reps=1, window_s=10.0, sdk_latency_sends=2, capacity_requests=500,
        )
