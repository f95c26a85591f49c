"""Figure 2, drain: events/s delivering a queued backlog to the fast loopback server.

The backlog is queued once through `ph_send_batch` by a sidecar pointed at no server, which is then
stopped; each run starts a sidecar on a copy of that database, pointed at the fast server
(`fastserver.py`), and the server's clock times it: rate = (N - events of the first request) /
(time the N-th event arrived - time the first request arrived), so process start is left out
(it has its own figure). The server counts request body bytes too (and all bytes read, headers
included), for the bytes on the wire per event; and the sidecar's resident memory is sampled
throughout for its peak.

Reference, in turns with the sidecar's runs: the PostHog SDK sending the same events to the same
server, every event queued before its consumer thread starts (see `sdk_worker.py`), with and
without `gzip=True`, at `flush_at` = the sidecar's `--batch-size`; the same clock rule applies.

The posthog-js profile (`profiles.py`, ~2.3 KB per event) is drained the same way at batch 50,
beside the SDK with `gzip=True` in every turn and `gzip=False` in the first (for its bytes).

Before anything, the server's own capacity is measured with a client that costs next to nothing
(pre-built gzip bodies over one raw keep-alive socket): it should be far above both rates, so
the figures are the clients', not the server's. Then the stack's own ceiling (`ceiling.py`):
the sidecar's HTTP attempt with no queue behind it, alone and with the one hop per request to
the store's thread, which bounds what any store design can reach.
"""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    HUGE_QUEUE,
    PeakSampler,
    Plan,
    copy_db,
    cpu_seconds,
    fill_backlog,
    load_average,
    log,
    median,
    spawn,
    wait_ready,
    workdir,
)
from fastserver import CaptureCounter, blast, post_request
from profiles import events as profile_events

from sidecar_dev.harness import TEST_KEY, stop_child

TIMEOUT_S = 900.0
BACKLOG_SEED = 7  # the same events in the sidecar's backlog and the SDK's


