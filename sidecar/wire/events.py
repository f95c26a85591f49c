"""Validate and normalise one PostHog event: pure functions, no I/O, no module state.

`normalize_batch` implements the event contract (README.md, "Protocol", `ph_send_batch`).
Besides that contract, it makes these decisions:

- ``null`` counts as absent: a null ``distinct_id`` falls back to ``properties.distinct_id``, and
  a null ``properties``, ``uuid`` or ``timestamp`` is treated as if the key were missing.
- ``distinct_id`` is written at top level as a string. A top-level value, when present, is used
  even if ``properties.distinct_id`` differs (an invalid top-level value rejects the event rather
  than falling back). Integers become their decimal form (``42`` -> ``"42"``); a float that is a
  whole number below 1e21 becomes the same text as the integer (``42.0`` -> ``"42"``, as
  JavaScript's ``String(42.0)`` gives), any other finite float its shortest round-trip ``repr``
  (``4.5`` -> ``"4.5"``). ``properties.distinct_id`` is left as the app sent it.
- ``uuid`` is accepted in the forms PostHog's capture accepts: hyphenated (any case), 32 hex
  digits, ``{hyphenated}`` and ``urn:uuid:hyphenated``; it is written in canonical lowercase
  hyphenated form. When absent it is a fresh UUIDv7 carrying the caller's ``now``.
- ``timestamp`` grammar (ASCII digits only)::

      YYYY-MM-DD [ (T|t|space) HH:MM [:SS [(.|,)fraction]] [ Z | z | +HH:MM | +HHMM | +HH ] ]

  (``-`` offsets alike). A date alone means midnight UTC; no offset means UTC; a fraction finer
  than microseconds is truncated. Leap seconds (``:60``) and ``24:00`` are rejected, as are
  instants that leave years 1-9999 once converted to UTC.
- Every timestamp is written as ``YYYY-MM-DDTHH:MM:SS.ffffff+00:00`` (always six fraction
  digits, always ``+00:00``; e.g. ``2026-11-26T10:00:00.123000+00:00``). Fixed width, so text
  order is time order.
- Keys keep the app's order; keys the sidecar adds are appended.
- Text that UTF-8 cannot encode (a lone surrogate, which ``json.loads`` produces from a
  ``"\\ud800"`` escape) rejects the event, like NaN and Infinity: PostHog cannot parse either.
- An integer longer than Python converts to text (a `sidecar.wire.stdjson.LongInt`, which the
  request parser makes of it) passes through as the same digits; as ``distinct_id`` it is that
  text.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sidecar.wire import fastjson, stdjson

MAX_EVENT_BYTES = 1_000_000
"""Largest accepted event: UTF-8 bytes of the normalised JSON text."""

LIB_NAME = "telemetry-sidecar"
"""Value of ``properties.$lib`` when the app sets none."""

_DISTINCT_ID_REASON = "'distinct_id' must be a non-empty string or number"
_FALLBACK_DISTINCT_ID_REASON = "'properties.distinct_id' must be a non-empty string or number"

_HYPHENATED_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_UUID_RE = re.compile(
    rf"(?:urn:uuid:)?({_HYPHENATED_UUID})|\{{({_HYPHENATED_UUID})\}}|([0-9a-f]{{32}})",
    re.ASCII | re.IGNORECASE,
)

# Gate in front of datetime.fromisoformat, which alone would also take e.g. any character as
# the date/time separator, week dates and offsets with seconds.
_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}"
    r"(?:[Tt ][0-9]{2}:[0-9]{2}(?::[0-9]{2}(?:[.,][0-9]+)?)?"
    r"(?:[Zz]|[+-][0-9]{2}(?::?[0-9]{2})?)?)?",
    re.ASCII,
)

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# Largest orjson text taken without asking the standard library. The standard library's text
# can be longer: it writes a float in at most one byte more than orjson (1e-07 for 1e-7), and a
# float takes at least four bytes of the text with its separator, so up to 4/5 of the limit its
# text would fit too. Bigger events are rare; the standard path decides them, so an event's
# size is judged on the standard library's text whichever path writes it.
_FAST_MAX_BYTES = MAX_EVENT_BYTES // 2

# What browsers (`Date.prototype.toISOString()`) and most SDKs write: UTC with milliseconds or
# microseconds. Such a timestamp is already canonical but for its fraction's width, so it is
# only checked, not parsed, converted and formatted again.
_UTC_TIMESTAMP_RE = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.([0-9]{3}|[0-9]{6}))?(?:Z|\+00:00)",
    re.ASCII,
)

_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_UUID7_RANDOM_BYTES = 10  # 80 bits, of which version and variant overwrite 6


class EventError(ValueError):
    """An event that breaks the contract; str(exc) is the reason sent back to the app."""


def normalize_batch(
    raws: Sequence[object], *, now: datetime, lib_version: str
) -> tuple[list[str], list[tuple[int, str]]]:
    """Validate a batch of events: the normalised JSON texts of the valid ones, in order, and
    `(index, reason)` for each invalid one, its reason a short human text (see the module
    docstring).

    Each text is compact (``separators=(",", ":")``, ``ensure_ascii=False``), ready to store and
    to splice into a ``/batch/`` body; usually orjson's, whose floats can read differently from
    ``repr`` (``1e-7``, ``0.00001``) with the same value (see `sidecar.wire.fastjson`). `now` must
    be timezone-aware (a naive one is a caller bug and raises plain `ValueError`); it stamps
    events without a timestamp and the UUIDv7 of events without a uuid. The caller's dicts are
    never modified. Work shared by the batch (the timestamp text for `now`, the random bits for
    new UUIDs) is done once, which is most of the cost of small events.
    """
    now = _as_utc(now)
    stamp = _format_timestamp(now)
    uuids = _UuidSource(now, len(raws))
    bodies: list[str] = []
    rejected: list[tuple[int, str]] = []
    for index, raw in enumerate(raws):
        try:
            bodies.append(_normalize(raw, stamp, uuids, lib_version))
        except EventError as exc:
            rejected.append((index, str(exc)))
    return bodies, rejected


class _UuidSource:
    """UUIDv7 texts for one moment, drawing the random bits for up to `count` at once."""

    def __init__(self, now: datetime, count: int) -> None:
        self._ms = (now - _UNIX_EPOCH) // _ONE_MS
        self._pool = os.urandom(_UUID7_RANDOM_BYTES * max(count, 1))
        self._used = 0

    def _take(self, size: int) -> bytes:
        if self._used + size > len(self._pool):
            self._pool, self._used = os.urandom(_UUID7_RANDOM_BYTES * 16), 0
        chunk = self._pool[self._used : self._used + size]
        self._used += size
        return chunk

    def next_text(self) -> str:
        digits = f"{_uuid7_int(self._ms, self._take):032x}"
        return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _normalize(raw: object, stamp: str, uuids: _UuidSource, lib_version: str) -> str:
    if not isinstance(raw, dict):
        raise EventError("event must be an object")
    event: dict[str, Any] = dict(raw)

    name = event.get("event")
    if name is None:
        raise EventError("missing 'event'")
    if not isinstance(name, str) or not name:
        raise EventError("'event' must be a non-empty string")

    properties = event.get("properties")
    if properties is None:
        properties = {}
    elif not isinstance(properties, dict):
        raise EventError("'properties' must be an object")

    event["distinct_id"] = _distinct_id(event.get("distinct_id"), properties)

    if "$lib" not in properties or "$lib_version" not in properties:
        properties = dict(properties)
        properties.setdefault("$lib", LIB_NAME)
        properties.setdefault("$lib_version", lib_version)
    event["properties"] = properties

    given_uuid = event.get("uuid")
    event["uuid"] = uuids.next_text() if given_uuid is None else _canonical_uuid(given_uuid)

    given_timestamp = event.get("timestamp")
    event["timestamp"] = stamp if given_timestamp is None else _canonical_timestamp(given_timestamp)

    return _serialize(event)


def _uuid7_int(ms: int, rand: Callable[[int], bytes]) -> int:
    """The 128-bit integer of an RFC 9562 UUIDv7 for unix time `ms`: 48-bit millisecond
    timestamp, version 7, variant 10, and 74 random bits from `rand(10)`. The random bits carry
    no counter, so UUIDs made within one millisecond are unordered among themselves; across
    milliseconds they sort by time. Raises `ValueError` for a time before 1970."""
    if not 0 <= ms < 1 << 48:
        raise ValueError("time outside the UUIDv7 range")
    random_bytes = rand(_UUID7_RANDOM_BYTES)
    if len(random_bytes) != _UUID7_RANDOM_BYTES:
        raise ValueError(f"rand({_UUID7_RANDOM_BYTES}) returned {len(random_bytes)} bytes")
    value = (ms << 80) | int.from_bytes(random_bytes, "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    return (value & ~(0b11 << 62)) | (0b10 << 62)  # variant 10


def _as_utc(now: datetime) -> datetime:
    """Return `now` in UTC; a naive datetime is a caller bug."""
    if now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    return now if now.tzinfo is UTC else now.astimezone(UTC)


def _distinct_id(top_level: object, properties: dict[str, Any]) -> str:
    """Return the event's distinct_id as text: top level first, else properties.distinct_id."""
    if top_level is not None:
        return _distinct_id_text(top_level, _DISTINCT_ID_REASON)
    fallback = properties.get("distinct_id")
    if fallback is None:
        raise EventError("missing 'distinct_id'")
    return _distinct_id_text(fallback, _FALLBACK_DISTINCT_ID_REASON)


