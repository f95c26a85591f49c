"""The delivery fault matrix: scenarios, a runner over the real process, and what each one shows.

Each series runs one sidecar against one fake capture server and plays its scenarios one after
another: script the server's answers, send a few tagged events, wait until the queue is empty
and the server has seen the requests the scenario needs, then read back what happened from the
server's own records (requests, accepted events, arrival times) and from `ph_status` (drop
counters). Nothing here asserts; the tests and `bench/reliability/fault_matrix.py` do.

Delays are checked only from below, with the server's arrival times: a retry may come late on a
loaded machine, but never before the backoff floor or the server's Retry-After.
"""

from __future__ import annotations

import email.utils
import itertools
import math
import random
import string
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fm_support import (
    HangUpListener,
)

from sidecar_dev.capture import (
    Answer,
    CaptureServer,
    Delay,
    DropConnection,
    Hang,
    Normal,
    ReceivedRequest,
    ResetMidBody,
    Status,
)
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import (
    FAST_BACKOFF_BASE_S,
    FAST_BACKOFF_MAX_S,
    FAST_RETRIES,
    GUARD_S,
    TEST_KEY,
    RefusingPort,
    numbered,
    numbered_event,
    wait_drained,
    wait_until,
)

RETRY_AFTER_MAX_S = 2.5
RETRYABLE = (408, 429, 500, 502, 503, 504)
DROP_REASONS = ("overflow", "rejected", "retries_exhausted", "opt_out")
# Timestamps in logs and HTTP dates are read back with a clock of the test; this much slack
# covers rounding, never a slow machine (which only makes gaps longer).
CLOCK_SLACK_S = 0.01


def backoff_floor(
    failures: int, base: float = FAST_BACKOFF_BASE_S, cap: float = FAST_BACKOFF_MAX_S
) -> float:
    """The shortest delay the sidecar may wait after `failures` failures in a row."""
    return min(base * 2.0 ** (max(failures, 1) - 1), cap) / 2


def no_wait(failures: int) -> float:
    """400 and 413 halves go out at once: no lower bound on the gap."""
    return 0.0


def fast_args(*extra: str) -> tuple[str, ...]:
    """Options for a fast series: short backoffs and a short Retry-After cap."""
    return (
        *FAST_RETRIES, "--retry-after-max", str(RETRY_AFTER_MAX_S), *extra,
    )


# ---- scenarios ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryAfter:
    """One Retry-After variant: the header text (made when the scenario starts) and what it asks.

    `asks` maps (the wall-clock time the header was made) to the delay the server asked for, in
    seconds after its answer, before the cap; None when the header must be ignored.
    """

    label: str
    header: Callable[[float], str | None]
    asks: Callable[[float], float | None]
    absolute: bool = False  # an HTTP date: a point in time, not a delay after the answer


def _http_date(at: float) -> str:
    return email.utils.formatdate(at, usegmt=True)


RETRY_AFTERS: tuple[RetryAfter, ...] = (
    RetryAfter("none", lambda now: None, lambda now: None),
    RetryAfter("seconds 1", lambda now: "1", lambda now: 1.0),
    RetryAfter("seconds 0.6 (fraction)", lambda now: "0.6", lambda now: 0.6),
    # Whole seconds (an HTTP date has no fraction), one to two seconds ahead.
    RetryAfter(
        "HTTP date +1..2 s",
        lambda now: _http_date(math.ceil(now) + 1),
        lambda now: float(math.ceil(now) + 1),
        absolute=True,
    ),
    RetryAfter("huge 999999999", lambda now: "999999999", lambda now: 999999999.0),
    RetryAfter(
        "HTTP date year 9999",
        lambda now: "Fri, 31 Dec 9999 23:59:59 GMT",
        lambda now: 1e12,
    ),
    RetryAfter("negative -5", lambda now: "-5", lambda now: 0.0),
    RetryAfter("HTTP date in the past", lambda now: "Thu, 01 Jan 1970 00:00:00 GMT",
               lambda now: 0.0),
    RetryAfter("garbage 'soon, please'", lambda now: "soon, please", lambda now: None),
    RetryAfter("overflow 1e999 (inf)", lambda now: "1e999", lambda now: None),
    RetryAfter("nan", lambda now: "nan", lambda now: None),
    RetryAfter("empty", lambda now: "", lambda now: None),
)


