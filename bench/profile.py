"""Where the sidecar's time goes, for ingest and drain: py-spy on the real process, summarised.

    .venv/bin/python bench/profile.py [--events 40000] [--rate 200] [--gil] [--out DIR]

Ingest: a sidecar pointed at no server gets `--events` events in pipelined batches of 50.
Drain: a sidecar started on that backlog delivers it to the fast loopback server.
py-spy (`py-spy record -f raw --threads`) samples each whole run; sampling pauses the process,
so the rates printed here are below the suite's. For each run and each thread it prints the
share of samples by "where in the sidecar" (the deepest frame in sidecar/, with the library
the sample ended in) and by leaf function (self time). The raw files stay in --out for
flamegraphs (e.g. `inferno-flamegraph`), the numbers are the summary.
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    HUGE_QUEUE,
    ROOT,
    load_average,
    pipelined,
    request_lines,
    spawn,
    wait_ready,
    workdir,
)
from fastserver import CaptureCounter

from sidecar_dev.harness import OFFLINE_HOST, pageviews

# Leaves where a thread waits rather than works (py-spy's idle filter misses some of them):
# the worker thread parked for its next job, trio's epoll (a zero-timeout poll is work, but
# the two cannot be told apart here).
WAITING = ("WorkerThread._work", "EpollIOManager.get_events", "wait_task_rescheduled")
FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def py_spy() -> str:
    """The py-spy next to this interpreter, or on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    found = str(beside) if beside.exists() else shutil.which("py-spy")
    if not found:
        raise SystemExit("py-spy not found: pip install py-spy")
    return found


