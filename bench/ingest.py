"""Figure 1, ingest: events/s acknowledged through `ph_send_batch` over the real process's stdin.

Per batch size (1, 10, 50 events per line): one sidecar pointed at no server (so its sender does
not compete), `--max-queue` far above what is sent; requests are pipelined (a writer thread writes
every line, this thread reads every answer), and the rate is events / (first write -> last
answer). The queue is emptied between runs (opt out, which purges, then back in), so every run
starts from the same depth.

References, run alternately with the sidecar's runs so load from elsewhere falls on both:
(a) the raw ceiling: the same lines, `json.loads` each, `json.dumps` each event, and the rows
    inserted with plain sqlite3 (WAL, synchronous=NORMAL, the sidecar's table) in one
    transaction per line, in this process: no pipes, no validation, no JSON-RPC;
(b) the PostHog SDK's `capture()` rate on the same events (see `sdk_worker.py`): it only
    validates and puts the event on an in-memory queue, nothing reaches the disk.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    HUGE_QUEUE,
    Plan,
    cpu_seconds,
    load_average,
    log,
    mean_event_bytes,
    median,
    pipelined,
    request_lines,
    spawn,
    wait_ready,
    workdir,
)

from sidecar.queue.store import SCHEMA
from sidecar_dev.harness import OFFLINE_HOST, TEST_KEY, pageviews


class RawQueue:
    """The ceiling: the sidecar's table written with nothing but sqlite3 and json."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute("PRAGMA synchronous = NORMAL")
        for statement in SCHEMA.split(";"):  # the sidecar's own tables, so the ceiling is fair
            if statement.strip():
                self.db.execute(statement)

    def ingest(self, lines: Sequence[bytes]) -> float:
        """Store every line's events, one transaction per line; returns the seconds taken."""
        db = self.db
        dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
        started = time.monotonic()
        for line in lines:
            batch = json.loads(line)["params"]["batch"]
            now = time.time()
            rows = [(TEST_KEY, dumps(event), now) for event in batch]
            db.execute("BEGIN IMMEDIATE")
            db.executemany(
                "INSERT INTO ph_event_queue (api_key, body, created_at) VALUES (?, ?, ?)", rows
            )
            db.execute("COMMIT")
        return time.monotonic() - started

    def purge(self) -> None:
        """Empty the table."""
        self.db.execute("DELETE FROM ph_event_queue")

    def close(self) -> None:
        """Close the database."""
        self.db.close()


def sdk_capture(url: str, events: int) -> dict[str, Any]:
    """One run of the SDK's `capture()` in a fresh process (it also sends, as in an app)."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "sdk_worker.py"), "capture", "--url", url,
         "--events", str(events)],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sdk_worker capture failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def run(plan: Plan, server_url: str) -> dict[str, Any]:
    """All ingest figures: per batch size, the sidecar's and the ceiling's rates; the SDK's."""
    figures: dict[str, Any] = {"batches": {}, "sdk": {}}
    sdk_rates: list[float] = []
    sdk_runs: list[dict[str, Any]] = []
    for batch, line_count in plan.ingest_lines.items():
        events = pageviews(line_count * batch, seed=batch)
        lines = request_lines(events, batch)
        count = len(events)
        sidecar_rates: list[float] = []
        cpu_us: list[float] = []
        ceiling_rates: list[float] = []
        loads: list[float] = []
        with workdir() as folder:
            sidecar = spawn(folder / "sidecar", OFFLINE_HOST, "--max-queue", HUGE_QUEUE)
            ceiling = RawQueue(folder / "raw.db")
            try:
                wait_ready(sidecar)
                warm = lines[: max(1, min(len(lines) // 5, 100))]
                pipelined(sidecar, warm, batch)
                ceiling.ingest(warm)
                for rep in range(plan.ingest_reps):
                    loads.append(load_average())
                    sidecar.result("ph_set_opt_out", {"opt_out": True})
                    sidecar.result("ph_set_opt_out", {"opt_out": False})
                    cpu_before = cpu_seconds(sidecar)
                    seconds, queued = pipelined(sidecar, lines, batch)
                    cpu = cpu_seconds(sidecar) - cpu_before
                    if queued != count:
                        raise RuntimeError(f"queue holds {queued} after sending {count}")
                    sidecar_rates.append(count / seconds)
                    cpu_us.append(cpu / count * 1e6)
                    ceiling.purge()
                    ceiling_rates.append(count / ceiling.ingest(lines))
                    if batch == max(plan.ingest_lines):
                        sdk = sdk_capture(server_url, plan.sdk_capture_events)
                        sdk_runs.append(sdk)
                        sdk_rates.append(sdk["capture_rate"])
                    log(f"ingest batch {batch} run {rep + 1}: sidecar {sidecar_rates[-1]:,.0f}/s"
                        f" ({cpu_us[-1]:.1f} CPU us/event), ceiling {ceiling_rates[-1]:,.0f}/s"
                        + (f", SDK capture() {sdk_rates[-1]:,.0f}/s"
                           if batch == max(plan.ingest_lines) else ""))
            finally:
                ceiling.close()
                sidecar.reap()
        figures["batches"][str(batch)] = {
            "events_per_run": count,
            "runs": plan.ingest_reps,
            "sidecar_eps": median(sidecar_rates),
            "sidecar_eps_runs": [round(r) for r in sidecar_rates],
            "sidecar_cpu_us_per_event": median(cpu_us),
            "ceiling_eps": median(ceiling_rates),
            "ceiling_eps_runs": [round(r) for r in ceiling_rates],
            "load_average": loads,
        }
    figures["event_bytes"] = round(mean_event_bytes(pageviews(1000)), 1)
    figures["sdk"] = {
        "capture_eps": median(sdk_rates),
        "capture_eps_runs": [round(r) for r in sdk_rates],
        "events_per_run": plan.sdk_capture_events,
        "version": sdk_runs[0]["sdk_version"] if sdk_runs else None,
        "note": "capture() validates the event and puts it on an in-memory queue.Queue; "
        "nothing is on disk when it returns (lost if the app exits or crashes), and a "
        "consumer thread in the same process sends it later (running during this measure)",
    }
    return figures
