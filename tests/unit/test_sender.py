"""Unit tests for sidecar.delivery.sender: delivery rules, on httpx.MockTransport and a real queue.

How time is made deterministic
------------------------------
Every test runs under pytest-trio's `autojump_clock` (a `MockClock` with `autojump_threshold=0`):
whenever trio finds every task blocked, it jumps virtual time to the next deadline, so backoffs
and holds of minutes take no real time.

Trio decides "every task is blocked" from its run queue alone; it does not count worker threads.
The real `AsyncStore` runs each SQLite call in a thread, so while such a call is in flight the
clock could leap to whatever deadline is next (a test's sleep, a flush deadline, the guard), and
`wait_all_tasks_blocked` could return early. `StillClockStore` is the real `AsyncStore` plus one
task that keeps checkpointing for as long as its thread runs: the run queue is never empty then,
so trio neither autojumps nor reports the run as idle. Virtual time therefore moves only when
every task waits on the clock, and `trio.current_time()` taken when a request arrives is exactly
the time the sender scheduled it; backoff delays are measured without tolerance beyond float
rounding. The sender's jitter comes from a seeded `random.Random`, and its clock is a
`VirtualClock` whose wall time (for `sent_at` and Retry-After dates) is derived from trio's
virtual time, so two attempts never share a millisecond by accident of real speed.

The rules themselves (what each answer means) are tested as plain functions in test_policy.py,
and the flush bookkeeping in test_flush.py; these tests check that the sender carries them out
against a real queue and a scripted capture endpoint.
"""

from __future__ import annotations

import contextlib
import email.utils
import gzip
import inspect
import itertools
import json
import math
import random
import sqlite3
import subprocess
import sys
import time
from collections import Counter, deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import pytest
import trio
import trio.testing
from support import store_probe as probe
from support.events import normalize_event

from sidecar.delivery.flush import FlushState, WaitReason
from sidecar.delivery.handover import RECHECK_S, Handover
from sidecar.delivery.policy import TransportUnavailable
from sidecar.delivery.sender import Sender
from sidecar.process.config import Config
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import STALE_LEASE_S, LeaseOwner, Store, StoreStatus

T = TypeVar("T")

HOST = "https://capture.test"
URL = f"{HOST}/batch/"
KEY_A = "phc_projectAAAAAAAAAAAA"
KEY_B = "phc_projectBBBBBBBBBBBB"
EVENT_TIME = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
WALL_EPOCH = datetime(2030, 6, 1, tzinfo=UTC)  # the sender's wall clock at trio time 0
SEED = 20300101
GUARD_S = 100_000.0  # virtual seconds; a test that would hang fails with TooSlowError instead
EPS = 1e-9  # float rounding of `now + delay - now`


# ---- a queue whose thread calls do not let the mock clock jump ---------------------------------


class StillClockStore(AsyncStore):
    """The real AsyncStore; virtual time stands still while one of its worker threads runs."""

    def __init__(self, path: Path) -> None:
        """The store at `path`, with no operation run yet."""
        super().__init__(path)
        # Operations run so far (each is one trip to the store's thread).
        self.calls = 0

    async def run(self, operation: Callable[[Store], T]) -> T:
        """Run `operation` in the store thread while a sibling task keeps trio from idling."""
        self.calls += 1
        in_thread = True

        async def keep_runnable() -> None:
            while in_thread:
                await trio.lowlevel.cancel_shielded_checkpoint()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(keep_runnable)
            try:
                return await super().run(operation)
            finally:
                in_thread = False


class VirtualClock:
    """The sender's clock in these tests: trio's virtual time, and a wall clock following it."""

    def now(self) -> float:
        """Trio's virtual time."""
        return trio.current_time()

    def wall(self) -> datetime:
        """WALL_EPOCH plus trio's virtual seconds."""
        return WALL_EPOCH + timedelta(seconds=trio.current_time())


def wall_text(at: float) -> str:
    """The `sent_at` text the sender writes for an attempt at trio time `at`."""
    moment = WALL_EPOCH + timedelta(seconds=at)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


# ---- a scripted capture endpoint ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Seen:
    """One request as the fake capture endpoint received it."""

    at: float
    url: str
    headers: httpx.Headers
    text: str  # the gunzipped body
    api_key: str
    sent_at: str
    events: list[dict[str, Any]]

    @property
    def labels(self) -> list[str]:
        """The test labels of the events in this request, in order."""
        return [str(event["properties"]["label"]) for event in self.events]

    @property
    def batch_text(self) -> str:
        """The raw JSON text of the `batch` array, exactly as sent (`sent_at` comes after it)."""
        start = self.text.index('"batch":')
        return self.text[start : self.text.rindex(',"sent_at":')]


Reply = int | tuple[int, dict[str, str]] | Exception
Script = Reply | Callable[["Seen"], Reply | Awaitable[Reply]]


