"""Figure 1, ingest: events/s acknowledged through `ph_send_batch` over the real process's stdin.

Per event profile (`profiles.py`: the small page views, and events as posthog-js makes them), per
batch size (1, 10, 50 events per line) and per durability level (`--durability full`, the
default: every answer waits for its commit's sync; `normal`: syncs at checkpoints only): one
sidecar pointed at no server (so its sender does not compete), `--max-queue` far above what is
sent; requests are pipelined (a writer thread writes every line, this thread reads every
answer), and the rate is events / (first write -> last answer). The queue is emptied between
runs (opt out, which purges, then back in), so every run starts from the same depth. A build
without `--durability` is measured at its own level, and the comparison is skipped with a note.

Syncs per call: after the timed runs, one more run per level under strace (see
`common.SyncTrace`), counting the sidecar's fsync and fdatasync calls; skipped when strace is
missing. Grouped commits show as fewer than one sync per call at `full`.

References, run alternately with the sidecar's runs so load from elsewhere falls on both:
(a) the raw ceiling: the same lines, `orjson.loads` each, `orjson.dumps` each event (the
    sidecar's JSON library; the standard library's costs more than the store on 2 KB events,
    which would make it no ceiling), and the rows inserted with plain sqlite3 (WAL, the
    sidecar's table) in one transaction per line, in this process: no pipes, no validation, no
    JSON-RPC; at `synchronous=NORMAL` and at `FULL` (one sync per line: what a store without
    group commit pays);
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

import orjson
from common import (
    BENCH,
    HUGE_QUEUE,
    Plan,
    SyncTrace,
    cpu_seconds,
    durability_args,
    durability_levels,
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
from profiles import api_key as profile_api_key
from profiles import events as profile_events

from sidecar.queue.store import SCHEMA
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import OFFLINE_HOST, TEST_KEY

SYNC_LEVELS = ("NORMAL", "FULL")


class RawQueue:
    """The ceiling: the sidecar's table written with nothing but sqlite3 and orjson."""

    def __init__(self, path: Path, synchronous: str = "NORMAL") -> None:
        if synchronous not in SYNC_LEVELS:
            raise ValueError(f"synchronous must be one of {SYNC_LEVELS}")
        self.db = sqlite3.connect(path, isolation_level=None)
        self.db.execute("PRAGMA journal_mode = WAL")
        self.db.execute(f"PRAGMA synchronous = {synchronous}")
        for statement in SCHEMA.split(";"):  # the sidecar's own tables, so the ceiling is fair
            if statement.strip():
                self.db.execute(statement)

    def ingest(self, lines: Sequence[bytes]) -> float:
        """Store every line's events, one transaction per line; returns the seconds taken."""
        db = self.db
        dumps = orjson.dumps
        started = time.monotonic()
        for line in lines:
            batch = orjson.loads(line)["params"]["batch"]
            now = time.time()
            rows = [(TEST_KEY, dumps(event).decode(), now) for event in batch]
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


