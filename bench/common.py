"""Shared pieces of the benchmark suite: the events, the machine, a lean sidecar driver, stats.

Timestamps that cross processes (this one, the sidecar's driver, the capture server) all come
from `time.monotonic()`, which is CLOCK_MONOTONIC on Linux: one system-wide clock, so a time
taken in the server can be subtracted from one taken here.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
API_KEY = "phc_bench0000000000000000000000000000000000"
# Nothing listens on the discard port (binding it needs root): connecting fails at once, so a
# sidecar pointed there is "offline" and its sender backs off without competing for the CPU.
OFFLINE_HOST = "http://127.0.0.1:9"
HUGE_QUEUE = "100000000"

_PATHS = (
    "/",
    "/projects",
    "/projects/{p}/settings",
    "/projects/{p}/insights/{i}",
    "/billing",
    "/docs/getting-started",
    "/projects/{p}/dashboards/{i}",
)
_BROWSERS = (
    ("Chrome", "Mac OS X"),
    ("Firefox", "Windows"),
    ("Safari", "Mac OS X"),
    ("Chrome", "Linux"),
    ("Edge", "Windows"),
)
_EPOCH = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


# ---- events ------------------------------------------------------------------------------------


def make_event(index: int, rng: random.Random) -> dict[str, Any]:
    """A $pageview as the Tauri client sends it (uuid and timestamp set at capture), ~340 bytes.

    Properties vary a little from event to event (path, browser, ids), so gzip sees realistic
    text rather than one repeated line.
    """
    project = rng.randrange(1, 999)
    path = rng.choice(_PATHS).format(p=project, i=rng.randrange(1, 99999))
    browser, os_name = rng.choice(_BROWSERS)
    when = _EPOCH + dt.timedelta(milliseconds=index * 37)
    return {
        "event": "$pageview",
        "distinct_id": f"user-{rng.randrange(100000):06d}",
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "properties": {
            "$current_url": f"https://app.example.com{path}",
            "$pathname": path,
            "$browser": browser,
            "$os": os_name,
            "$session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "plan": rng.choice(("free", "pro", "team")),
        },
    }


def make_events(count: int, seed: int = 1, start: int = 0) -> list[dict[str, Any]]:
    """`count` events, the same ones for the same seed (the SDK worker rebuilds them this way)."""
    rng = random.Random(seed)
    return [make_event(start + i, rng) for i in range(count)]


def mean_event_bytes(events: Sequence[dict[str, Any]]) -> float:
    """Mean compact JSON size of the events as the app sends them."""
    return statistics.fmean(len(json.dumps(e, separators=(",", ":"))) for e in events)


def request_lines(
    events: Sequence[dict[str, Any]], batch: int, *, first_id: int = 1
) -> list[bytes]:
    """`ph_send_batch` request lines carrying `events`, `batch` per line."""
    lines = []
    for n, start in enumerate(range(0, len(events), batch)):
        message = {
            "jsonrpc": "2.0",
            "id": first_id + n,
            "method": "ph_send_batch",
            "params": {"batch": list(events[start : start + batch])},
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
            b"".join(p.read_bytes() for p in sorted((ROOT / "sidecar").glob("*.py")))
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


def python_command() -> list[str]:
    """`python -m sidecar` with this interpreter, or SIDECAR_COMMAND (as sidecar/client.py)."""
    from sidecar.client import sidecar_command

    return list(sidecar_command())


class Sidecar:
    """One sidecar process over real pipes: raw writes, one reader thread, stderr to a file.

    Leaner than `sidecar.client.SidecarProcess` on purpose: the benchmark shares two cores with
    the process it measures, so the driver decodes nothing it does not need.
    """

    def __init__(
        self,
        data_dir: Path,
        host: str,
        *args: str,
        command: Sequence[str] | None = None,
        log_level: str = "warning",
    ) -> None:
        self.command = [*(command or python_command()), "--data-dir", str(data_dir),
                        "--host", host, "--api-key", API_KEY, "--log-level", log_level, *args]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
        environment["NO_PROXY"] = "127.0.0.1,localhost"
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.spawned_at = time.monotonic()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=environment,
            bufsize=0,
        )
        self.lines: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._reader = threading.Thread(target=self._pump, daemon=True)
        self._reader.start()
        self._next_id = 10_000_000
        self.ps = psutil.Process(self.process.pid)

    @property
    def pid(self) -> int:
        """The process id (for a one-file binary: the bootloader's)."""
        return self.process.pid

    def _pump(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put((time.monotonic(), line))

    def write(self, data: bytes) -> None:
        """Write raw bytes to stdin (blocks while the pipe is full)."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)

    def read(self, timeout: float = 60.0) -> tuple[float, bytes]:
        """The next response line and when it was read."""
        try:
            return self.lines.get(timeout=timeout)
        except queue.Empty:
            raise RuntimeError(f"no answer within {timeout}s; stderr:\n{self.stderr()}") from None

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """One request, waiting for its answer (no other request may be in flight)."""
        self._next_id += 1
        message: dict[str, Any] = {"jsonrpc": "2.0", "id": self._next_id, "method": method}
        if params is not None:
            message["params"] = params
        self.write(json.dumps(message).encode() + b"\n")
        _, line = self.read()
        answer: dict[str, Any] = json.loads(line)
        if answer.get("id") != self._next_id or "result" not in answer:
            raise RuntimeError(f"unexpected answer to {method}: {answer!r}")
        result: dict[str, Any] = answer["result"]
        return result

    def stderr(self) -> str:
        """What the process logged so far."""
        self._stderr.seek(0)
        return self._stderr.read().decode("utf-8", "replace")[-4000:]

    def tree(self) -> list[psutil.Process]:
        """The process and its children (a one-file binary runs its program in a child)."""
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.Error:
            return []

    def rss(self) -> int:
        """Resident bytes of the process tree (0 once gone)."""
        total = 0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                total += proc.memory_info().rss
        return total

    def cpu_seconds(self) -> float:
        """User + system CPU seconds of the process tree so far."""
        total = 0.0
        for proc in self.tree():
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    def thread_counters(self) -> dict[int, tuple[int, int]]:
        """Per live thread id: (nanoseconds on CPU, voluntary context switches).

        From /proc/PID/task/*/schedstat and .../status: far finer than psutil's clock ticks
        (10 ms). A voluntary switch is a thread going to sleep: about one per wake-up from a
        wait. Linux only (empty elsewhere). See `thread_delta` for a window.
        """
        counters: dict[int, tuple[int, int]] = {}
        for proc in self.tree():
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

    def stop(self, timeout: float = 30.0) -> int:
        """Close stdin and wait for the exit; kill if it hangs."""
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout)
        self._reader.join(timeout)
        self._stderr.close()
        return code

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.stop()


def thread_delta(
    before: dict[int, tuple[int, int]], after: dict[int, tuple[int, int]]
) -> dict[str, Any]:
    """CPU seconds and wake-ups between two `Sidecar.thread_counters` readings.

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


def pipelined(sidecar: Sidecar, lines: Sequence[bytes], batch: int) -> tuple[float, float]:
    """Write every line from a writer thread while this thread reads every answer.

    Returns (seconds from the first write to the last answer, the last queue depth). Fails if
    an answer is an error or accepted fewer events than were sent.
    """
    blob = b"".join(lines)
    failure: list[BaseException] = []

    def writer() -> None:
        try:
            sidecar.write(blob)
        except BaseException as exc:  # reported by the reader
            failure.append(exc)

    thread = threading.Thread(target=writer, daemon=True)
    started = time.monotonic()
    thread.start()
    queued = 0.0
    last = started
    for _ in lines:
        last, line = sidecar.read()
        answer = json.loads(line)
        result = answer.get("result")
        if not result or result.get("accepted") != batch:
            raise RuntimeError(f"bad answer: {line[:300]!r}")
        queued = result["queued"]
    thread.join()
    if failure:
        raise failure[0]
    return last - started, queued


def wait_ready(sidecar: Sidecar) -> float:
    """Send `ping` and return seconds from spawn to its answer."""
    sidecar.call("ping")
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

    def __init__(self, sidecar: Sidecar, interval: float = 0.02) -> None:
        self._sidecar = sidecar
        self._interval = interval
        self._stop = threading.Event()
        self.peak = 0
        self.samples = 0
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._sidecar.rss())
            self.samples += 1
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def fill_backlog(data_dir: Path, count: int, *, batch: int = 50, seed: int = 7) -> dict[str, Any]:
    """Queue `count` events in a sidecar pointed at no server, then stop it cleanly.

    Returns the fill's own rates, in tenths of the fill: how ingest holds up as the queue deepens.
    """
    if count % batch:
        raise ValueError("the backlog must be a whole number of batches")
    events = make_events(count, seed=seed)
    lines = request_lines(events, batch)
    tenth = max(1, len(lines) // 10)
    rates = []
    with Sidecar(data_dir, OFFLINE_HOST, "--max-queue", HUGE_QUEUE) as sidecar:
        wait_ready(sidecar)
        for start in range(0, len(lines), tenth):
            chunk = lines[start : start + tenth]
            seconds, _ = pipelined(sidecar, chunk, batch)
            rates.append(len(chunk) * batch / seconds)
        depth = int(sidecar.call("ph_status")["queued"])
        code = sidecar.stop()
    if depth != count or code != 0:
        raise RuntimeError(f"backlog fill: queued {depth} of {count}, exit {code}")
    return {"events": count, "rates_by_tenth": [round(r) for r in rates]}


def log(message: str) -> None:
    """Progress on stderr, so stdout stays the table."""
    print(f"[{time.strftime('%H:%M:%S')} load {load_average():.2f}] {message}",
          file=sys.stderr, flush=True)


@dataclass(frozen=True)
class Plan:
    """How much of everything to run: `full()` fits about 10 minutes here, `quick()` under 3."""

    quick: bool
    ingest_reps: int
    ingest_lines: dict[int, int]  # batch size -> request lines per run
    sdk_capture_events: int
    backlog: int
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
            quick=False, ingest_reps=5, ingest_lines={1: 2000, 10: 800, 50: 400},
            sdk_capture_events=10_000, backlog=100_000, drain_reps=3, drain_budget_s=200.0,
            big_batch=500, latency_sends=200, start_runs=10, start_backlog=5_000,
            start_backlog_reps=3, window_s=60.0, sdk_latency_sends=10, capacity_requests=2000,
        )

    @classmethod
    def quick_plan(cls) -> Plan:
        """A smoke run: fewer and smaller runs, a 20,000 backlog, 10 s footprint windows."""
        return cls(
            quick=True, ingest_reps=3, ingest_lines={1: 1000, 10: 400, 50: 200},
            sdk_capture_events=5_000, backlog=20_000, drain_reps=2, drain_budget_s=45.0,
            big_batch=500, latency_sends=100, start_runs=3, start_backlog=5_000,
            start_backlog_reps=1, window_s=10.0, sdk_latency_sends=2, capacity_requests=500,
        )