class FakeCapture:
    """A MockTransport handler: records every request and answers from a script, then `default`."""

    def __init__(self, *script: Script, default: Script = 200) -> None:
        """Answer requests with `script` in order, then with `default` forever."""
        self.script: deque[Script] = deque(script)
        self.default = default
        self.requests: list[Seen] = []
        self._arrived = trio.Event()

    async def handle(self, request: httpx.Request) -> httpx.Response:
        """Record the request, then answer (or raise) as the script says."""
        assert request.headers["Content-Encoding"] == "gzip"
        text = gzip.decompress(request.content).decode("utf-8")
        document = json.loads(text)
        seen = Seen(
            at=trio.current_time(),
            url=str(request.url),
            headers=request.headers,
            text=text,
            api_key=document["api_key"],
            sent_at=document["sent_at"],
            events=document["batch"],
        )
        self.requests.append(seen)
        self._arrived.set()
        self._arrived = trio.Event()
        step = self.script.popleft() if self.script else self.default
        reply = step(seen) if callable(step) else step
        if inspect.isawaitable(reply):
            reply = await reply
        if isinstance(reply, Exception):
            raise reply
        status, headers = reply if isinstance(reply, tuple) else (reply, {})
        return httpx.Response(status, headers=headers, json={"status": status})

    async def wait_for(self, count: int) -> None:
        """Return once at least `count` requests have arrived."""
        while len(self.requests) < count:
            await self._arrived.wait()

    def times(self) -> list[float]:
        """The trio time of each request."""
        return [seen.at for seen in self.requests]

    def delivered_labels(self, ok: Callable[[Seen], bool]) -> list[str]:
        """Labels of the requests `ok` says were answered 2xx, in order."""
        return [label for seen in self.requests if ok(seen) for label in seen.labels]


def offline(seen: Seen) -> Exception:
    """No connection could be made."""
    return httpx.ConnectError("[Errno 101] Network is unreachable")


def connect_timeout(seen: Seen) -> Exception:
    """The connection attempt timed out."""
    return httpx.ConnectTimeout("timed out connecting")


def read_timeout(seen: Seen) -> Exception:
    """Connected, but the answer never came."""
    return httpx.ReadTimeout("timed out reading")


# ---- the rig: config, queue, client and the sender task ----------------------------------------


class Rig:
    """A sender wired to a real queue in tmp_path and to a FakeCapture, inside one nursery."""

    def __init__(
        self, config: Config, store: AsyncStore, sender: Sender, capture: FakeCapture,
        nursery: trio.Nursery, *, flush: FlushState,
    ) -> None:
        """Hold the parts; the sender does not run until `start`."""
        self.config = config
        self.store = store
        self.sender = sender
        self.flush_state = flush
        self.capture = capture
        self.nursery = nursery
        self.stopping = trio.Event()
        self._scope: trio.CancelScope | None = None
        self._stopped = trio.Event()

    async def start(self) -> None:
        """Start `Sender.run` in its own cancel scope."""
        self._stopped = trio.Event()
        await self.nursery.start(self._run_sender)

    async def _run_sender(self, *, task_status: trio.TaskStatus[None]) -> None:
        try:
            with trio.CancelScope() as self._scope:
                await self.sender.run(task_status=task_status)
        finally:
            self._stopped.set()

    async def stop(self) -> None:
        """Cancel the sender task and wait until it has finished (leases handed back)."""
        assert self._scope is not None
        self._scope.cancel()
        await self._stopped.wait()

    async def enqueue(self, key: str, labels: Sequence[str], *, pad: Sequence[int] = ()) -> None:
        """Store one event per label (with `pad` filler characters each) for `key`."""
        pads = list(pad) or [0] * len(labels)
        bodies = [
            normalize_event(
                {"event": "test", "distinct_id": "user-1",
                 "properties": {"label": label, "pad": "x" * size}},
                now=EVENT_TIME,
                lib_version="0.0.0-test",
            )
            for label, size in zip(labels, pads, strict=True)
        ]
        max_queue = self.config.max_queue
        await self.store.run(lambda store: store.enqueue(key, bodies, max_queue=max_queue))

    async def status(self) -> StoreStatus:
        """The store's counters and depth."""
        return await self.store.run(lambda store: store.status())

    def rows(self) -> list[tuple[int, str, int, str | None]]:
        """(id, api_key, retry_count, lease_owner) of each queued row, via a side connection."""
        with contextlib.closing(sqlite3.connect(self.config.db_path)) as db:
            return list(
                db.execute("SELECT id, api_key, retry_count, lease_owner FROM ph_event_queue")
            )

    def bodies(self) -> list[str]:
        """The stored JSON text of every queued event, oldest first."""
        with contextlib.closing(sqlite3.connect(self.config.db_path)) as db:
            return [str(row[0]) for row in db.execute(
                "SELECT body FROM ph_event_queue ORDER BY id"
            )]

    async def flush(self, seconds: float) -> int:
        """`flush_until` now + `seconds`, with the rig's `stopping` event."""
        return await self.sender.flush_until(trio.current_time() + seconds, self.stopping)

    async def timed_flush(self, seconds: float) -> tuple[float, int, float]:
        """`flush(seconds)` as (trio time it was called, events delivered, time it returned)."""
        called_at = trio.current_time()
        delivered = await self.flush(seconds)
        return called_at, delivered, trio.current_time()


@contextlib.asynccontextmanager
async def rig_for(
    tmp_path: Path,
    capture: FakeCapture,
    *,
    make_transport: Callable[[], httpx.AsyncBaseTransport] | None = None,
    **settings: Any,
) -> AsyncIterator[Rig]:
    """A Rig with Config(**settings), sending to `capture` (or through `make_transport`); the
    sender is cancelled and the store closed on exit."""
    config = replace(Config(data_dir=tmp_path, host=HOST), **settings)
    store = StillClockStore(config.db_path)
    transport = httpx.MockTransport(capture.handle)
    try:
        with trio.fail_after(GUARD_S):
            async with transport, trio.open_nursery() as n:
                flush = FlushState()
                sender = Sender(
                    config, store, make_transport or (lambda: transport), rng=random.Random(SEED),
                    clock=VirtualClock(), flush=flush,
                )
                yield Rig(config, store, sender, capture, n, flush=flush)
                n.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await store.aclose()