@dataclass
class Scenario:
    """A fault played against a batch of `events` tagged events.

    `answers` are scripted in order (after them the server answers normally, or with `default`
    for the whole scenario). `expect_*` state what the delivery rules require; `gap_floors`
    gives, per failed request, the shortest wait before the next one (None: no bound).
    """

    name: str
    group: str
    answers: Sequence[Answer] = ()
    events: int = 3
    make_events: Callable[[str], list[dict[str, Any]]] | None = None
    expect_requests: int | None = None
    expect_delivered: int | None = None
    expect_dropped: dict[str, int] = field(default_factory=dict)
    expect_duplicates: int = 0
    expect_resent_after_2xx: int = 0  # nonzero only when a 2xx never reached the sidecar
    retry_after: RetryAfter | None = None
    floor_after_failure: Callable[[int], float] = backoff_floor
    extra_floor_s: float = 0.0  # added to every gap floor (e.g. a request timeout)
    note: str = ""


@dataclass
class Row:
    """What one scenario did, from the server's records and the sidecar's counters."""

    group: str
    scenario: str
    sent: int
    requests: int
    statuses: list[str]
    delivered: int
    duplicates: int
    dropped: dict[str, int]
    asked_s: float | None  # the Retry-After the sidecar had to honour (after its cap), if any
    gaps: list[float]  # arrival gap after each failed request
    floors: list[float]  # the lower bound for each gap
    status_next_attempt_s: float | None  # largest ph_status next_attempt_in_s seen while waiting
    resent_after_2xx: int  # events that went out again after a 2xx had taken them
    resent_after_drop: int  # events that went out again after the sidecar had dropped them
    same_identity_on_retry: bool  # every resend carried the same uuid and timestamp
    expect: Scenario
    note: str = ""

    @property
    def min_gap_s(self) -> float | None:
        """The shortest wait observed after a failure."""
        return min(self.gaps) if self.gaps else None

    @property
    def floor_violations(self) -> list[tuple[float, float]]:
        """(gap, floor) pairs where the sidecar came back too soon."""
        return [(g, f) for g, f in zip(self.gaps, self.floors, strict=True) if g < f]


def batch_of(request: ReceivedRequest) -> list[dict[str, Any]]:
    """The events a request carried (empty when its body could not be read, e.g. a reset)."""
    payload = request.payload
    if isinstance(payload, dict) and isinstance(payload.get("batch"), list):
        return payload["batch"]
    return []


def _label(request: ReceivedRequest) -> str:
    return str(request.status) if request.status is not None else request.outcome.value


def _failed(request: ReceivedRequest) -> bool:
    return request.status is None or not 200 <= request.status < 300


