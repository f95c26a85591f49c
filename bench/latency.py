"""Figure 3, latency: from writing a one-event `ph_send_batch` line to the event at the server.

The sidecar is online (pointed at the fast server) and idle: each send waits until its event has
arrived and its answer is read, then a short random pause, so every send finds the sender asleep.
Arrival is stamped by the server when the request body is complete (CLOCK_MONOTONIC, the same
clock as here). The time to the answer on stdout (what the app waits for) is kept too.

References: the floor, the same event sent by this process itself with `http.client` over a
keep-alive connection (JSON-encode, gzip, POST, read the answer): what the loopback hop and the
server cost alone. And the PostHog SDK's (measured during the footprint window, see
`footprint.py`): it batches up to `flush_at` events or `flush_interval` (5 s by default), so an
isolated event waits up to 5 s by design.
"""

from __future__ import annotations

import datetime as dt
import gzip
import http.client
import json
import random
import time
from typing import Any

from common import Plan, percentile, spawn, wait_ready, workdir
from fastserver import CaptureCounter

from sidecar_dev.harness import TEST_KEY, pageviews

PAUSE_S = (0.005, 0.02)


def _summary(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50_ms": percentile(samples, 50) * 1e3,
        "p99_ms": percentile(samples, 99) * 1e3,
        "max_ms": max(samples) * 1e3 if samples else float("nan"),
    }


def sidecar_latency(server: CaptureCounter, sends: int) -> dict[str, Any]:
    """`sends` single-event sends, each after the last one arrived."""
    events = pageviews(sends + 5, seed=31)
    rng = random.Random(3)
    arrivals: list[float] = []
    answers: list[float] = []
    with workdir() as folder, spawn(folder, server.url) as sidecar:
        wait_ready(sidecar)
        base = server.reset()["events"]
        for index, event in enumerate(events):
            line = json.dumps({"jsonrpc": "2.0", "id": index, "method": "ph_send_batch",
                               "params": {"batch": [event]}}).encode() + b"\n"
            time.sleep(rng.uniform(*PAUSE_S))
            sent = time.monotonic()
            sidecar.send_raw(line)
            answered, _ = sidecar.read_timed_line()
            stats = server.wait(base + index + 1, 30)
            if not stats["reached"]:
                raise RuntimeError(f"event {index} never arrived: {stats}")
            if index >= 5:  # the first few warm up the connection and the caches
                arrivals.append(stats["at"] - sent)
                answers.append(answered - sent)
    return {"arrival": _summary(arrivals), "answer": _summary(answers)}


def floor_latency(server: CaptureCounter, sends: int) -> dict[str, Any]:
    """The same events POSTed by this process directly: encode, gzip, send, read the answer."""
    events = pageviews(sends + 5, seed=31)
    rng = random.Random(3)
    samples: list[float] = []
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        base = server.reset()["events"]
        for index, event in enumerate(events):
            time.sleep(rng.uniform(*PAUSE_S))
            sent = time.monotonic()
            sent_at = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
            text = json.dumps({"api_key": TEST_KEY, "sent_at": sent_at, "batch": [event]},
                              separators=(",", ":"))
            body = gzip.compress(text.encode(), 6)
            connection.request("POST", "/batch/", body, {
                "Content-Type": "application/json", "Content-Encoding": "gzip"})
            connection.getresponse().read()
            stats = server.wait(base + index + 1, 30)
            if index >= 5:
                samples.append(stats["at"] - sent)
    finally:
        connection.close()
    return _summary(samples)


def run(plan: Plan, server: CaptureCounter) -> dict[str, Any]:
    """Sidecar and floor, in that order, over the same events."""
    figures = {"sidecar": sidecar_latency(server, plan.latency_sends)}
    figures["floor"] = floor_latency(server, plan.latency_sends)
    return figures