class Recording:
    """py-spy attached to a pid until `stop`."""

    def __init__(self, pid: int, output: Path, rate: int, *, gil: bool = False) -> None:
        self.output = output
        self.process = subprocess.Popen(
            [py_spy(), "record", "-r", str(rate), "-f", "raw", "--threads", "-p", str(pid),
             "-o", str(output), *(["--gil"] if gil else [])],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        time.sleep(0.5)  # attach before the work starts

    def stop(self) -> None:
        """Stop sampling and let py-spy write its file."""
        self.process.send_signal(signal.SIGINT)
        _, err = self.process.communicate(timeout=60)
        if not self.output.exists():
            raise RuntimeError(f"py-spy wrote nothing: {err.decode()[-1000:]}")


def _where(frames: list[str]) -> tuple[str, str]:
    """(deepest sidecar/ frame, the library or area the sample ended in)."""
    ours = "-"
    for frame in reversed(frames):
        match = FRAME.match(frame)
        if match and match["file"].startswith("sidecar/"):
            ours = f"{match['file']}:{match['func']}"
            break
    leaf = FRAME.match(frames[-1])
    if leaf is None:
        return ours, frames[-1]
    file = leaf["file"]
    area = file.split("/")[0] if "/" in file else file.removesuffix(".py")
    if file.startswith("sidecar/"):
        area = "(sidecar code itself)"
    return ours, area


def _components(frames: list[str]) -> set[str]:
    """The sidecar modules and the libraries a stack passes through.

    Frames above the first sidecar/ frame past the entry point (trio's scheduler, the thread
    cache) sit under every sample, so they are left out when such a frame exists.
    """
    found = set()
    start = 0
    for index, frame in enumerate(frames):
        match = FRAME.match(frame)
        if match and match["file"].startswith("sidecar/") and match["file"] not in (
            "sidecar/__main__.py", "sidecar/process/cli.py"
        ):
            start = index
            break
    for frame in frames[start:]:
        match = FRAME.match(frame)
        if match is None:
            continue
        file = match["file"]
        if file.startswith("sidecar/"):
            if file not in ("sidecar/__main__.py", "sidecar/process/cli.py"):
                found.add(file)
        elif "/" in file and not file.startswith("<"):
            found.add(file.split("/")[0])
        elif file.endswith(".py") and file not in ("threading.py",):
            found.add(file.removesuffix(".py"))
    return found


def summarise(path: Path, top: int = 14) -> str:
    """Per thread: shares of samples by sidecar frame + leaf area, and by leaf function."""
    by_thread: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(
        collections.Counter)
    leaves: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
    inclusive: dict[str, collections.Counter[str]] = collections.defaultdict(
        collections.Counter)
    text = path.read_text()
    # "thread (TID): NAME;frame;frame COUNT": the main thread is the one ever named MainThread
    # (before the name is set, py-spy shows the bare tid); every other one is a worker.
    main_tids = set(re.findall(r"^thread \((\w+)\): MainThread;", text, re.MULTILINE))
    for line in text.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack:
            continue
        count = int(count_text)
        head, *frames = stack.split(";")
        tid = re.match(r"thread \((\w+)\)", head)
        thread = "MainThread" if tid and tid[1] in main_tids else "worker threads"
        if not frames:
            continue
        inclusive[thread].update(_components(frames))
        leaf = FRAME.match(frames[-1])
        if leaf and leaf["func"] in WAITING:
            by_thread[thread][("(waiting)", leaf["func"])] += count
        else:
            by_thread[thread][_where(frames)] += count
        leaves[thread][f"{leaf['func']} ({leaf['file']})" if leaf else frames[-1]] += count
    total = sum(sum(c.values()) for c in by_thread.values())
    lines = [f"{total} samples"]
    for thread, counter in sorted(by_thread.items(), key=lambda kv: -sum(kv[1].values())):
        samples = sum(counter.values())
        lines.append(f"\n  {thread}: {samples} samples ({samples / total:.0%} of all)")
        lines.append("    by deepest sidecar frame -> where the sample ended:")
        for (ours, area), count in counter.most_common(top):
            lines.append(f"    {count / samples:6.1%}  {ours}  ->  {area}")
        lines.append("    inclusive, by module of sidecar/ or library (a sample counts once for "
                     "each it passes through):")
        shown = [(name, n) for name, n in inclusive[thread].most_common() if n / samples >= 0.02]
        for name, n in shown[:top]:
            lines.append(f"    {n / samples:6.1%}  {name}")
        lines.append("    by leaf function (self time):")
        for function, count in leaves[thread].most_common(top // 2):
            lines.append(f"    {count / samples:6.1%}  {function}")
    return "\n".join(lines)


def main() -> int:
    """Profile an ingest run and a drain run; print the summaries."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40_000)
    parser.add_argument("--rate", type=int, default=200, help="samples per second")
    parser.add_argument("--batch", type=int, default=50, help="events per ph_send_batch line")
    parser.add_argument("--out", default="/tmp/tsc-profile")
    parser.add_argument("--gil", action="store_true",
                        help="only samples holding the GIL: where the Python CPU time goes "
                        "(sqlite and zlib work done without the GIL drops out)")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    count = args.events - args.events % args.batch
    lines = request_lines(pageviews(count, seed=11), args.batch)
    print(f"load average {load_average():.2f}; sidecar tree at {ROOT}")
    with workdir() as folder, CaptureCounter() as server:
        data = folder / "data"
        sidecar = spawn(data, OFFLINE_HOST, "--max-queue", HUGE_QUEUE)
        wait_ready(sidecar)
        recording = Recording(sidecar.pid, out / "ingest.txt", args.rate, gil=args.gil)
        seconds, _ = pipelined(sidecar, lines, args.batch)
        recording.stop()
        sidecar.reap()
        print(f"\n== ingest: {count:,} events in batches of {args.batch}, "
              f"{count / seconds:,.0f} events/s "
              f"under py-spy ({out / 'ingest.txt'})")
        print(summarise(out / "ingest.txt"))

        server.reset()
        sidecar = spawn(data, server.url, "--max-queue", HUGE_QUEUE)
        wait_ready(sidecar)  # leaves the imports out; the first requests go out meanwhile
        recording = Recording(sidecar.pid, out / "drain.txt", args.rate, gil=args.gil)
        stats = server.wait(count, 900)
        recording.stop()
        sidecar.reap()
        if not stats["reached"]:
            raise SystemExit(f"drain did not finish: {stats}")
        rate = (stats["events"] - stats["first_events"]) / (stats["at"] - stats["first_at"])
        print(f"\n== drain: {count:,} events, batch 50, {rate:,.0f} events/s under py-spy "
              f"({out / 'drain.txt'})")
        print(summarise(out / "drain.txt"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