class Series:
    """One sidecar and one capture server, playing scenarios one at a time."""

    def __init__(self, proc: SidecarProcess, server: CaptureServer, *, cap_s: float) -> None:
        self.proc = proc
        self.server = server
        self.cap_s = cap_s
        self._seq = 0

    def play(self, scenario: Scenario) -> Row:
        """Run one scenario to its end and describe it."""
        self._seq += 1
        tag = f"{scenario.group}/{scenario.name}#{self._seq}"
        server, proc = self.server, self.proc
        before = proc.result("ph_status")["dropped"]
        start = len(server.requests)
        wall_at_script = time.time()
        mono_at_script = time.monotonic()
        answers = list(scenario.answers)
        if scenario.retry_after is not None:
            header = scenario.retry_after.header(wall_at_script)
            headers = {} if header is None else {"Retry-After": header}
            answers = [
                Status(a.code, a.body, headers) if isinstance(a, Status) else a for a in answers
            ]
        server.script(*answers)
        events = (
            scenario.make_events(tag) if scenario.make_events
            else numbered(scenario.events, scenario=tag)
        )
        answer = proc.result("ph_send_batch", {"batch": events})
        assert answer["accepted"] == len(events), answer

        largest_next = self._watch_next_attempt(scenario, start)
        wait_drained(proc)
        if scenario.expect_requests is not None:
            server.wait_for_requests(start + scenario.expect_requests, timeout=GUARD_S)
        wait_until(lambda: server.script_remaining == 0, "the script to be used up")
        after = proc.result("ph_status")["dropped"]
        # In arrival order (a late answer can be recorded after the retry that overtook it).
        requests = sorted(server.requests[start:], key=lambda r: r.received_at)
        return self._describe(
            scenario, events=events, requests=requests, before=before, after=after,
            largest_next=largest_next, wall_at_script=wall_at_script,
            mono_at_script=mono_at_script,
        )

    def _watch_next_attempt(self, scenario: Scenario, start: int) -> float | None:
        """For a capped Retry-After: read ph_status while the retry is awaited."""
        ra = scenario.retry_after
        now = time.time()
        wants = None if ra is None else ra.asks(now)
        if ra is not None and ra.absolute and wants is not None:
            wants -= now
        if wants is None or wants < self.cap_s:
            return None
        largest: float | None = None
        self.server.wait_for_requests(start + 1, timeout=GUARD_S)
        while len(self.server.requests) < start + 2:
            value = self.proc.result("ph_status")["next_attempt_in_s"]
            if value is not None:
                largest = value if largest is None else max(largest, value)
            time.sleep(0.05)
        return largest

    def _describe(
        self,
        scenario: Scenario,
        *,
        events: list[dict[str, Any]],
        requests: list[ReceivedRequest],
        before: dict[str, int],
        after: dict[str, int],
        largest_next: float | None,
        wall_at_script: float,
        mono_at_script: float,
    ) -> Row:
        accepted = [e for r in requests if not _failed(r) for e in r.events]
        by_uuid = Counter(e["uuid"] for e in accepted)
        gaps: list[float] = []
        floors: list[float] = []
        failures = 0
        asked: float | None = None
        for i, request in enumerate(requests[:-1]):
            if not _failed(request):
                failures = 0
                continue
            failures += 1
            floor = scenario.floor_after_failure(failures) + scenario.extra_floor_s
            ra = scenario.retry_after
            if ra is not None and i == 0 and (wants := ra.asks(wall_at_script)) is not None:
                if ra.absolute:
                    # A point in time: the next request may not arrive before it.
                    at_mono = wants - (wall_at_script - mono_at_script)
                    wait = min(at_mono - request.received_at, self.cap_s) - CLOCK_SLACK_S
                else:
                    wait = min(wants, self.cap_s)
                asked = max(0.0, wait)
                floor = max(floor, wait)
            gaps.append(requests[i + 1].received_at - request.received_at)
            floors.append(floor)
        return Row(
            group=scenario.group,
            scenario=scenario.name,
            sent=len(events),
            requests=len(requests),
            statuses=[_label(r) for r in requests],
            delivered=len(by_uuid),
            duplicates=sum(n - 1 for n in by_uuid.values()),
            dropped={k: after[k] - before[k] for k in DROP_REASONS if after[k] != before[k]},
            asked_s=asked,
            gaps=gaps,
            floors=floors,
            status_next_attempt_s=largest_next,
            resent_after_2xx=_resent_after_2xx(requests),
            resent_after_drop=_resent_after_drop(requests, scenario),
            same_identity_on_retry=_same_identity(requests),
            expect=scenario,
            note=scenario.note,
        )


