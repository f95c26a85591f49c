"""Figure 5, footprint: resident memory idle, and CPU used while there is nothing to do.

Two sidecars side by side for one window (60 s; 10 s with --quick):
- idle: pointed at the fast server, empty queue;
- offline: pointed at no server (connections refused at once), 100 events queued, so the sender
  retries on its backoff (capped at 30 s by default) and should do nothing in between.
Each one's CPU seconds (user + system, psutil) and voluntary context switches (about one per
wake-up of a thread from a wait) are read at the start and the end of the window. Peak memory
while draining comes from the drain figure.

The PostHog SDK's idle latency is measured in the same window (it is mostly waiting): one event
at a time, default `flush_interval`, spawn to arrival at the server.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from typing import Any

from common import (
    BENCH,
    HUGE_QUEUE,
    Plan,
    cpu_seconds,
    log,
    percentile,
    request_lines,
    rss,
    spawn,
    thread_counters,
    thread_delta,
    wait_ready,
    workdir,
)
from fastserver import CaptureCounter

from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import OFFLINE_HOST, pageviews

# Longer than trio's worker-thread cache keeps an idle thread (10 s): the window then sees the
# steady idle state, not the last worker thread exiting.
SETTLE_S = 11.0


def sdk_latency(server: CaptureCounter, sends: int, out: dict[str, Any]) -> None:
    """One event at a time through the SDK at its defaults; arrival minus capture time."""
    worker = subprocess.Popen(
        [sys.executable, str(BENCH / "sdk_worker.py"), "latency", "--url", server.url,
         "--events", str(sends)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
    )
    assert worker.stdin is not None
    assert worker.stdout is not None
    samples = []
    try:
        base = server.reset()["events"]
        for index in range(sends):
            sent = json.loads(worker.stdout.readline())
            stats = server.wait(base + index + 1, 30)
            if stats["reached"]:
                samples.append(stats["at"] - sent["sent_at"])
            worker.stdin.write("next\n")
            worker.stdin.flush()
        result = json.loads(worker.stdout.readline())
        out["sdk_rss"] = result.get("rss")
    except (ValueError, OSError) as exc:
        out["sdk_latency_error"] = repr(exc)
    finally:
        worker.stdin.close()
        worker.wait(30)
    out["sdk_latency"] = {
        "n": len(samples),
        "p50_ms": percentile(samples, 50) * 1e3,
        "max_ms": max(samples) * 1e3 if samples else float("nan"),
        "samples_ms": [round(s * 1e3, 1) for s in samples],
        "note": "flush_at=100, flush_interval=5 s (defaults): a lone event waits until the "
        "consumer's 5 s window closes, 0-5 s by design; each send here comes at a random "
        "moment of that window",
    }


def _usage(sidecar: SidecarProcess) -> tuple[float, dict[int, tuple[int, int]]]:
    return cpu_seconds(sidecar), thread_counters(sidecar)


def run(plan: Plan, server: CaptureCounter) -> dict[str, Any]:
    """Both windows at once, and the SDK's latency beside them."""
    figures: dict[str, Any] = {"window_s": plan.window_s}
    with workdir() as folder:
        idle = spawn(folder / "idle", server.url)
        offline = spawn(folder / "offline", OFFLINE_HOST, "--max-queue", HUGE_QUEUE)
        try:
            wait_ready(idle)
            wait_ready(offline)
            for line in request_lines(pageviews(100, seed=5), 50):
                offline.ask(line)
            time.sleep(SETTLE_S)
            sdk_out: dict[str, Any] = {}
            sdk_thread = threading.Thread(
                target=sdk_latency, args=(server, plan.sdk_latency_sends, sdk_out), daemon=True)
            log(f"footprint: {plan.window_s:.0f} s window")
            start = {"idle": _usage(idle), "offline": _usage(offline)}
            started = time.monotonic()
            sdk_thread.start()
            time.sleep(plan.window_s)
            end = {"idle": _usage(idle), "offline": _usage(offline)}
            seconds = time.monotonic() - started
            figures["idle_rss"] = rss(idle)
            figures["offline_rss"] = rss(offline)
            figures["offline_queued"] = offline.result("ph_status")["queued"]
            for name in ("idle", "offline"):
                ticks = end[name][0] - start[name][0]
                fine = thread_delta(start[name][1], end[name][1])
                # schedstat (ns) unless a thread exited in the window (its time would be
                # lost); then psutil's clock ticks, which keep it
                cpu = ticks if fine["exited"] else fine["cpu_s"]
                figures[name] = {
                    "cpu_ms": cpu * 1e3,
                    "cpu_ms_per_min": cpu * 1e3 * 60 / seconds,
                    "cpu_ms_ticks": ticks * 1e3,
                    "cpu_ms_schedstat": fine["cpu_s"] * 1e3,
                    "wakeups": fine["wakeups"],
                    "wakeups_per_s": fine["wakeups"] / seconds,
                    "threads": fine["threads"],
                    "threads_exited": fine["exited"],
                    "threads_started": fine["started"],
                }
            sdk_thread.join(timeout=max(60.0, plan.sdk_latency_sends * 6.0))
            figures.update(sdk_out)
        finally:
            idle.reap()
            offline.reap()
    return figures