def sdk_capture(url: str, events: int, profile: str = "small") -> dict[str, Any]:
    """One run of the SDK's `capture()` in a fresh process (it also sends, as in an app)."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "sdk_worker.py"), "capture", "--url", url,
         "--events", str(events), "--profile", profile],
        capture_output=True, text=True, timeout=600, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"sdk_worker capture failed: {out.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(out.stdout.splitlines()[-1])
    return result


def _timed_run(sidecar: SidecarProcess, lines: Sequence[bytes], batch: int,
               count: int) -> tuple[float, float]:
    """One pipelined run from an empty queue: (events/s, sidecar CPU us per event)."""
    sidecar.result("ph_set_opt_out", {"opt_out": True})
    sidecar.result("ph_set_opt_out", {"opt_out": False})
    cpu_before = cpu_seconds(sidecar)
    seconds, queued = pipelined(sidecar, lines, batch)
    cpu = cpu_seconds(sidecar) - cpu_before
    if queued != count:
        raise RuntimeError(f"queue holds {queued} after sending {count}")
    return count / seconds, cpu / count * 1e6


def syncs_per_call(folder: Path, level: str, lines: Sequence[bytes], batch: int) -> dict[str, Any]:
    """One run of `lines` by a sidecar under strace: its fsync + fdatasync calls per line."""
    trace = SyncTrace(folder / f"strace-{level}.log")
    with spawn(folder / f"traced-{level}", OFFLINE_HOST, "--max-queue", HUGE_QUEUE,
               *durability_args(level), command=trace.command) as sidecar:
        wait_ready(sidecar)
        pipelined(sidecar, lines[: max(1, min(len(lines) // 5, 100))], batch)  # warm, as timed
        before = trace.count()
        seconds, _ = pipelined(sidecar, lines, batch)
        syncs = trace.count() - before
        sidecar.stop()
    return {"syncs": syncs, "calls": len(lines), "syncs_per_call": syncs / len(lines),
            "eps_under_strace": len(lines) * batch / seconds}


def _batch_runs(plan: Plan, server_url: str, profile: str, batch: int, *, line_count: int,
                levels: list[str], sdk: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Every level's runs and both ceilings' at one batch size, in turns; the SDK's if `sdk`."""
    events = profile_events(profile, line_count * batch, seed=batch)
    lines = request_lines(events, batch, api_key=profile_api_key(profile))
    count = len(events)
    del events
    rates: dict[str, list[float]] = {level: [] for level in levels}
    cpu_us: dict[str, list[float]] = {level: [] for level in levels}
    ceiling_rates: dict[str, list[float]] = {sync: [] for sync in SYNC_LEVELS}
    sdk_runs: list[dict[str, Any]] = []
    loads: list[float] = []
    syncs: dict[str, Any] = {}
    with workdir() as folder:
        sidecars = {level: spawn(folder / f"sidecar-{level}", OFFLINE_HOST, "--max-queue",
                                 HUGE_QUEUE, *durability_args(level)) for level in levels}
        ceilings = {sync: RawQueue(folder / f"raw-{sync}.db", sync) for sync in SYNC_LEVELS}
        try:
            warm = lines[: max(1, min(len(lines) // 5, 100))]
            for sidecar in sidecars.values():
                wait_ready(sidecar)
                pipelined(sidecar, warm, batch)
            for ceiling in ceilings.values():
                ceiling.ingest(warm)
            for rep in range(plan.ingest_reps):
                loads.append(load_average())
                # Levels take turns going first, so neither always runs on a warmer machine.
                order = list(sidecars.items())
                for level, sidecar in order if rep % 2 == 0 else reversed(order):
                    rate, cpu = _timed_run(sidecar, lines, batch, count)
                    rates[level].append(rate)
                    cpu_us[level].append(cpu)
                for sync, ceiling in ceilings.items():
                    ceiling.purge()
                    ceiling_rates[sync].append(count / ceiling.ingest(lines))
                if sdk:
                    sdk_runs.append(sdk_capture(server_url, plan.sdk_capture_events, profile))
                log(f"ingest {profile} batch {batch} run {rep + 1}: "
                    + ", ".join(f"{level} {rates[level][-1]:,.0f}/s "
                                f"({cpu_us[level][-1]:.1f} CPU us/event)" for level in levels)
                    + ", ceiling " + ", ".join(f"{sync} {ceiling_rates[sync][-1]:,.0f}/s"
                                               for sync in SYNC_LEVELS)
                    + (f", SDK capture() {sdk_runs[-1]['capture_rate']:,.0f}/s" if sdk else ""))
        finally:
            for ceiling in ceilings.values():
                ceiling.close()
            for sidecar in sidecars.values():
                sidecar.reap()
        if SyncTrace.available():
            for level in levels:
                syncs[level] = syncs_per_call(folder, level, lines, batch)
            log(f"ingest {profile} batch {batch} syncs per call: " + ", ".join(
                f"{level} {s['syncs_per_call']:.3f}" for level, s in syncs.items()))
    figures: dict[str, Any] = {
        "events_per_run": count,
        "runs": plan.ingest_reps,
        "levels": {
            level: {
                "eps": median(rates[level]),
                "eps_runs": [round(r) for r in rates[level]],
                "cpu_us_per_event": median(cpu_us[level]),
                "syncs": syncs.get(level),
            }
            for level in levels
        },
        "ceiling": {
            sync.lower(): {"eps": median(ceiling_rates[sync]),
                           "eps_runs": [round(r) for r in ceiling_rates[sync]]}
            for sync in SYNC_LEVELS
        },
        "load_average": loads,
    }
    return figures, sdk_runs


def run(plan: Plan, server_url: str) -> dict[str, Any]:
    """All ingest figures: per profile, batch size and level, the sidecar's and the ceilings'
    rates; per profile, the SDK's `capture()`."""
    levels, levels_note = durability_levels()
    figures: dict[str, Any] = {
        "levels": levels,
        "levels_note": levels_note,
        "syncs_note": None if SyncTrace.available() else
        "strace is not installed: syncs per call not counted",
        "profiles": {},
    }
    for profile, batches in plan.ingest_lines.items():
        sdk_runs: list[dict[str, Any]] = []
        measured: dict[str, Any] = {}
        for batch, line_count in batches.items():
            with_sdk = batch == max(batches)
            measured[str(batch)], runs = _batch_runs(
                plan, server_url, profile, batch, line_count=line_count, levels=levels,
                sdk=with_sdk)
            sdk_runs += runs
        sdk_rates = [r["capture_rate"] for r in sdk_runs]
        figures["profiles"][profile] = {
            "event_bytes": round(mean_event_bytes(profile_events(profile, 1000)), 1),
            "batches": measured,
            "sdk": {
                "capture_eps": median(sdk_rates),
                "capture_eps_runs": [round(r) for r in sdk_rates],
                "events_per_run": plan.sdk_capture_events,
                "batch": max(batches),
                "version": sdk_runs[0]["sdk_version"] if sdk_runs else None,
            },
        }
    figures["sdk_note"] = (
        "capture() validates the event and puts it on an in-memory queue.Queue; nothing is on "
        "disk when it returns (lost if the app exits or crashes), and a consumer thread in the "
        "same process sends it later (running during this measure)")
    return figures