def _resent_after_2xx(requests: Sequence[ReceivedRequest]) -> int:
    taken: set[str] = set()
    resent = 0
    for request in requests:
        uuids = {e["uuid"] for e in batch_of(request)}
        resent += len(uuids & taken)
        if not _failed(request):
            taken |= uuids
    return resent


def _resent_after_drop(requests: Sequence[ReceivedRequest], scenario: Scenario) -> int:
    """Events sent again after a lone 400/413 (which drops them)."""
    gone: set[str] = set()
    resent = 0
    for request in requests:
        batch = batch_of(request)
        uuids = {e["uuid"] for e in batch}
        resent += len(uuids & gone)
        if len(batch) == 1 and request.status in (400, 413):
            gone |= uuids
    return resent


def _same_identity(requests: Sequence[ReceivedRequest]) -> bool:
    seen: dict[str, str] = {}
    for request in requests:
        for e in batch_of(request):
            if seen.setdefault(e["uuid"], e["timestamp"]) != e["timestamp"]:
                return False
    return True


# ---- the series ------------------------------------------------------------------------------


def status_scenarios(code: int, retry_afters: Sequence[RetryAfter]) -> list[Scenario]:
    """One failure with each Retry-After variant then success; then failures until the drop."""
    scenarios = [
        Scenario(
            name=f"{code} Retry-After {ra.label}",
            group=f"{code}",
            answers=[Status(code)],
            expect_requests=2,
            expect_delivered=3,
            retry_after=ra,
        )
        for ra in retry_afters
    ]
    scenarios.append(
        Scenario(
            name=f"{code} every time (--max-retries 1)",
            group=f"{code}",
            answers=[Status(code), Status(code)],
            expect_requests=2,
            expect_delivered=0,
            expect_dropped={"retries_exhausted": 3},
        )
    )
    return scenarios


def play_in_one_process(
    folder: Path, scenarios: Iterable[Scenario], *options: str, **server_options: Any
) -> list[Row]:
    """Play `scenarios` in turn against one capture server (`server_options`) and one sidecar
    (the fast options plus `options`), which must then exit 0; their rows, in order."""
    with (
        CaptureServer(**server_options) as server,
        SidecarProcess(folder, server.url, *fast_args(*options), api_key=TEST_KEY) as proc,
    ):
        series = Series(proc, server, cap_s=RETRY_AFTER_MAX_S)
        rows = [series.play(scenario) for scenario in scenarios]
        assert proc.stop() == 0, proc.stderr
    return rows


def run_status_series(code: int, folder: Path, retry_afters: Sequence[RetryAfter]) -> list[Row]:
    """Every Retry-After variant for one retryable status, in one process."""
    return play_in_one_process(folder, status_scenarios(code, retry_afters), "--max-retries", "1")


def run_status_matrix(
    folder: Path, codes: Sequence[int] = RETRYABLE,
    retry_afters: Sequence[RetryAfter] = RETRY_AFTERS,
) -> list[Row]:
    """All retryable statuses, one process each, the processes side by side."""
    with ThreadPoolExecutor(max_workers=len(codes)) as pool:
        futures = [
            pool.submit(run_status_series, code, folder / str(code), retry_afters)
            for code in codes
        ]
        return [row for f in futures for row in f.result()]


def other_status_scenarios() -> list[Scenario]:
    """2xx variants (never resent) and unexpected statuses (retried, counted)."""
    ok = [
        Scenario(f"2xx {label}", "2xx", answers=[answer], expect_requests=1, expect_delivered=3)
        for label, answer in (
            ("200 PostHog body", Normal()),
            ("200 body not JSON", Status(200, body="<html>ok</html>")),
            ("201", Status(201)),
            ("202 empty body", Status(202, body=b"")),
            ("204", Status(204)),
        )
    ]
    odd = [
        Scenario(
            f"{label} then 200", "other", answers=[answer], expect_requests=2,
            expect_delivered=3, note="retried as a server error (counted)",
        )
        for label, answer in (
            ("404", Status(404)),
            ("302 to elsewhere", Status(302, headers={"Location": "http://127.0.0.1:9/batch/"})),
            ("501", Status(501)),
            ("599", Status(599)),
            ("418", Status(418)),
        )
    ]
    return ok + odd


