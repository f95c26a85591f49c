"""The delivery rules, free of I/O: what one answer from capture means for the events in hand.

`decide` takes what came back for one request (a `Response`, or a `TransportFailure` when no
answer came), the events the request carried, the sender's failure streak and the `Rules`, and
returns a `Decision` for the sender to carry out:

- `Complete`: 2xx; delete the events, count them delivered.
- `Split`: 400 or 413 about several events; send each half on its own, at once.
- `Drop`: 400 or 413 about one event; it leaves the queue, counted as rejected.
- `Hold`: 401/403; keep the events (released uncounted) and claim none of the key for a while.
- `Retry`: anything else; release the events and wait before the next attempt. 408, 429, 5xx,
  timeouts and lost connections count against `max_retries` (events past it are dropped);
  a connection that could not be made does not count.

Nothing here reads a clock or a random source of its own: the caller passes the wall clock a
Retry-After date is measured against and the `random.Random` the jitter comes from.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sidecar.queue.store import DropReason, QueuedEvent

# ---- what came back ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Response:
    """Capture answered: the status and the raw `Retry-After` header, if any."""

    status: int
    retry_after: str | None = None


class FailureKind(enum.Enum):
    """Why no answer came."""

    # No connection could be made: offline, refused, DNS, TLS handshake, or a proxy setting
    # that cannot be used (see `TransportUnavailable`).
    CONNECT = "connect"
    TIMEOUT = "timeout"  # connected, but the answer did not come in time
    LOST = "lost"  # the connection broke while the request was on it


class TransportUnavailable(Exception):
    """No transport to capture can be made: the proxy the environment names is of a kind, or
    in a form, that cannot be used. Each attempt then fails as a connection that could not be
    made (uncounted, events kept), with this message, rather than ending the process."""


@dataclass(frozen=True, slots=True)
class TransportFailure:
    """No answer came: the kind of failure and its detail (the error's name, and what TLS said
    when the handshake is what failed)."""

    kind: FailureKind
    detail: str


Answer = Response | TransportFailure


# ---- what to do ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Complete:
    """2xx: delete the events in hand and count them delivered."""


COMPLETE = Complete()  # it carries nothing, so every 2xx shares it


@dataclass(frozen=True, slots=True)
class Split:
    """400 or 413 about several events: send `first`, then `second`, each on its own, at once."""

    first: tuple[QueuedEvent, ...]
    second: tuple[QueuedEvent, ...]


@dataclass(frozen=True, slots=True)
class Drop:
    """The events in hand leave the queue undelivered, counted under `reason`; `message` is the
    last error to record."""

    reason: DropReason
    message: str


@dataclass(frozen=True, slots=True)
class Hold:
    """401/403: release the events uncounted and claim no event of their key for `seconds`."""

    seconds: float
    message: str


@dataclass(frozen=True, slots=True)
class Retry:
    """Release the events and make the next attempt after `delay` seconds.

    With `counted`, the failure counts against each event, and the events in `exhausted` (ids)
    have now failed more than `max_retries` times: they are dropped, not released.
    """

    counted: bool
    delay: float
    exhausted: tuple[int, ...]
    message: str


Decision = Complete | Split | Drop | Hold | Retry


# ---- the rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter that never goes below half the nominal delay."""

    base_s: float = 1.0
    max_s: float = 30.0
    retry_after_max_s: float = 3600.0

    def nominal(self, failures: int) -> float:
        """The delay before retry number `failures` (1-based), before jitter."""
        exponent = min(max(failures, 1) - 1, 62)
        return min(self.base_s * (2.0**exponent), self.max_s)

    def delay(self, failures: int, retry_after_s: float | None, rng: random.Random) -> float:
        """The jittered delay in [nominal/2, nominal], raised to Retry-After (itself capped)."""
        nominal = self.nominal(failures)
        jittered = rng.uniform(nominal / 2, nominal)
        if retry_after_s is not None:
            jittered = max(jittered, min(retry_after_s, self.retry_after_max_s))
        return jittered


@dataclass(frozen=True, slots=True)
class Rules:
    """The settings the delivery rules read (from `--max-retries`, `--backoff-*`,
    `--retry-after-max` and `--auth-hold`)."""

    max_retries: int = 5
    auth_hold_s: float = 600.0
    backoff: Backoff = Backoff()


def decide(
    answer: Answer,
    events: Sequence[QueuedEvent],
    *,
    failures: int,
    rules: Rules,
    wall: Callable[[], datetime],
    rng: random.Random,
) -> Decision:
    """What to do with `events` after `answer`, the sender having failed `failures` times in a
    row before it. A Retry-After date is measured from `wall()`, read only for one."""
    if isinstance(answer, TransportFailure):
        # Connected but unanswered, or cut off: the server may be the problem, so it counts.
        # Never connected: the device is offline (or the host unreachable), which waits, uncounted.
        counted = answer.kind is not FailureKind.CONNECT
        return _retry(
            events, _failure_message(answer), counted=counted, retry_after_s=None,
            failures=failures, rules=rules, rng=rng,
        )
    status = answer.status
    if 200 <= status < 300:
        return COMPLETE
    message = f"HTTP {status} from capture"
    if status in (400, 413):
        # 413: the batch is too large; 400: some event in it is bad. Halving isolates either.
        if len(events) == 1:
            return Drop(DropReason.REJECTED, f"{message}: dropped 1 event the server refused")
        middle = len(events) // 2
        return Split(tuple(events[:middle]), tuple(events[middle:]))
    if status in (401, 403):
        return Hold(rules.auth_hold_s, message)
    # 408, 429, 5xx, and anything unexpected (a 404 from a mistyped self-hosted URL, a proxy's
    # 3xx): retry a bounded number of times rather than drop at once or loop forever.
    retry_after_s = parse_retry_after(answer.retry_after, wall=wall)
    return _retry(
        events, message, counted=True, retry_after_s=retry_after_s,
        failures=failures, rules=rules, rng=rng,
    )


def failures_after(decision: Decision, failures: int) -> int:
    """The sender's failure streak after carrying out `decision` (it sets the backoff's step):
    a retry extends it, a hold leaves it, an answer about the events themselves ends it."""
    if isinstance(decision, Retry):
        return failures + 1
    if isinstance(decision, Hold):
        return failures
    return 0


def _retry(
    events: Sequence[QueuedEvent],
    message: str,
    *,
    counted: bool,
    retry_after_s: float | None,
    failures: int,
    rules: Rules,
    rng: random.Random,
) -> Retry:
    delay = rules.backoff.delay(failures + 1, retry_after_s, rng)
    # An event that has failed `max_retries` times before has now failed once more than allowed.
    exhausted = (
        tuple(event.id for event in events if event.retry_count >= rules.max_retries)
        if counted
        else ()
    )
    return Retry(counted, delay, exhausted, message)


def _failure_message(failure: TransportFailure) -> str:
    if failure.kind is FailureKind.CONNECT:
        return f"cannot connect to capture: {failure.detail}"
    if failure.kind is FailureKind.TIMEOUT:
        return f"capture timed out: {failure.detail}"
    return f"connection to capture lost: {failure.detail}"


def parse_retry_after(value: str | None, *, wall: Callable[[], datetime]) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date measured from
    `wall()`; None if absent or unreadable. Negative values and past dates mean 0."""
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            return None
        return max(0.0, seconds)
    import email.utils  # noqa: PLC0415 - an HTTP date is rare; its parser loads when one comes

    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - wall()).total_seconds())
