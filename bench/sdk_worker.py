"""The reference: the PostHog Python SDK (package `posthog`) on the same events, in its own process.

A separate process, so the SDK's consumer thread competes for the GIL only with the caller's
`capture()` calls, as in an app, and never with the benchmark's own threads. Run by the suite:

    python bench/sdk_worker.py capture --url URL --events N
    python bench/sdk_worker.py drain   --url URL --events N --runs 0:50,1:50,1:500
    python bench/sdk_worker.py latency --url URL --events N
    python bench/sdk_worker.py backlog --url URL --events N

`--profile` picks the events (`profiles.py`: `small`, the default, or `posthog-js`).

Each prints one JSON line of results on stdout (`latency` also prints one line per send and
waits for "next" on stdin).

What `capture()` does (posthog 7.x, `Client._enqueue`): normalise timestamp and uuid, add
`$lib`, `$lib_version`, `$geoip_disable` and `$is_server` and system context (OS and distro
through the `distro` package, looked up again on every call), deep-`clean()` the message, then
`queue.put()` on an in-memory `queue.Queue` (dropped with a warning past `max_queue_size`,
default 10,000). Nothing is written to disk: events captured and not yet sent are lost if the
process exits or crashes. One consumer thread (`thread=1`) takes up to `flush_at` (default 100)
events or waits `flush_interval` (default 5 s), sizes each event by `json.dumps`, and POSTs them
with `requests` to `/batch/`, gzip (compresslevel 9, `GzipFile`'s default) only with `gzip=True`.
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import resource
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

IMPORT_STARTED = time.monotonic()
from posthog import Posthog  # noqa: E402
from posthog.consumer import Consumer  # noqa: E402
from posthog.version import VERSION  # noqa: E402

IMPORTED = time.monotonic()

import psutil  # noqa: E402
from profiles import events as profile_events  # noqa: E402

from sidecar_dev.harness import TEST_KEY  # noqa: E402


def _peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


_ORIGINAL_RUN: Callable[[Consumer], None] | None = None
LATENCY_PAUSE_MAX_S = 5.0  # the SDK's default flush_interval


def hold_consumers() -> threading.Event:
    """Make consumer threads built from now on wait for the returned event before any batch."""
    global _ORIGINAL_RUN  # noqa: PLW0603 - patched once per run in a throwaway process
    gate = threading.Event()
    original = _ORIGINAL_RUN = _ORIGINAL_RUN or Consumer.run

    def held_run(self: Consumer) -> None:
        gate.wait()
        original(self)

    Consumer.run = held_run  # type: ignore[method-assign]
    return gate


def _drain_runs(
    args: argparse.Namespace, events: list[dict[str, Any]], first: dict[str, Any]
) -> None:
    """Deliver the same backlog once per run, each time with every event queued before sending.

    The SDK starts its consumer thread when the client is built; `hold_consumers` keeps it from
    taking anything until the gate opens. The first run queues the events through `capture()`
    (and reports that rate); later runs put the very messages it produced back in a fresh
    client's queue (private `_analytics_lane.queue`, checked), which saves re-capturing 100,000
    events per run. Handshake per run, with the suite: print {"ready"}, wait for "go" on stdin,
    open the gate, flush, print the run's JSON.
    """
    messages: list[Any] = []
    for number, spec in enumerate(args.runs.split(",")):
        gzip_text, flush_at_text = spec.split(":")
        gate = hold_consumers()
        client = Posthog(
            TEST_KEY,
            host=args.url,
            gzip=gzip_text == "1",
            flush_at=int(flush_at_text),
            max_queue_size=args.events + 1000,  # the default 10,000 would drop most of it
            thread=1,
            max_retries=3,
        )
        result: dict[str, Any] = {**first, "run": number, "gzip": gzip_text == "1",
                                  "flush_at": int(flush_at_text)}
        lane = client._analytics_lane
        if number == 0:
            seconds = _capture_all(client, events)
            result["capture_rate_no_consumer"] = args.events / seconds
            messages = list(lane.queue.queue)
            if len(messages) != args.events:
                raise SystemExit(f"the SDK queued {len(messages)} of {args.events} events")
        else:
            for message in messages:
                lane.queue.put_nowait(message)
        result["rss_holding_backlog"] = psutil.Process().memory_info().rss
        print(json.dumps({"ready": number}), flush=True)
        if sys.stdin.readline().strip() != "go":
            return
        result["consumer_started_at"] = time.monotonic()
        gate.set()
        client.flush(timeout_seconds=None)  # the default 10 s may return before the end
        result["flushed_at"] = time.monotonic()
        client.shutdown()
        result["peak_rss"] = _peak_rss()
        print(json.dumps(result), flush=True)


def _capture_arguments(event: dict[str, Any]) -> dict[str, Any]:
    """`capture()`'s keyword arguments for a `/batch/` event.

    `capture()` takes no top-level `$set` / `$set_once`; PostHog reads them from the properties
    too, so an identify event's person properties go there (same bytes, same meaning).
    """
    properties = event["properties"]
    person = {key: event[key] for key in ("$set", "$set_once") if key in event}
    if person:
        properties = {**properties, **person}
    return {"distinct_id": event["distinct_id"], "properties": properties,
            "timestamp": event["timestamp"], "uuid": event["uuid"]}


def _capture_all(client: Posthog, events: list[dict[str, Any]]) -> float:
    calls = [(event["event"], _capture_arguments(event)) for event in events]
    started = time.monotonic()
    for name, arguments in calls:
        client.capture(name, **arguments)
    return time.monotonic() - started


def main() -> int:
    """Run one mode and print its JSON line."""
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=("capture", "drain", "latency", "backlog"))
    parser.add_argument("--url", required=True)
    parser.add_argument("--events", type=int, required=True)
    parser.add_argument("--flush-at", type=int, default=100)
    parser.add_argument("--gzip", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--profile", default="small", help="event profile (profiles.py)")
    parser.add_argument(
        "--runs", default="0:50", help="drain: comma-separated GZIP:FLUSH_AT runs, e.g. 0:50,1:50"
    )
    args = parser.parse_args()
    logging.getLogger("posthog").setLevel(logging.ERROR)
    events = profile_events(args.profile, args.events, seed=args.seed)
    result: dict[str, Any] = {
        "sdk_version": VERSION,
        "import_s": IMPORTED - IMPORT_STARTED,
        "gzip": args.gzip,
        "flush_at": args.flush_at,
    }
    if args.mode == "drain":
        _drain_runs(args, events, result)
        return 0
    client = Posthog(
        TEST_KEY,
        host=args.url,
        gzip=args.gzip,
        flush_at=args.flush_at,
        max_queue_size=args.events + 1000,  # the default 10,000 would drop most of a backlog
        thread=1,
        max_retries=3,
    )
    if args.mode in ("capture", "backlog"):
        # As an app uses it: the consumer thread starts on the first capture and sends
        # while later captures are still being made.
        seconds = _capture_all(client, events)
        result["capture_s"] = seconds
        result["capture_rate"] = args.events / seconds
        flush_started = time.monotonic()
        client.flush(timeout_seconds=None)  # the default 10 s may return before the end
        result["flush_s"] = time.monotonic() - flush_started
    else:  # latency: one event at a time, each after the last arrived
        rng = random.Random(5)
        for index, event in enumerate(events):
            # A random moment within the consumer's flush_interval window: sent right after
            # the last arrival, every event would wait the whole window (the worst case).
            time.sleep(rng.uniform(0, LATENCY_PAUSE_MAX_S))
            print(json.dumps({"index": index, "sent_at": time.monotonic()}), flush=True)
            _capture_all(client, [event])
            if sys.stdin.readline().strip() != "next":
                break
    result["rss"] = psutil.Process().memory_info().rss
    client.shutdown()
    result["peak_rss"] = _peak_rss()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
