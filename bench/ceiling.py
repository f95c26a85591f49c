"""What the sidecar's stack allows a drain at most: the product's HTTP path with no queue at all.

    .venv/bin/python bench/ceiling.py --url http://127.0.0.1:PORT [--batch 50] [--requests 2000]

The sender's cost per request has three parts: the HTTP attempt (httpx's transport under trio),
the hop to the store's thread (`trio.to_thread`, which the stack prescribes for sqlite3), and
the store's own work (delete, lease, commit, compress). This script measures the first two
alone, on one pre-built gzip body sent again and again through `sidecar.delivery.httpclient`'s
`Endpoint`, one request at a time on one keep-alive connection, as the sender sends:

- `http_only`: the attempt alone, no hop: what a queue that cost nothing would leave;
- `with_hop`: the attempt plus one `trio.to_thread.run_sync` of a no-op through a
  `CapacityLimiter(1)`, as `AsyncStore.run` makes once per request while a backlog drains.

Each is run in turns, `--rounds` times, after a warm-up; it prints one JSON line with the median
events/s of each and every round's figures. Run by the suite (`drain.py`) in a process of its
own, so nothing else in the benchmark competes for its GIL.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

import trio

sys.path[:0] = [str(Path(__file__).resolve().parent)]

from profiles import events as profile_events  # noqa: E402

from sidecar.delivery.capture import BodyDraft  # noqa: E402
from sidecar.delivery.httpclient import Endpoint, make_transport  # noqa: E402
from sidecar_dev.harness import TEST_KEY  # noqa: E402

TIMEOUT_S = 30.0
WARM_UP = 200


def body(batch: int) -> bytes:
    """One /batch/ body of `batch` small events, made as the sidecar makes it."""
    bodies = [json.dumps(e, separators=(",", ":")) for e in profile_events("small", batch, seed=99)]
    return BodyDraft(TEST_KEY, bodies).finish(datetime.now(UTC))


async def measure(url: str, batch: int, requests: int, rounds: int) -> dict[str, object]:
    """Both variants in turns; events/s per round and their medians."""
    endpoint = Endpoint(f"{url}/batch/", make_transport(url))
    payload = body(batch)
    limiter = trio.CapacityLimiter(1)

    async def http_only() -> None:
        await endpoint.post(payload, TIMEOUT_S)

    async def with_hop() -> None:
        await trio.to_thread.run_sync(lambda: None, limiter=limiter)
        await endpoint.post(payload, TIMEOUT_S)

    async def rate(step: Callable[[], Awaitable[None]]) -> float:
        started = time.perf_counter()
        for _ in range(requests):
            await step()
        return requests * batch / (time.perf_counter() - started)

    variants = {"http_only": http_only, "with_hop": with_hop}
    figures: dict[str, list[float]] = {name: [] for name in variants}
    try:
        for _ in range(WARM_UP):
            await with_hop()
        for _ in range(rounds):
            for name, step in variants.items():
                figures[name].append(await rate(step))
    finally:
        await endpoint.aclose()
    return {
        "batch": batch,
        "requests": requests,
        **{name: statistics.median(runs) for name, runs in figures.items()},
        "runs": {name: [round(r) for r in runs] for name, runs in figures.items()},
    }


def main() -> int:
    """Measure against the server at `--url` and print the JSON line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--batch", type=int, default=50)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(trio.run(measure, args.url, args.batch, args.requests, args.rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