def run_other_statuses(folder: Path) -> list[Row]:
    """2xx and unexpected statuses in one process."""
    return play_in_one_process(folder, other_status_scenarios(), "--max-retries", "1")


# ---- 400: isolating poisoned events --------------------------------------------------------------


def split_requests(poisoned: Sequence[bool]) -> int:
    """Requests the halving rule makes for a batch with these poisoned positions."""
    if len(poisoned) == 1 or not any(poisoned):
        return 1
    middle = len(poisoned) // 2
    return 1 + split_requests(poisoned[:middle]) + split_requests(poisoned[middle:])


def poison_scenario(size: int, positions: Sequence[int]) -> Scenario:
    """A batch of `size` events where those at `positions` make PostHog answer 400."""
    flags = [i in positions for i in range(size)]

    def make(tag: str) -> list[dict[str, Any]]:
        events = numbered(size, scenario=tag)
        for i in positions:
            events[i]["properties"]["$cookieless_mode"] = "yes"  # PostHog: 400, whole request
        return events

    return Scenario(
        name=f"400: {len(positions)} poisoned of {size} at {list(positions)}",
        group="400",
        events=size,
        make_events=make,
        expect_requests=split_requests(flags),
        expect_delivered=size - len(positions),
        expect_dropped={"rejected": len(positions)} if positions else {},
        floor_after_failure=no_wait,
    )


POISON_CASES: tuple[tuple[int, tuple[int, ...]], ...] = (
    (8, (0,)),
    (8, (3,)),
    (8, (7,)),
    (8, (1, 6)),
    (8, (2, 3)),
    (2, (0, 1)),
    (1, (0,)),
    (50, (4, 17, 49)),
)


def run_poison(
    folder: Path, cases: Sequence[tuple[int, Sequence[int]]] = POISON_CASES
) -> list[Row]:
    """Each poisoned batch in turn, one process."""
    return play_in_one_process(folder, [poison_scenario(size, pos) for size, pos in cases])


# ---- 413: mixed sizes against a small body cap ---------------------------------------------------

BODY_CAP = 6_000  # bytes of (gzip) body the fake takes before answering 413


def _noise(rng: random.Random, n: int) -> str:
    # Letters and digits compress to ~75%: sizes on the wire stay close to the text's.
    return "".join(rng.choices(string.ascii_letters + string.digits, k=n))


SIZES = {"small": 200, "medium": 2_500, "big": 12_000}
MIXES: tuple[tuple[str, ...], ...] = (
    ("small",) * 4 + ("medium",) * 3 + ("big",) * 2,
    ("big", "small", "medium", "big", "small", "medium", "small", "medium"),
    ("big",),
    ("medium",) * 6,
)


def size_scenario(mix: Sequence[str], seed: int) -> Scenario:
    """A batch of events of these sizes; every big one is too large even alone."""
    def make(tag: str) -> list[dict[str, Any]]:
        rng = random.Random(seed)
        return [numbered_event(i, scenario=tag, pad=_noise(rng, SIZES[kind]), kind=kind)
                for i, kind in enumerate(mix)]

    bigs = mix.count("big")
    return Scenario(
        name=f"413: {len(mix)} events ({', '.join(f'{mix.count(k)} {k}' for k in SIZES)})",
        group="413",
        events=len(mix),
        make_events=make,
        expect_delivered=len(mix) - bigs,
        expect_dropped={"rejected": bigs} if bigs else {},
        floor_after_failure=no_wait,
    )


def run_sizes(folder: Path) -> list[Row]:
    """Mixed-size batches against a capture server with a small body cap."""
    scenarios = [size_scenario(mix, seed) for seed, mix in enumerate(MIXES)]
    return play_in_one_process(folder, scenarios, max_body_bytes=BODY_CAP)


