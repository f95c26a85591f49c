"""PostHog's /batch/ wire format and what its answers mean, free of I/O.

Request bodies are spliced from the stored JSON text of each event rather than re-encoded:
the queue already holds normalised, compact JSON. They are compressed before the attempt's
`sent_at` is known (see `BodyDraft`).
"""

from __future__ import annotations

import email.utils
import enum
import json
import math
import random
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

GZIP_LEVEL = 6
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip member, not a bare zlib stream


class BodyDraft:
    """A request body compressed up to its last field, finished at the attempt.

    The document is `{"api_key", "batch", "sent_at"}` with `sent_at` last, so everything but
    the attempt's own time can be compressed ahead of it (in the store's thread, while the
    previous request is on the wire); `finish` deflates only the time and writes the trailer.
    A draft is finished once: a second attempt at the same events builds a new draft.
    (Copying the deflate stream to finish it twice costs more than compressing afresh.)
    """

    __slots__ = ("_head", "_stream")

    def __init__(self, api_key: str, bodies: Sequence[str]) -> None:
        """Compress the document up to the value of `sent_at`."""
        text = '{"api_key":%s,"batch":[%s],"sent_at":"' % (  # noqa: UP031
            json.dumps(api_key),
            ",".join(bodies),
        )
        self._stream: zlib._Compress | None = zlib.compressobj(
            GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS
        )
        # The sync flush makes deflate do all its work on the batch now: without it, most of
        # the input waits in the stream and `finish` compresses it.
        self._head = self._stream.compress(text.encode("utf-8")) + self._stream.flush(
            zlib.Z_SYNC_FLUSH
        )

    def finish(self, sent_at: datetime) -> bytes:
        """The whole gzip body with `sent_at` (milliseconds, UTC, `Z`); only once."""
        stream, self._stream = self._stream, None
        if stream is None:
            raise RuntimeError("this body was finished already")
        stamp = sent_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._head + stream.compress(f'{stamp}"}}'.encode("ascii")) + stream.flush()


class Outcome(enum.Enum):
    """What to do with a batch after one attempt."""

    DELIVERED = "delivered"
    RETRY = "retry"  # 408, 429, 5xx, timeouts, other surprises: counted against --max-retries
    OFFLINE = "offline"  # no connection could be made: retried forever, not counted
    SPLIT_TOO_LARGE = "too_large"  # 413: halve; a lone event is dropped
    SPLIT_BAD_REQUEST = "bad_request"  # 400: halve to isolate the bad events
    HOLD = "hold"  # 401/403: keep the events, wait for a better key or a restart


@dataclass(frozen=True, slots=True)
class Verdict:
    """The classified answer: the outcome, a Retry-After minimum if any, and a short reason."""

    outcome: Outcome
    reason: str
    retry_after_s: float | None = None


def classify_status(
    status: int, retry_after: str | None = None, *, now: datetime | None = None
) -> Verdict:
    """Map an HTTP status (and its Retry-After header) to what the sender does next."""
    reason = f"HTTP {status} from capture"
    if 200 <= status < 300:
        return Verdict(Outcome.DELIVERED, "ok")
    if status == 413:
        return Verdict(Outcome.SPLIT_TOO_LARGE, reason)
    if status == 400:
        return Verdict(Outcome.SPLIT_BAD_REQUEST, reason)
    if status in (401, 403):
        return Verdict(Outcome.HOLD, reason)
    # 408, 429, 5xx, and anything unexpected (a 404 from a mistyped self-hosted URL, a proxy's
    # 3xx): retry a bounded number of times rather than drop at once or loop forever.
    return Verdict(Outcome.RETRY, reason, parse_retry_after(retry_after, now=now))


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header: delta-seconds or an HTTP date; None if absent
    or unreadable. Negative values and past dates mean 0."""
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
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    current = now or datetime.now(UTC)
    return max(0.0, (when - current).total_seconds())


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

    def delay(
        self,
        failures: int,
        retry_after_s: float | None = None,
        rng: random.Random | None = None,
    ) -> float:
        """The jittered delay in [nominal/2, nominal], raised to Retry-After (itself capped)."""
        nominal = self.nominal(failures)
        uniform = (rng or random).uniform
        jittered = uniform(nominal / 2, nominal)
        if retry_after_s is not None:
            jittered = max(jittered, min(retry_after_s, self.retry_after_max_s))
        return jittered
