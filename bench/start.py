"""Figure 4, start: spawn -> first `ping` answer (bench/startup.py's measure, reused as it is),
and spawn -> a 5,000-event backlog found at start all delivered to the fast server.

The backlog runs use `python -m sidecar` and, when dist/ holds one, the one-file binary (which
may have been built from older code than the tree: its date is reported). Reference for the
backlog: the PostHog SDK in a fresh process (import, 5,000 `capture()` calls, `flush()`), spawn to
the last event at the server; the SDK keeps nothing across starts, so it has no backlog of its own
to find, and this is the nearest like-for-like job.
"""

from __future__ import annotations

import datetime as dt
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    HUGE_QUEUE,
    Plan,
    copy_db,
    fill_backlog,
    log,
    median,
    spawn,
    wait_ready,
    workdir,
)
from fastserver import CaptureCounter

sys.path.insert(0, str(BENCH))
import startup

from sidecar_dev.driver import sidecar_command


def spawn_to_ping(runs: int) -> dict[str, Any]:
    """startup.measure over python -m and every frozen build in dist/."""
    commands = [("python -m sidecar", [sys.executable, "-m", "sidecar"]),
                *startup.frozen_builds()]
    samples = startup.measure([command for _, command in commands], runs)
    result: dict[str, Any] = {}
    for (label, command), runs_of_it in zip(commands, samples, strict=True):
        wall = [w for w, _ in runs_of_it]
        path = Path(command[0])
        built = (dt.datetime.fromtimestamp(path.stat().st_mtime, dt.UTC).isoformat(
            timespec="seconds") if label != "python -m sidecar" and path.exists() else None)
        result[label] = {
            "command": command,
            "runs": len(wall),
            "median_ms": statistics.median(wall) * 1e3,
            "min_ms": min(wall) * 1e3,
            "max_ms": max(wall) * 1e3,
            "cpu_ms": statistics.median(c for _, c in runs_of_it) * 1e3,
            "size": startup.size_of(command),
            "built": built,
        }
    return result


def backlog_at_start(plan: Plan, server: CaptureCounter) -> dict[str, Any]:
    """Spawn -> ping and spawn -> every queued event delivered, per command; then the SDK's."""
    commands = [("python -m sidecar", sidecar_command())]
    commands += [(label, command) for label, command in startup.frozen_builds()
                 if label == "one-file"]
    n = plan.start_backlog
    result: dict[str, Any] = {"events": n}
    with workdir() as folder:
        fill_backlog(folder / "template", n)
        for label, command in commands:
            delivered, ready = [], []
            for rep in range(plan.start_backlog_reps):
                target = folder / f"{label.replace(' ', '_')}-{rep}"
                copy_db(folder / "template", target)
                server.reset()
                with spawn(target, server.url, "--max-queue", HUGE_QUEUE,
                           command=command) as sidecar:
                    ready.append(wait_ready(sidecar))
                    stats = server.wait(n, 300)
                    if not stats["reached"]:
                        raise RuntimeError(f"{label}: backlog not delivered: {stats}")
                    delivered.append(stats["at"] - sidecar.spawned_at)
            result[label] = {"ready_s": median(ready), "delivered_s": median(delivered),
                             "delivered_runs": delivered}
        sdk_times = []
        for _ in range(plan.start_backlog_reps):
            server.reset()
            spawned = time.monotonic()
            worker = subprocess.Popen(
                [sys.executable, str(BENCH / "sdk_worker.py"), "backlog", "--url", server.url,
                 "--events", str(n)], stdout=subprocess.PIPE, text=True)
            stats = server.wait(n, 300)
            out, _ = worker.communicate(timeout=300)
            if not stats["reached"]:
                raise RuntimeError(f"SDK: {stats['events']} of {n} arrived")
            sdk_times.append(stats["at"] - spawned)
            result["sdk_worker"] = json.loads(out.splitlines()[-1])
        result["sdk"] = {"delivered_s": median(sdk_times), "delivered_runs": sdk_times}
    return result


def run(plan: Plan, server: CaptureCounter) -> dict[str, Any]:
    """Both start figures."""
    log("start: spawn -> ping")
    figures: dict[str, Any] = {"spawn_to_ping": spawn_to_ping(plan.start_runs)}
    log("start: backlog at start")
    figures["backlog"] = backlog_at_start(plan, server)
    return figures