# ---- 401/403: holds ------------------------------------------------------------------------------

AUTH_HOLD_S = 1.0


def auth_scenarios() -> list[Scenario]:
    """Refused twice: held each time for --auth-hold, never dropped even with --max-retries 0."""
    return [
        Scenario(
            f"{code} twice (--max-retries 0)",
            "auth",
            answers=[Status(code), Status(code)],
            expect_requests=3,
            expect_delivered=3,
            floor_after_failure=lambda failures: AUTH_HOLD_S,
            note=f"held {AUTH_HOLD_S:g} s each time; holds do not count as retries",
        )
        for code in (401, 403)
    ]


def run_auth(folder: Path) -> list[Row]:
    """401 and 403, one process with a short hold and no retries allowed."""
    return play_in_one_process(
        folder, auth_scenarios(), "--auth-hold", str(AUTH_HOLD_S), "--max-retries", "0"
    )


# ---- the connection misbehaves ------------------------------------------------------------------

REQUEST_TIMEOUT_S = 1.0


def connection_scenarios() -> list[Scenario]:
    """Hangs, resets, drops and slow answers (with --request-timeout 1 and --max-retries 1)."""
    timeout = REQUEST_TIMEOUT_S
    return [
        Scenario("hang once, then 200", "connection", answers=[Hang()], expect_requests=2,
                 expect_delivered=3, extra_floor_s=timeout,
                 note=f"the request times out after {timeout:g} s"),
        Scenario("hang every time", "connection", answers=[Hang(), Hang()], expect_requests=2,
                 expect_delivered=0, expect_dropped={"retries_exhausted": 3},
                 extra_floor_s=timeout),
        Scenario("reset mid-body once", "connection", answers=[ResetMidBody()],
                 expect_requests=2, expect_delivered=3),
        Scenario("reset mid-body every time", "connection",
                 answers=[ResetMidBody(), ResetMidBody()], expect_requests=2,
                 expect_delivered=0, expect_dropped={"retries_exhausted": 3}),
        Scenario("reset before any body byte", "connection", answers=[ResetMidBody(0)],
                 expect_requests=2, expect_delivered=3),
        Scenario("dropped after the body", "connection", answers=[DropConnection()],
                 expect_requests=2, expect_delivered=3),
        Scenario("slow answer (0.3 s) within the timeout", "connection",
                 answers=[Delay(0.3)], expect_requests=1, expect_delivered=3),
        Scenario(
            "200 whose body never completes", "connection",
            answers=[Status(200, body=b'{"status":1}', headers={"Content-Length": "4096"})],
            expect_requests=1, expect_delivered=3,
            note="the status is the verdict: not resent (it was, before the answer was skimmed)",
        ),
        Scenario(
            "answer after the client gave up", "connection",
            answers=[Delay(timeout + 1.0)], expect_requests=2, expect_delivered=3,
            expect_duplicates=3, expect_resent_after_2xx=3, extra_floor_s=timeout,
            note="the late request is accepted too: at-least-once, same uuids",
        ),
    ]


def run_connection(folder: Path) -> list[Row]:
    """Connection faults in one process with a short request timeout."""
    return play_in_one_process(
        folder, connection_scenarios(), "--request-timeout", str(REQUEST_TIMEOUT_S),
        "--max-retries", "1",
    )


# ---- the server is down ------------------------------------------------------------------------


@dataclass
class DownRow:
    """Attempts while the capture host is down, counted over a window."""

    scenario: str
    window_s: float
    attempts: int
    bound: int
    min_gap_s: float
    floor_s: float
    queued_after: int
    delivered_after_recovery: int | None
    counted_by: str

    @property
    def per_minute(self) -> float:
        """Attempts per minute over the window."""
        return self.attempts * 60.0 / self.window_s


def _attempt_bound(window_s: float, floor_s: float) -> int:
    # The first attempts come faster (the backoff grows from base to max): slack for them.
    return int(window_s / floor_s) + 1 + 4