def server_capacity(
    server: CaptureCounter, requests: int, batches: tuple[int, ...], profile: str = "small"
) -> dict[str, Any]:
    """Events/s the server absorbs from one connection, per batch size, gzip bodies."""
    events = profile_events(profile, max(batches), seed=99)
    capacity: dict[str, Any] = {}
    for batch in batches:
        document = {"api_key": TEST_KEY, "sent_at": "2026-11-26T10:00:00.000Z",
                    "batch": events[:batch]}
        body = gzip.compress(json.dumps(document, separators=(",", ":")).encode(), 6)
        request = post_request(server.port, body)
        count = max(50, requests * 50 // batch)
        server.reset()
        cpu_before = server.cpu_seconds()
        seconds = blast(server.port, request, count)
        cpu = server.cpu_seconds() - cpu_before
        stats = server.stats()
        if stats["events"] != count * batch or stats["mismatches"]:
            raise RuntimeError(f"fast server miscounted: {stats}")
        capacity[str(batch)] = {
            "eps": count * batch / seconds,
            "server_cpu_us_per_event": cpu / (count * batch) * 1e6,
        }
    return capacity


def stack_ceiling(server: CaptureCounter, batch: int, requests: int) -> dict[str, Any]:
    """The most the stack allows (`ceiling.py`, a process of its own): the product's HTTP
    attempt alone, and with the one store-thread hop per request, events/s with no queue."""
    out = subprocess.run(
        [sys.executable, str(BENCH / "ceiling.py"), "--url", server.url, "--batch", str(batch),
         "--requests", str(requests)],
        capture_output=True, text=True, timeout=TIMEOUT_S, check=True,
    )
    figures: dict[str, Any] = json.loads(out.stdout)
    return figures


def _rate(stats: dict[str, Any], expected: int) -> dict[str, Any]:
    if not stats.get("reached"):
        raise RuntimeError(f"only {stats.get('events')} of {expected} events arrived: {stats}")
    span = stats["at"] - stats["first_at"]
    return {
        "eps": (stats["events"] - stats["first_events"]) / span if span > 0 else float("nan"),
        "seconds": span,
        "events": stats["events"],
        "duplicates": stats["events"] - expected,
        "requests": stats["requests"],
        "body_bytes_per_event": stats["body_bytes"] / stats["events"],
        "wire_bytes_per_event": stats["wire_bytes"] / stats["events"],
        "json_bytes_per_event": stats["json_bytes"] / stats["events"],
        "mismatches": stats["mismatches"],
    }


def sidecar_run(
    server: CaptureCounter, template: Path, folder: Path, backlog: int, batch: int
) -> dict[str, Any]:
    """One sidecar delivering the template's backlog; the rate, bytes, peak memory, CPU."""
    copy_db(template, folder)
    server.reset()
    server_cpu = server.cpu_seconds()
    args = ("--batch-size", str(batch), "--max-queue", HUGE_QUEUE)
    with spawn(folder, server.url, *args) as sidecar:
        with PeakSampler(sidecar) as peak:
            ready = wait_ready(sidecar)
            stats = server.wait(backlog, TIMEOUT_S)
            cpu = cpu_seconds(sidecar)
        result = _rate(stats, backlog)
        result.update(
            spawn_to_done_s=stats["at"] - sidecar.spawned_at if stats.get("at") else None,
            ready_s=ready,
            peak_rss=peak.peak,
            rss_samples=peak.samples,
            cpu_s=cpu,
            cpu_us_per_event=cpu / backlog * 1e6,
            server_cpu_s=server.cpu_seconds() - server_cpu,
            load_average=load_average(),
        )
        sidecar.stop()
    return result


class SdkDrainer:
    """The SDK worker process holding the backlog, one run per `go`."""

    def __init__(self, server: CaptureCounter, backlog: int, runs: list[tuple[bool, int]],
                 profile: str = "small") -> None:
        self.server = server
        self.backlog = backlog
        self.specs = runs
        spec = ",".join(f"{int(g)}:{f}" for g, f in runs)
        self.process = subprocess.Popen(
            [sys.executable, str(BENCH / "sdk_worker.py"), "drain", "--url", server.url,
             "--events", str(backlog), "--runs", spec, "--profile", profile,
             "--seed", str(BACKLOG_SEED)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1,
        )
        self.done = 0
        # Wait until the backlog is queued: capturing it must not overlap a sidecar's run.
        self._await_ready()

    def _await_ready(self) -> None:
        ready = self._line()
        if ready.get("ready") != self.done:
            raise RuntimeError(f"sdk_worker out of step: {ready}")

    def _line(self) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"sdk_worker drain ended early (exit {self.process.poll()})")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def next_run(self) -> dict[str, Any]:
        """Deliver the backlog once more, with the next run's options."""
        assert self.process.stdin is not None
        self.server.reset()
        server_cpu = self.server.cpu_seconds()
        self.process.stdin.write("go\n")
        self.process.stdin.flush()
        stats = self.server.wait(self.backlog, TIMEOUT_S)
        worker = self._line()
        self.done += 1
        if self.done < len(self.specs):
            self._await_ready()  # the next run's queue is refilled before anything else runs
        result = _rate(stats, self.backlog)
        result.update(
            gzip=worker["gzip"],
            flush_at=worker["flush_at"],
            rss_holding_backlog=worker["rss_holding_backlog"],
            peak_rss=worker["peak_rss"],
            server_cpu_s=self.server.cpu_seconds() - server_cpu,
            load_average=load_average(),
        )
        if "capture_rate_no_consumer" in worker:
            result["capture_rate_no_consumer"] = worker["capture_rate_no_consumer"]
            result["sdk_version"] = worker.get("sdk_version")
        return result

    def close(self) -> None:
        """End the worker (it stops at the first line that is not `go`)."""
        stop_child(self.process)


def run(plan: Plan, server: CaptureCounter, profile: str = "small") -> dict[str, Any]:
    """Capacity of the server, then the sidecar's and the SDK's drains in turns.

    `small`: batch 50 beside the SDK with and without gzip, and batch `plan.big_batch` once
    each. `posthog-js`: `plan.posthog_js_backlog` events at batch 50 only.
    """
    small = profile == "small"
    batch = 50
    big = plan.big_batch if small else None
    backlog = plan.backlog if small else plan.posthog_js_backlog
    figures: dict[str, Any] = {"profile": profile, "backlog": backlog, "batch": batch,
                               "big_batch": big}
    figures["server_capacity"] = server_capacity(
        server, plan.capacity_requests, (batch, big) if big else (batch,), profile)
    log(f"fast server capacity ({profile}): " + ", ".join(
        f"batch {b}: {c['eps']:,.0f} events/s" for b, c in figures["server_capacity"].items()))
    if small:
        figures["stack_ceiling"] = stack_ceiling(server, batch, plan.capacity_requests)
        ceiling = figures["stack_ceiling"]
        log(f"stack ceiling, batch {batch}, no queue: HTTP attempt alone "
            f"{ceiling['http_only']:,.0f} events/s, with the store-thread hop "
            f"{ceiling['with_hop']:,.0f} events/s")
    started = time.monotonic()
    with workdir() as folder:
        template = folder / "template"
        figures["fill"] = fill_backlog(template, backlog, batch=batch, seed=BACKLOG_SEED,
                                       profile=profile)
        log(f"backlog of {backlog:,} {profile} events queued in "
            f"{time.monotonic() - started:.1f} s; fill rate by tenth "
            f"{figures['fill']['rates_by_tenth']}")
        # The SDK's runs, in the order they are taken: each configuration once, then repeats.
        first_turn = [(False, batch), (True, batch)] + ([(True, big)] if big else [])
        later_turn = [(False, batch), (True, batch)] if small else [(True, batch)]
        sdk = SdkDrainer(server, backlog, first_turn + later_turn * (plan.drain_reps - 1),
                         profile)
        runs: dict[str, list[dict[str, Any]]] = {
            "sidecar": [], "sidecar_big": [], "sdk_gzip": [], "sdk_plain": [], "sdk_gzip_big": [],
        }
        sidecar_started = time.monotonic()
        try:
            for rep in range(plan.drain_reps):
                elapsed = time.monotonic() - sidecar_started
                if rep and elapsed / rep * (rep + 1) > plan.drain_budget_s:
                    log(f"drain: stopping after {rep} runs ({elapsed:.0f} s, budget "
                        f"{plan.drain_budget_s:.0f} s)")
                    break
                runs["sidecar"].append(
                    sidecar_run(server, template, folder / f"s{rep}", backlog, batch))
                for _ in first_turn if rep == 0 else later_turn:
                    result = sdk.next_run()
                    key = ("sdk_gzip" if result["gzip"] else "sdk_plain") if result[
                        "flush_at"] == batch else "sdk_gzip_big"
                    runs[key].append(result)
                if rep == 0 and big:
                    runs["sidecar_big"].append(
                        sidecar_run(server, template, folder / "big", backlog, big))
                log(f"drain {profile} run {rep + 1}: sidecar {runs['sidecar'][-1]['eps']:,.0f}/s "
                    f"(batch {batch}), SDK gzip {runs['sdk_gzip'][-1]['eps']:,.0f}/s"
                    + (f", plain {runs['sdk_plain'][-1]['eps']:,.0f}/s"
                       if len(runs["sdk_plain"]) > rep else "")
                    + (f"; batch {big}: sidecar {runs['sidecar_big'][-1]['eps']:,.0f}/s, "
                       f"SDK {runs['sdk_gzip_big'][-1]['eps']:,.0f}/s" if rep == 0 and big
                       else ""))
        finally:
            sdk.close()
    for name, results in runs.items():
        if not results:
            continue
        figures[name] = {
            "runs": len(results),
            "eps": median([r["eps"] for r in results]),
            "eps_runs": [round(r["eps"]) for r in results],
            "body_bytes_per_event": median([r["body_bytes_per_event"] for r in results]),
            "wire_bytes_per_event": median([r["wire_bytes_per_event"] for r in results]),
            "json_bytes_per_event": median([r["json_bytes_per_event"] for r in results]),
            "peak_rss": max((r["peak_rss"] for r in results), default=0),
            "detail": results,
        }
    first_sdk = next((r for r in runs["sdk_plain"] if "sdk_version" in r), None)
    figures["sdk_version"] = first_sdk["sdk_version"] if first_sdk else None
    return figures