async def settle() -> None:
    """Wait until every task (the sender included) is blocked and no store call is in flight."""
    await trio.testing.wait_all_tasks_blocked()


def nominal(config: Config, failures: int) -> float:
    """The contract's nominal delay before retry number `failures`: base * 2**(n-1), capped."""
    return min(config.backoff_base_s * 2.0 ** (failures - 1), config.backoff_max_s)


def assert_backoff(times: Sequence[float], config: Config) -> None:
    """Each gap between consecutive requests lies in [nominal/2, nominal] for its failure number."""
    gaps = [later - earlier for earlier, later in itertools.pairwise(times)]
    for failures, gap in enumerate(gaps, start=1):
        expected = nominal(config, failures)
        assert expected / 2 - EPS <= gap <= expected + EPS, (failures, gap, expected)


def labels(prefix: str, count: int) -> list[str]:
    """`count` distinct labels such as A0, A1, ..."""
    return [f"{prefix}{i}" for i in range(count)]


# ---- 2xx -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [200, 202, 204])
async def test_2xx_deletes_the_events_and_counts_them_delivered(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, status: int
) -> None:
    """A 2xx answer deletes the sent rows and counts them delivered, in the wire format asked."""
    capture = FakeCapture(default=status)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 5))
        stored = [json.loads(body) for body in rig.bodies()]
        await rig.start()
        await capture.wait_for(1)
        await settle()
        status_after = await rig.status()

    [seen] = capture.requests
    assert seen.url == URL
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.api_key == KEY_A
    assert seen.events == stored
    assert seen.labels == ["A0", "A1", "A2", "A3", "A4"]
    assert seen.sent_at == wall_text(seen.at)
    assert rig.flush_state.delivered == 5
    assert status_after.queued == 0
    assert status_after.delivered == 5
    assert status_after.dropped == {
        "overflow": 0, "rejected": 0, "retries_exhausted": 0, "opt_out": 0
    }
    assert status_after.last_error is None


# ---- retries ------------------------------------------------------------------------------------