def _distinct_id_text(value: object, reason: str) -> str:
    """Return a distinct_id value as its string form, or raise EventError(reason)."""
    if isinstance(value, str):
        if value:
            return value
    elif isinstance(value, bool):
        pass
    elif isinstance(value, int):
        try:
            return str(value)
        except ValueError:  # beyond Python's integer-to-text digit limit
            raise EventError(reason) from None
    elif isinstance(value, stdjson.LongInt):  # an integer the request line held past that limit
        return value.digits
    elif isinstance(value, float) and math.isfinite(value):
        if value.is_integer() and abs(value) < 1e21:
            return str(int(value))
        return repr(value)
    raise EventError(reason)


def is_unicode_text(text: str) -> bool:
    """Whether UTF-8 can encode `text`: False when it holds a lone surrogate, which
    ``json.loads`` makes of a ``"\\ud800"`` escape."""
    if text.isascii():
        return True
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _canonical_uuid(value: object) -> str:
    """Return a UUID string in canonical lowercase hyphenated form, or raise EventError."""
    match = _UUID_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise EventError("invalid 'uuid'")
    hyphenated = match[1] or match[2]
    if hyphenated:
        return hyphenated.lower()
    digits = match[3].lower()
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


def _canonical_timestamp(value: object) -> str:
    """Return an ISO 8601 timestamp string converted to UTC in canonical form, or raise."""
    if not isinstance(value, str):
        raise EventError("'timestamp' must be an ISO 8601 string")
    utc = _UTC_TIMESTAMP_RE.fullmatch(value)
    if utc is not None:
        try:
            datetime.fromisoformat(value)  # only to check it names a real instant
        except ValueError:
            pass  # e.g. February 30th: the full path below says why
        else:
            # Already UTC with its fields in order: the canonical text is the same digits.
            return f"{value[:19]}.{(utc[1] or '').ljust(6, '0')}+00:00"
    return _converted_timestamp(value)