def run_down_hangup(folder: Path, window_s: float = 3.0, spam: bool = True) -> DownRow:
    """A host that accepts and hangs up at once: count the connections it accepts."""
    listener = HangUpListener()
    try:
        args = fast_args("--max-retries", "100000")
        with SidecarProcess(folder, listener.url, *args, api_key=TEST_KEY) as proc:
            proc.result("ph_send_batch", {"batch": numbered(3, scenario="down")})
            wait_until(lambda: len(listener.accept_times()) >= 4, "a few attempts")
            start = listener.accept_times()[-1]
            _spam_until(proc, lambda: time.monotonic() >= start + window_s, spam)
            wait_until(lambda: listener.accept_times()[-1] >= start + window_s,
                          "an attempt after the window")
            times = [t for t in listener.accept_times() if start <= t <= start + window_s]
            status = proc.result("ph_status")
            assert proc.stop() == 0, proc.stderr
    finally:
        listener.close()
    floor = FAST_BACKOFF_MAX_S / 2
    return DownRow(
        scenario="accepts and hangs up (counted retries)",
        window_s=window_s,
        attempts=len(times),
        bound=_attempt_bound(window_s, floor),
        min_gap_s=min(b - a for a, b in itertools.pairwise(times)),
        floor_s=floor,
        queued_after=status["queued"],
        delivered_after_recovery=None,
        counted_by="connections the listener accepted",
    )


def _log_times(stderr: str, needle: str) -> list[float]:
    """The sidecar's own timestamps (asctime, ms) of log lines holding `needle`."""
    from datetime import datetime

    stamps = []
    for line in stderr.splitlines():
        if needle in line:
            stamps.append(datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").timestamp())
    return stamps


def run_down_closed_port(folder: Path, window_s: float = 3.0, spam: bool = True) -> DownRow:
    """A closed port (offline): count failed connects in the sidecar's log, then recover."""
    holder = RefusingPort()
    needle = "cannot connect to capture"
    try:
        with SidecarProcess(folder, holder.url, *fast_args(), api_key=TEST_KEY) as proc:
            proc.result("ph_send_batch", {"batch": numbered(3, scenario="down")})
            wait_until(lambda: proc.stderr.count(needle) >= 4, "a few attempts")
            start = _log_times(proc.stderr, needle)[-1]
            _spam_until(proc, lambda: _log_times(proc.stderr, needle)[-1] >= start + window_s,
                        spam)
            times = [t for t in _log_times(proc.stderr, needle) if start <= t <= start + window_s]
            queued = proc.result("ph_status")["queued"]
            # Back up: the same port now listens, and the queue is delivered.
            holder.close()
            with CaptureServer(port=holder.port) as server:
                server.wait_for_events(3, timeout=GUARD_S)
                wait_drained(proc)
                delivered = len(server.events)
                assert proc.stop() == 0, proc.stderr
    finally:
        holder.close()
    floor = FAST_BACKOFF_MAX_S / 2 - CLOCK_SLACK_S / 5  # log stamps are whole milliseconds
    return DownRow(
        scenario="connection refused (offline, not counted)",
        window_s=window_s,
        attempts=len(times),
        bound=_attempt_bound(window_s, FAST_BACKOFF_MAX_S / 2),
        min_gap_s=min(b - a for a, b in itertools.pairwise(times)),
        floor_s=floor,
        queued_after=queued,
        delivered_after_recovery=delivered,
        counted_by="'cannot connect' lines in the sidecar's stderr (its timestamps)",
    )


def _spam_until(proc: SidecarProcess, done: Callable[[], bool], spam: bool) -> None:
    """Send a small batch every ~20 ms until `done`: new events must not hurry the retries."""
    n = 0
    while not done():
        if spam:
            n += 1
            proc.result("ph_send_batch", {"batch": [numbered_event(n, scenario="spam")]})
        time.sleep(0.02)