async def test_retries_resend_identical_events_with_a_new_sent_at(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Every retry carries byte-identical events (same uuid and timestamp); only sent_at moves."""
    capture = FakeCapture(500, 503, 200)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.start()
        await capture.wait_for(3)
        await settle()
        final = await rig.status()

    first, second, third = capture.requests
    assert first.batch_text == second.batch_text == third.batch_text
    assert [(e["uuid"], e["timestamp"]) for e in first.events] == [
        (e["uuid"], e["timestamp"]) for e in third.events
    ]
    assert [e["timestamp"] for e in first.events] == ["2030-01-01T12:00:00.000000+00:00"] * 3
    assert [seen.sent_at for seen in capture.requests] == [
        wall_text(seen.at) for seen in capture.requests
    ]
    assert len({seen.sent_at for seen in capture.requests}) == 3
    assert (final.delivered, final.queued, final.dropped["retries_exhausted"]) == (3, 0, 0)
    assert final.last_error is None


@pytest.mark.parametrize("max_retries", [0, 2])
@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
async def test_server_errors_back_off_then_drop_after_max_retries(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, status: int, max_retries: int
) -> None:
    """408/429/5xx are retried after [nominal/2, nominal]; after max_retries+1 sends, dropped."""
    capture = FakeCapture(default=status)
    async with rig_for(tmp_path, capture, max_retries=max_retries, backoff_max_s=3.0) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(max_retries + 1)
        await settle()
        await trio.sleep(1000)  # long enough for any further attempt
        final = await rig.status()
        assert rig.rows() == []

    assert len(capture.requests) == max_retries + 1
    assert all(seen.labels == ["A0", "A1"] for seen in capture.requests)
    assert_backoff(capture.times(), rig.config)
    assert final.queued == 0
    assert final.delivered == 0
    assert final.dropped["retries_exhausted"] == 2
    assert final.last_error == f"HTTP {status} from capture"


def retry_after(status: int, value: str) -> Callable[[Seen], Reply]:
    """An answer: `status` with `Retry-After: value`."""
    return lambda seen: (status, {"Retry-After": value})


def retry_after_date(status: int, seconds: float) -> Callable[[Seen], Reply]:
    """An answer: `status` with Retry-After the HTTP date `seconds` after the sender's wall
    time (whole seconds, as HTTP dates go)."""

    def answer(seen: Seen) -> Reply:
        when = VirtualClock().wall() + timedelta(seconds=seconds)
        return status, {"Retry-After": email.utils.format_datetime(when, usegmt=True)}

    return answer


@pytest.mark.parametrize(
    ("answer", "cap", "window"),
    [
        pytest.param(retry_after(429, "7"), 3600.0, (7.0, 7.0), id="seconds"),
        pytest.param(retry_after(503, "100000"), 120.0, (120.0, 120.0), id="seconds-capped"),
        pytest.param(retry_after_date(503, 120), 3600.0, (119.0, 120.0), id="http-date"),
        pytest.param(retry_after_date(429, 7200), 60.0, (60.0, 60.0), id="http-date-capped"),
        pytest.param(retry_after(503, "0"), 3600.0, (0.5, 1.0), id="a-minimum-not-an-override"),
    ],
)
async def test_retry_after_is_a_capped_minimum(
    autojump_clock: trio.testing.MockClock,
    tmp_path: Path,
    answer: Callable[[Seen], Reply],
    cap: float,
    window: tuple[float, float],
) -> None:
    """Retry-After (seconds or HTTP date) delays the retry at least that long, up to the cap."""
    low, high = window
    capture = FakeCapture(answer, 200)
    async with rig_for(tmp_path, capture, retry_after_max_s=cap) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(2)
        await settle()
        final = await rig.status()

    gap = capture.requests[1].at - capture.requests[0].at
    assert low - EPS <= gap <= high + EPS
    assert (final.delivered, final.queued) == (2, 0)


@pytest.mark.parametrize("failure", [offline, connect_timeout])
async def test_connection_failures_retry_forever_with_capped_backoff(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, failure: Callable[[Seen], Exception]
) -> None:
    """Offline failures never count toward max_retries: 20 of them drop nothing, then delivery."""
    failures = 20
    capture = FakeCapture(*[failure] * failures, default=200)
    async with rig_for(tmp_path, capture, max_retries=1) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.start()
        await capture.wait_for(failures)
        await settle()
        assert rig.flush_state.wait_reason is WaitReason.OFFLINE
        while_offline = await rig.status()
        rows_offline = rig.rows()
        await capture.wait_for(failures + 1)
        await settle()
        final = await rig.status()

    assert while_offline.queued == 3
    assert while_offline.dropped["retries_exhausted"] == 0
    assert [(retries, owner) for _, _, retries, owner in rows_offline] == [(0, None)] * 3
    assert len(capture.requests) == failures + 1
    assert_backoff(capture.times(), rig.config)
    assert capture.requests[-1].at - capture.requests[-2].at <= rig.config.backoff_max_s
    assert (final.delivered, final.queued, final.dropped["retries_exhausted"]) == (3, 0, 0)


async def test_read_timeout_counts_as_a_retry(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A ReadTimeout is a counted failure: with max_retries=1, two sends and the events drop."""
    capture = FakeCapture(default=read_timeout)
    async with rig_for(tmp_path, capture, max_retries=1) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(2)
        await settle()
        await trio.sleep(1000)
        final = await rig.status()

    assert len(capture.requests) == 2
    assert_backoff(capture.times(), rig.config)
    assert (final.queued, final.dropped["retries_exhausted"]) == (0, 2)
    assert final.last_error is not None
    assert "ReadTimeout" in final.last_error


# ---- 413 and 400 -----------------------------------------------------------------------------


async def test_413_splits_until_the_lone_oversized_event_is_dropped(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """413 halves the batch; only the event too large on its own is dropped as rejected."""
    limit = 4000
    pads = [100, 1500, 1500, 6000, 300, 1800, 200, 100]

    def answer(seen: Seen) -> Reply:
        return 413 if len(seen.text) > limit else 200

    capture = FakeCapture(default=answer)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", len(pads)), pad=pads)
        await rig.start()
        await settle()
        final = await rig.status()

    accepted = capture.delivered_labels(lambda seen: len(seen.text) <= limit)
    assert sorted(accepted) == ["A0", "A1", "A2", "A4", "A5", "A6", "A7"]
    assert Counter(accepted).most_common(1)[0][1] == 1  # each delivered exactly once
    assert [seen.labels for seen in capture.requests] == [
        labels("A", 8), ["A0", "A1", "A2", "A3"], ["A0", "A1"], ["A2", "A3"], ["A2"], ["A3"],
        ["A4", "A5", "A6", "A7"],
    ]
    assert len({seen.at for seen in capture.requests}) == 1  # splits are sent at once
    assert final.dropped["rejected"] == 1
    assert (final.delivered, final.queued) == (7, 0)


@pytest.mark.parametrize(("count", "poisoned"), [(16, 5), (16, 0), (16, 15), (10, 9)])
async def test_400_isolates_and_drops_only_the_bad_event(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, count: int, poisoned: int
) -> None:
    """400 bisects the batch: the one bad event is dropped, the rest delivered, ~2*log2(n) sends."""
    bad = f"A{poisoned}"

    def answer(seen: Seen) -> Reply:
        return 400 if bad in seen.labels else 200

    capture = FakeCapture(default=answer)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", count))
        await rig.start()
        await settle()
        final = await rig.status()

    accepted = capture.delivered_labels(lambda seen: bad not in seen.labels)
    assert sorted(accepted) == sorted(set(labels("A", count)) - {bad})
    assert len(accepted) == count - 1
    depth = math.ceil(math.log2(count))
    assert len(capture.requests) <= 2 * depth + 1
    if count == 2**depth:
        assert len(capture.requests) == 2 * depth + 1
    assert [seen.labels for seen in capture.requests].count([bad]) == 1
    assert final.dropped["rejected"] == 1
    assert (final.delivered, final.queued) == (count - 1, 0)


# ---- 401/403 -----------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [401, 403])
async def test_auth_failure_holds_that_key_while_other_keys_flow(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, status: int
) -> None:
    """401/403 holds the key's events for auth_hold_s; other keys go on; then the key is retried."""
    key_ok = False

    def answer(seen: Seen) -> Reply:
        return 200 if seen.api_key == KEY_B or key_ok else status

    capture = FakeCapture(default=answer)
    async with rig_for(tmp_path, capture, auth_hold_s=600.0) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.enqueue(KEY_B, labels("B", 2))
        start = trio.current_time()
        await rig.start()
        await settle()
        assert [(s.api_key, s.labels) for s in capture.requests] == [
            (KEY_A, ["A0", "A1", "A2"]), (KEY_B, ["B0", "B1"]),
        ]
        assert rig.sender.next_attempt_in() == pytest.approx(600.0)

        await trio.sleep(100)
        await rig.enqueue(KEY_A, ["A3"])
        await rig.enqueue(KEY_B, ["B2", "B3"])
        rig.sender.wake()
        await capture.wait_for(3)
        await settle()
        assert (capture.requests[2].api_key, capture.requests[2].labels) == (KEY_B, ["B2", "B3"])
        assert capture.requests[2].at == start + 100
        assert rig.sender.next_attempt_in() == pytest.approx(500.0)
        held = await rig.status()

        key_ok = True
        await capture.wait_for(4)
        await settle()
        final = await rig.status()

    assert held.queued == 4
    assert len(capture.requests) == 4
    retried = capture.requests[3]
    assert (retried.api_key, retried.labels) == (KEY_A, ["A0", "A1", "A2", "A3"])
    assert retried.at == pytest.approx(start + 600.0)
    assert (final.delivered, final.queued, sum(final.dropped.values())) == (8, 0, 0)


# ---- claims ------------------------------------------------------------------------------------


async def test_each_request_carries_one_key_and_at_most_batch_size_events(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Interleaved keys are never mixed in one request and no request exceeds batch_size."""
    capture = FakeCapture()
    async with rig_for(tmp_path, capture, batch_size=3) as rig:
        await rig.enqueue(KEY_A, ["A0", "A1", "A2", "A3"])
        await rig.enqueue(KEY_B, ["B0", "B1", "B2", "B3", "B4"])
        await rig.enqueue(KEY_A, ["A4", "A5", "A6"])
        await rig.enqueue(KEY_B, ["B5", "B6"])
        await rig.start()
        await settle()
        final = await rig.status()

    for seen in capture.requests:
        assert 1 <= len(seen.events) <= 3
        letter = "A" if seen.api_key == KEY_A else "B"
        assert all(label.startswith(letter) for label in seen.labels)
    sent_a = [label for s in capture.requests if s.api_key == KEY_A for label in s.labels]
    sent_b = [label for s in capture.requests if s.api_key == KEY_B for label in s.labels]
    assert sent_a == labels("A", 7)
    assert sent_b == labels("B", 7)
    assert len(capture.requests) == 6
    assert (final.delivered, final.queued) == (14, 0)


async def test_a_backlog_goes_out_back_to_back_until_an_answer_is_not_2xx(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """A backlog's batches follow each other with no wait, each deleted once answered. A 503
    ends the streak: what was answered stays delivered, nothing is left leased during the
    backoff (the failed batch counts one retry), and the rest goes out after it."""
    capture = FakeCapture(200, 200, 503)
    async with rig_for(tmp_path, capture, batch_size=2) as rig:
        await rig.enqueue(KEY_A, labels("A", 7))
        await rig.start()
        await capture.wait_for(3)
        await settle()
        during_backoff = [(retries, owner) for _, _, retries, owner in rig.rows()]
        middle = await rig.status()
        await capture.wait_for(5)
        await settle()
        final = await rig.status()

    assert [seen.labels for seen in capture.requests] == [
        ["A0", "A1"], ["A2", "A3"], ["A4", "A5"], ["A4", "A5"], ["A6"]]
    times = capture.times()
    assert times[0] == times[1] == times[2]
    assert 0.5 - EPS <= times[3] - times[2] <= 1.0 + EPS
    assert times[4] == times[3]
    assert during_backoff == [(1, None), (1, None), (0, None)]
    assert (middle.delivered, middle.queued) == (4, 3)
    assert (final.delivered, final.queued) == (7, 0)


async def test_only_the_batch_on_the_wire_is_leased_and_stop_hands_it_back(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While a backlog drains, the answered batch is deleted before the next is sent and only
    the batch in flight is leased (so a crash resends at most one batch); stopping hands it
    back unchanged."""
    in_flight = trio.Event()

    async def hang(seen: Seen) -> Reply:
        in_flight.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    capture = FakeCapture(200, hang)
    async with rig_for(tmp_path, capture, batch_size=2) as rig:
        await rig.enqueue(KEY_A, labels("A", 7))
        await rig.start()
        await in_flight.wait()
        await settle()
        mid_flight = [owner is not None for *_, owner in rig.rows()]
        await rig.stop()
        after_stop = [(retries, owner) for _, _, retries, owner in rig.rows()]

    assert [seen.labels for seen in capture.requests] == [["A0", "A1"], ["A2", "A3"]]
    assert mid_flight == [True, True, False, False, False]  # A0-A1 deleted, A2-A3 on the wire
    assert after_stop == [(0, None)] * 5


async def test_wake_sends_at_once_and_nothing_polls_without_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """wake() puts queued events on the wire at the same instant; without it the sender sleeps."""
    capture = FakeCapture()
    async with rig_for(tmp_path, capture) as rig:
        await rig.start()
        await settle()
        await rig.enqueue(KEY_A, ["A0", "A1"])
        await trio.sleep(3600)
        assert capture.requests == []
        assert rig.sender.next_attempt_in() is None
        woken_at = trio.current_time()
        rig.sender.wake()
        await capture.wait_for(1)
        await settle()

    assert capture.requests[0].at == woken_at
    assert capture.requests[0].labels == ["A0", "A1"]


async def test_wake_does_not_cut_a_server_backoff_short(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """New events during a Retry-After wait do not bring the next request forward."""
    capture = FakeCapture((503, {"Retry-After": "30"}))
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, ["A0"])
        await rig.start()
        await capture.wait_for(1)
        await settle()
        await trio.sleep(5)
        await rig.enqueue(KEY_A, ["A1"])
        rig.sender.wake()
        await capture.wait_for(2)
        await settle()

    assert capture.requests[1].at == pytest.approx(capture.requests[0].at + 30)
    assert capture.requests[1].labels == ["A0", "A1"]


# ---- flush_until and next_attempt_in -----------------------------------------------------------


async def test_flush_returns_the_delivered_count_once_the_queue_is_empty(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """flush_until sends what is queued and returns this call's deliveries without waiting more."""
    capture = FakeCapture()
    async with rig_for(tmp_path, capture) as rig:
        await rig.start()
        await settle()
        await rig.enqueue(KEY_A, labels("A", 4))
        flushed_at, delivered, returned_at = await rig.timed_flush(10)
        again = await rig.flush(10)
        final = await rig.status()

    assert delivered == 4
    assert again == 0
    assert returned_at == flushed_at
    assert capture.requests[0].at == flushed_at
    assert final.queued == 0


@pytest.mark.parametrize("failures", [1, 6])
async def test_flush_cuts_an_offline_wait_short(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, failures: int
) -> None:
    """While offline, flush_until sends at once instead of at the backoff time, and counts it."""
    capture = FakeCapture(*[offline] * failures)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.start()
        await capture.wait_for(failures)
        await settle()
        assert rig.flush_state.wait_reason is WaitReason.OFFLINE
        wait = rig.sender.next_attempt_in()
        assert wait is not None
        assert wait >= nominal(rig.config, failures) / 2 - EPS
        flushed_at, delivered, returned_at = await rig.timed_flush(10)
        final = await rig.status()

    assert delivered == 3
    assert capture.requests[failures].at == flushed_at
    assert returned_at == flushed_at
    assert final.queued == 0


async def test_flush_while_still_offline_tries_once_and_returns(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Cut short once: if that attempt fails too and the next is past the deadline, return."""
    capture = FakeCapture(default=offline)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(6)
        await settle()
        flushed_at, delivered, returned_at = await rig.timed_flush(10)
        final = await rig.status()
        after = rig.sender.next_attempt_in()

    assert delivered == 0
    assert len(capture.requests) == 7
    assert capture.requests[6].at == flushed_at
    assert returned_at == flushed_at
    assert after is not None
    assert after > 10
    assert (final.queued, final.dropped["retries_exhausted"]) == (2, 0)


@pytest.mark.parametrize(
    "failure",
    [pytest.param(503, id="backoff"), pytest.param((429, {"Retry-After": "5"}), id="retry-after")],
)
async def test_flush_never_sends_before_a_server_backoff_ends(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, failure: Reply
) -> None:
    """flush_until waits out a server-error backoff or Retry-After; the retry comes on schedule."""
    capture = FakeCapture(failure)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.start()
        await capture.wait_for(1)
        await settle()
        assert rig.flush_state.wait_reason is WaitReason.BACKOFF
        wait = rig.sender.next_attempt_in()
        assert wait is not None
        assert wait > 0
        flushed_at, delivered, returned_at = await rig.timed_flush(10)

    scheduled = flushed_at + wait
    assert delivered == 3
    assert len(capture.requests) == 2
    assert capture.requests[1].at == pytest.approx(scheduled)
    assert capture.requests[1].at > flushed_at
    assert returned_at == pytest.approx(scheduled)
    if isinstance(failure, tuple):
        assert wait == pytest.approx(5.0)


async def test_flush_returns_at_once_when_the_next_attempt_is_after_the_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """With Retry-After 60 and a 10 s flush, flush_until returns immediately with nothing sent."""
    capture = FakeCapture((503, {"Retry-After": "60"}))
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 3))
        await rig.start()
        await capture.wait_for(1)
        await settle()
        flushed_at, delivered, returned_at = await rig.timed_flush(10)
        final = await rig.status()

    assert delivered == 0
    assert returned_at == flushed_at
    assert len(capture.requests) == 1
    assert final.queued == 3


async def test_flush_returns_when_the_next_backoff_would_pass_the_deadline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Retries inside the deadline are made; once the next one falls after it, flush returns."""
    capture = FakeCapture(default=(503, {"Retry-After": "4"}))
    async with rig_for(tmp_path, capture, max_retries=10) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(1)
        await settle()
        flushed_at, delivered, returned_at = await rig.timed_flush(10)

    assert delivered == 0
    assert [seen.at - flushed_at for seen in capture.requests[1:]] == pytest.approx([4.0, 8.0])
    assert returned_at == pytest.approx(flushed_at + 8.0)


async def test_flush_leaves_held_events_held(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """flush_until delivers other keys and returns at once, not waiting out a 401 hold."""

    def answer(seen: Seen) -> Reply:
        return 401 if seen.api_key == KEY_A else 200

    capture = FakeCapture(default=answer)
    async with rig_for(tmp_path, capture) as rig:
        await rig.start()
        await settle()
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.enqueue(KEY_B, labels("B", 2))
        flushed_at, delivered, returned_at = await rig.timed_flush(10)
        second = await rig.flush(10)
        final = await rig.status()
        rows = rig.rows()

    assert delivered == 2
    assert second == 0
    assert returned_at == flushed_at
    assert [(seen.api_key, seen.labels) for seen in capture.requests] == [
        (KEY_A, ["A0", "A1"]), (KEY_B, ["B0", "B1"]),
    ]
    assert final.queued == 2
    assert [(key, owner) for _, key, _, owner in rows] == [(KEY_A, None), (KEY_A, None)]


async def test_flush_returns_when_stopping_is_set(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Setting `stopping` ends a flush that is waiting out a backoff."""
    capture = FakeCapture((503, {"Retry-After": "5"}))
    results: list[tuple[int, float]] = []
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 2))
        await rig.start()
        await capture.wait_for(1)
        await settle()
        flushed_at = trio.current_time()

        async def flush() -> None:
            results.append((await rig.flush(10), trio.current_time()))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush)
            await trio.sleep(1)
            rig.stopping.set()

    assert results == [(0, flushed_at + 1)]
    assert len(capture.requests) == 1


async def test_next_attempt_in_reports_the_wait(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """next_attempt_in is None when idle, counts down during a backoff, and is None again after."""
    capture = FakeCapture((503, {"Retry-After": "20"}))
    async with rig_for(tmp_path, capture) as rig:
        await rig.start()
        await settle()
        idle = rig.sender.next_attempt_in()
        await rig.enqueue(KEY_A, ["A0"])
        rig.sender.wake()
        await capture.wait_for(1)
        await settle()
        just_failed = rig.sender.next_attempt_in()
        await trio.sleep(5)
        later = rig.sender.next_attempt_in()
        await capture.wait_for(2)
        await settle()
        done = rig.sender.next_attempt_in()

    assert idle is None
    assert just_failed == pytest.approx(20.0)
    assert later == pytest.approx(15.0)
    assert done is None


# ---- cancellation ------------------------------------------------------------------------------


@pytest.mark.parametrize("hang_at", [1, 3], ids=["first-request", "mid-split"])
async def test_cancel_mid_request_releases_every_lease(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, hang_at: int
) -> None:
    """Cancelling the sender while a request is in flight hands every leased row back, unchanged."""
    in_flight = trio.Event()

    async def hang(seen: Seen) -> Reply:
        in_flight.set()
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    script: list[Script] = [413] * (hang_at - 1)
    script.append(hang)
    capture = FakeCapture(*script)
    async with rig_for(tmp_path, capture) as rig:
        await rig.enqueue(KEY_A, labels("A", 4))
        await rig.start()
        await in_flight.wait()
        leased = [owner for *_, owner in rig.rows()]
        await rig.stop()
        rows_after = rig.rows()
        stopped = await rig.status()

        await rig.start()  # the next run delivers everything
        await settle()
        final = await rig.status()

    assert all(owner is not None for owner in leased)
    assert len(leased) == 4
    assert [(retries, owner) for _, _, retries, owner in rows_after] == [(0, None)] * 4
    assert stopped.queued == 4
    assert sum(stopped.dropped.values()) == 0
    assert (final.delivered, final.queued) == (4, 0)


# ---- hand-over between processes ---------------------------------------------------------------


@contextlib.contextmanager
def live_holder(db_path: Path) -> Iterator[tuple[Store, subprocess.Popen[bytes]]]:
    """A second store on the queue whose leases belong to a live child process: another
    sidecar, as far as the sender can tell. The child is killed and reaped on the way out."""
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        owner = LeaseOwner(child.pid, psutil.Process(child.pid).create_time())
        holder = Store(db_path, owner=owner)
        try:
            yield holder, child
        finally:
            holder.close()
    finally:
        child.kill()
        child.wait()


def lease_owners(db_path: Path) -> list[str | None]:
    """The lease owner of each queued row, oldest first, via a side connection."""
    with contextlib.closing(sqlite3.connect(db_path)) as db:
        return [row[0] for row in db.execute(
            "SELECT lease_owner FROM ph_event_queue ORDER BY id"
        )]


async def test_rows_a_live_process_hands_back_go_out_at_the_next_look_and_idle_means_no_looks(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """While another live process holds rows the idle sender looks every RECHECK_S and sends
    them within RECHECK_S of their hand-back; with nothing foreign held it never looks."""
    capture = FakeCapture()
    async with rig_for(tmp_path, capture) as rig:
        assert isinstance(rig.store, StillClockStore)
        with live_holder(rig.config.db_path) as (holder, _):
            await rig.enqueue(KEY_A, ["A0", "A1"])
            held = probe.claim(holder, 10, max_bytes=1 << 20)
            assert held is not None
            await rig.start()
            rig.sender.wake()
            await settle()
            calls_before = rig.store.calls
            await trio.sleep(10 * RECHECK_S)
            looks_while_held = rig.store.calls - calls_before
            assert capture.requests == []

            handed_back_at = trio.current_time()
            holder.release(held.ids, count_retry=False)
            await capture.wait_for(1)
            await settle()
            calls_before = rig.store.calls
            await trio.sleep(3600)
            calls_when_idle = rig.store.calls - calls_before

    assert 9 <= looks_while_held <= 10
    assert handed_back_at <= capture.requests[0].at <= handed_back_at + RECHECK_S + EPS
    assert capture.requests[0].labels == ["A0", "A1"]
    assert calls_when_idle == 0


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pidfds are Linux's")
async def test_a_holder_that_ends_is_followed_through_its_pidfd_without_a_look(
    mock_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """On Linux the wait ends the moment the holder's process does, with no re-check (virtual
    time stands still), and its leases are taken back."""
    db_path = tmp_path / "telemetry.db"
    store = StillClockStore(db_path)
    handover = Handover(store, use_pidfd=True)
    ended = trio.Event()
    try:
        with live_holder(db_path) as (holder, child):
            holder.enqueue(KEY_A, ["{}", "{}"], max_queue=10)
            assert probe.claim(holder, 10, max_bytes=1 << 20) is not None
            holdings = await handover.look([])
            assert not holdings.free
            assert list(holdings.holders) == [holder.owner.token]
            async with trio.open_nursery() as nursery:

                async def follow() -> None:
                    await handover.wait_for_let_go(holdings.holders, [])
                    ended.set()

                nursery.start_soon(follow)
                await settle()
                assert not ended.is_set()
                child.kill()
                child.wait()  # gone and reaped: its pidfd is readable from now on
                for _ in range(100_000):  # bounded: each checkpoint polls for I/O
                    if ended.is_set():
                        break
                    await trio.lowlevel.checkpoint()
                assert ended.is_set()
                assert trio.current_time() == 0.0
    finally:
        await store.aclose()
    assert lease_owners(db_path) == [None, None]


async def test_without_pidfds_a_holder_that_ends_is_seen_at_the_next_look(
    mock_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """Where there is no pidfd, the re-check notices the holder's end within RECHECK_S and takes
    its leases back; before that look the wait goes on."""
    db_path = tmp_path / "telemetry.db"
    store = StillClockStore(db_path)
    handover = Handover(store, use_pidfd=False)
    ended_at: list[float] = []
    try:
        with live_holder(db_path) as (holder, child):
            holder.enqueue(KEY_A, ["{}"], max_queue=10)
            assert probe.claim(holder, 10, max_bytes=1 << 20) is not None
            holdings = await handover.look([KEY_B])
            async with trio.open_nursery() as nursery:

                async def follow() -> None:
                    await handover.wait_for_let_go(holdings.holders, [KEY_B])
                    ended_at.append(trio.current_time())

                nursery.start_soon(follow)
                await settle()
                mock_clock.jump(RECHECK_S)
                await settle()
                assert ended_at == []  # looked once: still held by a live process
                child.kill()
                child.wait()
                await settle()
                assert ended_at == []
                mock_clock.jump(RECHECK_S)
                await settle()
    finally:
        await store.aclose()
    assert ended_at == [2 * RECHECK_S]
    assert lease_owners(db_path) == [None]


async def test_a_look_takes_back_the_stale_leases_of_a_live_holder(tmp_path: Path) -> None:
    """A live process holding a lease past STALE_LEASE_S counts as hung: the look takes the
    rows back and finds them free; a younger lease of the same process is left alone."""
    db_path = tmp_path / "telemetry.db"
    store = StillClockStore(db_path)
    handover = Handover(store, use_pidfd=False)
    try:
        with live_holder(db_path) as (holder, _):
            holder.enqueue(KEY_A, ["{}", "{}"], max_queue=10)
            young = time.time()
            assert probe.claim(holder, 1, max_bytes=1 << 20, now=young) is not None
            before = await handover.look([])
            assert probe.claim(holder, 1, max_bytes=1 << 20,
                               now=young - STALE_LEASE_S - 1) is not None
            after = await handover.look([])
    finally:
        await store.aclose()
    assert (before.free, list(before.holders)) == (True, [holder.owner.token])
    assert after.free
    assert after.holders == {holder.owner.token: young}
    assert lease_owners(db_path) == [holder.owner.token, None]


async def test_a_transport_that_cannot_be_made_fails_like_no_connection(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    """When no transport can be made (the environment names a proxy that cannot be used), each
    attempt fails as a connection that could not be made: uncounted, nothing dropped, the
    event kept and free, `last_error` saying why; later attempts try to make it again."""
    made: list[float] = []
    reason = "the proxy ftp://proxy.invalid:21 cannot be used (no such kind)"

    def unusable() -> httpx.AsyncBaseTransport:
        made.append(trio.current_time())
        raise TransportUnavailable(reason)

    capture = FakeCapture()
    async with rig_for(tmp_path, capture, make_transport=unusable) as rig:
        await rig.enqueue(KEY_A, ["A0"])
        await rig.start()
        await trio.sleep(600)
        await settle()
        status = await rig.status()
        rows = [(retries, owner) for _, _, retries, owner in rig.rows()]

    assert len(made) >= 3
    assert capture.requests == []
    assert status.last_error == f"cannot connect to capture: {reason}"
    assert (status.queued, status.delivered) == (1, 0)
    assert rows == [(0, None)]