def _converted_timestamp(value: str) -> str:
    """`_canonical_timestamp` for every accepted form, by parsing and converting to UTC."""
    if _TIMESTAMP_RE.fullmatch(value) is None:
        raise EventError("unparseable 'timestamp'")
    try:
        # The gate admits only ASCII, so upper() only turns 't'/'z' into what Python 3.11 takes.
        parsed = datetime.fromisoformat(value.upper())
    except ValueError:  # e.g. February 30th, hour 24, second 60
        raise EventError("unparseable 'timestamp'") from None
    if parsed.tzinfo is None:
        return _format_timestamp(parsed.replace(tzinfo=UTC))
    try:
        return _format_timestamp(parsed.astimezone(UTC))
    except OverflowError:
        raise EventError("'timestamp' out of range") from None


def _format_timestamp(moment: datetime) -> str:
    """Format an aware UTC datetime as YYYY-MM-DDTHH:MM:SS.ffffff+00:00."""
    return moment.isoformat(timespec="microseconds")


def _serialize(event: dict[str, Any]) -> str:
    """Return the compact JSON text of `event`, or raise EventError if PostHog could not take it."""
    try:
        data = fastjson.dumps(event)
    except fastjson.Declined:
        return _serialize_stdlib(event)
    if len(data) > _FAST_MAX_BYTES:
        return _serialize_stdlib(event)
    return data.decode("utf-8")


def _serialize_stdlib(event: dict[str, Any]) -> str:
    """`_serialize` by the standard library: the reference, and the path for what orjson
    declines."""
    try:
        try:
            text = _ENCODER.encode(event)
        except TypeError:  # a `LongInt`, which only `stdjson` writes (as its digits)
            text = stdjson.dumps(event, ensure_ascii=False)
    except (TypeError, ValueError):
        raise EventError(_unserializable_reason(event)) from None
    except RecursionError:
        # json.loads on the request line nests less deep than this call, so an event can parse
        # and still be too deep to encode here: reject it alone, not the whole batch.
        raise EventError("event is nested too deeply") from None
    if text.isascii():  # O(1) in CPython: bytes == characters, nothing to encode
        size = len(text)
    else:
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError:
            raise EventError("event contains invalid Unicode (a lone surrogate)") from None
    if size > MAX_EVENT_BYTES:
        raise EventError(f"event is {size} bytes serialized, over the {MAX_EVENT_BYTES} limit")
    return text


def _unserializable_reason(event: dict[str, Any]) -> str:
    """Say why `event` failed to serialize (error path only, so a second attempt is fine)."""
    try:
        stdjson.dumps(event, ensure_ascii=False, allow_nan=True)
    except (TypeError, ValueError):
        return "event contains a value that is not JSON"
    return "event contains NaN or Infinity, which JSON cannot carry"
