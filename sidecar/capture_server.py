"""A local fake of PostHog's capture endpoint, over real HTTP, for tests and for app developers.

Two uses:

* Test suites run ``with CaptureServer() as server:`` to play PostHog on 127.0.0.1 (port 0),
  script faults (statuses with ``Retry-After``, delays, dropped, hung and reset connections),
  and wait on what arrived with ``server.wait_for_events(n)``. The server runs in background
  threads and its recording API is thread-safe, so it serves plain sync tests and trio tests
  alike (from trio, call the blocking waits through ``trio.to_thread.run_sync``).
* App developers run ``telemetry-capture`` (or ``python -m sidecar.capture_server``) and point
  a dev build's ``--host`` at it: each accepted event is printed as one line on stdout.

The pure part, :func:`process_capture`, takes the request body and returns PostHog's answer with
no I/O; the HTTP layer around it only frames bytes, applies scripted answers and records.

What this fake copies from PostHog's capture service (repository PostHog/posthog, read through
stored copies; facts only, the code here is our own):

* ``rust/capture/src/router.rs``: ``/batch`` and ``/batch/``, and the single-event routes
  ``/e``, ``/i/v0/e``, ``/capture``, ``/track``, ``/engage`` (each with and without the trailing
  slash), are all served by one handler for GET, POST and OPTIONS; the batch body cap
  ``BATCH_BODY_SIZE`` is 20 MiB; ``/`` and ``/_readiness`` answer ``capture``.
* ``rust/capture/tests/integration_wire_body_limits.rs``: every one of those routes shares the
  one 20 MiB wire cap and answers 413 above it; the rejection is written after draining up to
  one more cap's worth of body, so the client reads the status rather than a reset (past twice
  the cap the client may see a reset); production's decompressed budget is five times the wire
  cap. ``rust/capture/src/extractors.rs``: the message is
  ``Request body exceeds limit of N bytes``.
* ``rust/capture/src/api.rs``: success is HTTP 200 with ``{"status":1}`` (``quota_limited`` left
  out when absent), or 204 with no body for a ``beacon=1`` request. An error answers its status
  with the error's display text as a plain-text body, e.g. ``event submitted without an
  api_key``. 400: request decoding/parsing/hydration errors, empty batch, empty payload, empty
  event name, missing distinct_id, invalid ``$cookieless_mode``, payload empty after filtering.
  401: no token, inconsistent tokens in one batch, a token of the wrong shape. 413: event or
  payload too big (an older version of this file mapped it to 400; the wire-limit test above
  pins 413). 503: transient sink error. 429: rate limited.
* ``rust/capture/src/payload/types.rs`` and ``rust/capture/src/utils.rs``
  (``extract_compression``): the ``compression`` query parameter (``gzip``/``gzip-js``, any
  case; also ``lz64``/``lz-string``, ``base64``/``b64``) wins; otherwise the
  ``Content-Encoding`` header (exact values ``gzip``, ``gzip-js``, ...) is the hint.
* ``rust/capture/src/payload/decompression.rs``: the body is gunzipped when the hint says gzip
  OR it starts with the gzip magic bytes, whatever the headers say; output is capped (over the
  cap: 413 ``Decompressed payload would exceed N bytes``); bad gzip is 400 ``invalid GZIP
  data``; a body that is not UTF-8 is 400. ``rust/common/compression/src/lib.rs``: the magic is
  the three bytes ``1f 8b 08``.
* ``rust/capture/src/v0_request.rs``: the JSON is read as the first of: an array of events, a
  batch ``{"token"|"api_key": string (required), "batch": [events], "historical_migration",
  "sent_at"}``, one event, or an "engage" object without ``event`` (accepted only on
  ``/engage``, as ``$identify``; elsewhere 400 ``non-engage request missing event name
  attribute``). So a ``/batch/`` body whose ``api_key`` is absent or not a string is a 400, not
  a 401; an empty or malformed string key is the 401. An empty event list is 400, and
  ``$performance_event`` events are dropped (400 if none is left).
* ``rust/common/types/src/event.rs`` (``RawEvent``): ``event`` must be a string; the token is
  ``token``/``$token``/``api_key`` or else ``properties.token``; ``distinct_id`` (or
  ``$distinct_id``) may be any JSON value: non-strings are serialised, NUL becomes U+FFFD,
  absent or null falls back to ``properties.distinct_id``, empty counts as missing, and it is
  cut to 200 characters.
  ``rust/common/types/src/util.rs``: ``uuid`` may be absent, null or ``""``, else must parse.
* ``rust/capture/src/utils.rs`` (``extract_and_verify_token``) and ``rust/capture/src/token.rs``:
  a batch's own token wins; otherwise one event's token, or the single distinct token among
  the events (none: 401, several: 401). The token is trimmed, then refused when empty, over 64
  bytes, not ASCII, starting ``phx_`` (a personal key) or containing NUL.
* ``rust/capture/src/payload/analytics.rs``: the order is body, decompress, parse, events,
  token; ``rust/capture/src/events/analytics.rs`` (``process_single_event``) then checks each
  event (name, then distinct_id, then cookieless mode) and one bad event fails the whole
  request, so nothing from it is ingested.

Not copied: form-encoded, base64 and lz64 bodies (answered 400 here), GET ``data=``
parameters, the base64 unwrap of legacy routes, quotas and rate limits (script a 429 instead),
and token lookup against real projects (any well-formed token is accepted).
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import io
import json
import signal
import socket
import struct
import sys
import threading
import time
import uuid
import zlib
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from types import FrameType, TracebackType
from typing import Any, TypeAlias, cast
from urllib.parse import parse_qs, urlsplit

from sidecar import __version__

__all__ = [
    "CAPTURE_PATHS",
    "DEFAULT_MAX_BODY_BYTES",
    "Answer",
    "CaptureRejectedError",
    "CaptureResult",
    "CaptureServer",
    "CaptureServerError",
    "Delay",
    "DropConnection",
    "Hang",
    "Normal",
    "Outcome",
    "ReceivedRequest",
    "Rejection",
    "ResetMidBody",
    "Status",
    "accept_events",
    "decode_payload",
    "describe_request",
    "distinct_id_of",
    "events_in",
    "format_event_line",
    "is_gzip",
    "main",
    "process_capture",
]

DEFAULT_MAX_BODY_BYTES = 20 * 1024 * 1024
"""PostHog's ``BATCH_BODY_SIZE``: the largest request body ``/batch/`` takes off the wire."""

DECOMPRESSED_BUDGET_FACTOR = 5
"""PostHog's decompressed budget is five times its wire cap."""

GZIP_MAGIC = b"\x1f\x8b\x08"

CAPTURE_PATHS = frozenset(
    p + tail
    for p in ("/batch", "/e", "/i/v0/e", "/capture", "/track", "/engage")
    for tail in ("", "/")
)
"""The routes PostHog serves with its analytics capture handler."""

SUCCESS_BODY = b'{"status":1}'

_MAX_DISTINCT_ID_CHARS = 200
_MAX_TOKEN_BYTES = 64
_TOKEN_ALIASES = ("token", "$token", "api_key")
_DISTINCT_ID_ALIASES = ("distinct_id", "$distinct_id")
_I64 = 2**63
_READ_CHUNK = 64 * 1024
_TEXT = "text/plain; charset=utf-8"
_JSON = "application/json"


# --------------------------------------------------------------------------------------------
# Scripted answers


@dataclass(frozen=True, slots=True)
class Normal:
    """Handle the request as PostHog would: validate it, then answer 200 or the error status."""


@dataclass(frozen=True, slots=True)
class Status:
    """Answer with this status whatever the request holds.

    ``body`` defaults to ``{"status":1}`` for 2xx and to PostHog's text for known errors.
    Events in a request answered 2xx this way are recorded as accepted, without validation.
    """

    code: int
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"status code must be within 200..599, not {self.code}")


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` after reading the request head, then give ``then`` (default: normal)."""

    seconds: float
    then: Answer | None = None

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("a delay cannot be negative")


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Read the whole request, then close the connection without answering."""


@dataclass(frozen=True, slots=True)
class Hang:
    """Read the whole request, then answer nothing until the server stops."""


@dataclass(frozen=True, slots=True)
class ResetMidBody:
    """Read ``after_bytes`` of the body (default: half of it), then reset the connection (RST)."""

    after_bytes: int | None = None


Answer: TypeAlias = Normal | Status | Delay | DropConnection | Hang | ResetMidBody


def _as_answer(answer: Answer | int) -> Answer:
    return Status(answer) if isinstance(answer, int) else answer


# --------------------------------------------------------------------------------------------
# What was received


class Outcome(enum.Enum):
    """How the server ended a request."""

    ANSWERED = "answered"
    DROPPED = "dropped"
    HUNG = "hung"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it and answered it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_size: int
    """Bytes of body read off the wire, before any decompression."""
    was_gzip: bool
    payload: Any
    """The decoded JSON document, or None when there was none or it could not be decoded."""
    status: int | None
    """The HTTP status answered; None when the connection was dropped, hung or reset."""
    outcome: Outcome
    error: str | None
    """The refusal text sent with an error status, if any."""
    events: tuple[dict[str, Any], ...]
    """The events this request delivered (only when answered 2xx)."""
    received_at: float
    """``time.monotonic()`` when the request head had been read."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


# --------------------------------------------------------------------------------------------
# PostHog's request handling, free of I/O


class Rejection(enum.Enum):
    """PostHog's capture errors: (HTTP status, message template). The one place they map."""

    REQUEST_DECODING = (400, "failed to decode request: {}")
    REQUEST_PARSING = (400, "failed to parse request: {}")
    REQUEST_HYDRATION = (400, "failed to hydrate events from request: {}")
    EMPTY_BATCH = (400, "request holds no event")
    EMPTY_PAYLOAD = (400, "request missing data payload")
    MISSING_EVENT_NAME = (400, "event submitted with an empty event name")
    MISSING_DISTINCT_ID = (400, "event submitted without a distinct_id")
    INVALID_COOKIELESS_MODE = (400, "event submitted with invalid cookieless mode")
    EMPTY_PAYLOAD_FILTERED = (400, "payload empty after filtering invalid event types")
    NO_TOKEN = (401, "event submitted without an api_key")
    MULTIPLE_TOKENS = (401, "batch submitted with inconsistent api_key values")
    TOKEN_VALIDATION = (401, "API key is not valid: {}")
    EVENT_TOO_BIG = (413, "maximum event size exceeded: {}")

    @property
    def status(self) -> int:
        """The HTTP status PostHog answers."""
        return self.value[0]


_DEFAULT_ERROR_TEXT = {
    400: "failed to decode request: rejected by script",
    401: Rejection.NO_TOKEN.value[1],
    413: "maximum event size exceeded: rejected by script",
    429: "rate limited",
    503: "transient error, please retry",
}


class CaptureRejectedError(Exception):
    """A request PostHog would refuse: its status and the text it would send."""

    def __init__(self, rejection: Rejection, detail: str = "") -> None:
        self.rejection = rejection
        self.message = rejection.value[1].format(detail)
        super().__init__(self.message)

    @property
    def status(self) -> int:
        """The HTTP status for this refusal."""
        return self.rejection.status


@dataclass(frozen=True, slots=True)
class CaptureResult:
    """PostHog's answer to one capture request."""

    status: int
    body: bytes
    content_type: str | None
    was_gzip: bool
    payload: Any
    events: tuple[dict[str, Any], ...]
    error: str | None


def process_capture(
    body: bytes,
    *,
    path: str = "/batch/",
    query: str = "",
    content_encoding: str | None = None,
    max_decompressed_bytes: int = DEFAULT_MAX_BODY_BYTES * DECOMPRESSED_BUDGET_FACTOR,
) -> CaptureResult:
    """Answer a capture request the way PostHog does (the wire cap is the caller's job)."""
    was_gzip = is_gzip(body, query=query, content_encoding=content_encoding)
    payload: Any = None
    try:
        payload = decode_payload(
            body, query=query, content_encoding=content_encoding, limit=max_decompressed_bytes
        )
        events = accept_events(payload, path=path)
    except CaptureRejectedError as rejected:
        return CaptureResult(
            status=rejected.status,
            body=rejected.message.encode("utf-8"),
            content_type=_TEXT,
            was_gzip=was_gzip,
            payload=payload,
            events=(),
            error=rejected.message,
        )
    if parse_qs(query).get("beacon") == ["1"]:
        return CaptureResult(204, b"", None, was_gzip, payload, events, None)
    return CaptureResult(200, SUCCESS_BODY, _JSON, was_gzip, payload, events, None)


def compression_hint(query: str, content_encoding: str | None) -> str | None:
    """PostHog's compression hint: the query parameter if supported, else Content-Encoding."""
    names = {"gzip": "gzip", "gzip-js": "gzip", "lz64": "lz64", "lz-string": "lz64"}
    names |= {"base64": "base64", "b64": "base64"}
    for value in parse_qs(query).get("compression", []):
        hint = names.get(value.lower())
        if hint is not None:
            return hint
    return names.get(content_encoding or "")


def is_gzip(body: bytes, *, query: str = "", content_encoding: str | None = None) -> bool:
    """Whether PostHog would gunzip this body: by hint or by the gzip magic bytes."""
    return compression_hint(query, content_encoding) == "gzip" or body.startswith(GZIP_MAGIC)


def decode_payload(
    body: bytes, *, query: str = "", content_encoding: str | None = None, limit: int
) -> Any:
    """Decompress and parse a request body into its JSON document, or refuse it."""
    if not body:
        raise CaptureRejectedError(Rejection.EMPTY_PAYLOAD)
    if is_gzip(body, query=query, content_encoding=content_encoding):
        text = _gunzip_text(body, limit)
    elif compression_hint(query, content_encoding) == "lz64":
        raise CaptureRejectedError(Rejection.REQUEST_DECODING, "lz64 is not supported by the fake")
    else:
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise CaptureRejectedError(
                Rejection.REQUEST_DECODING, "invalid UTF8 in request payload"
            ) from None
        if len(body) > limit:
            raise CaptureRejectedError(
                Rejection.EVENT_TOO_BIG,
                f"Uncompressed payload size limit {limit} exceeded: {len(body)}",
            )
    try:
        return json.loads(text, parse_constant=_refuse_constant)
    except ValueError as exc:
        raise CaptureRejectedError(Rejection.REQUEST_PARSING, str(exc)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _gunzip_text(body: bytes, limit: int) -> str:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error:
        raise CaptureRejectedError(Rejection.REQUEST_DECODING, "invalid GZIP data") from None
    if len(out) > limit:
        raise CaptureRejectedError(
            Rejection.EVENT_TOO_BIG, f"Decompressed payload would exceed {limit} bytes"
        )
    if not inflater.eof:
        raise CaptureRejectedError(Rejection.REQUEST_DECODING, "invalid GZIP data")
    try:
        return out.decode("utf-8")
    except UnicodeDecodeError:
        raise CaptureRejectedError(Rejection.REQUEST_DECODING, "invalid gzip data") from None


def accept_events(payload: Any, *, path: str = "/batch/") -> tuple[dict[str, Any], ...]:
    """The events PostHog would ingest from a decoded document, or the refusal."""
    events, batch_token = _hydrate(payload, path)
    if not events:
        raise CaptureRejectedError(Rejection.EMPTY_BATCH)
    events = [e for e in events if e.get("event") != "$performance_event"]
    if not events:
        raise CaptureRejectedError(Rejection.EMPTY_PAYLOAD_FILTERED)
    _validate_token(batch_token if batch_token is not None else _events_token(events))
    for event in events:
        if event["event"] == "":
            raise CaptureRejectedError(Rejection.MISSING_EVENT_NAME)
        if distinct_id_of(event) is None:
            raise CaptureRejectedError(Rejection.MISSING_DISTINCT_ID)
        cookieless = _properties(event).get("$cookieless_mode", False)
        if not isinstance(cookieless, bool):
            raise CaptureRejectedError(Rejection.INVALID_COOKIELESS_MODE)
    return tuple(events)


def _hydrate(payload: Any, path: str) -> tuple[list[dict[str, Any]], str | None]:
    """PostHog's untagged ``RawRequest``: array, then batch, then one event, then engage."""
    if isinstance(payload, list) and all(_is_raw_event(e) for e in payload):
        return list(payload), None
    if isinstance(payload, dict):
        batch_token = _batch_token(payload)
        if batch_token is not None:
            return list(payload["batch"]), batch_token
        if _is_raw_event(payload):
            return [payload], None
        if _is_raw_event(payload, require_event=False):
            if path.startswith("/engage"):
                return [{**payload, "event": "$identify"}], None
            raise CaptureRejectedError(
                Rejection.REQUEST_HYDRATION, "non-engage request missing event name attribute"
            )
    raise CaptureRejectedError(
        Rejection.REQUEST_PARSING, "data did not match any variant of untagged enum RawRequest"
    )


def _batch_token(doc: dict[str, Any]) -> str | None:
    """The batch's token when ``doc`` has the shape of PostHog's ``BatchedRequest``."""
    keys = [k for k in ("token", "api_key") if k in doc]
    if len(keys) != 1 or not isinstance(doc[keys[0]], str):
        return None
    batch = doc.get("batch")
    if not isinstance(batch, list) or not all(_is_raw_event(e) for e in batch):
        return None
    if not isinstance(doc.get("historical_migration", False), bool | None):
        return None
    if not isinstance(doc.get("sent_at"), str | None):
        return None
    return cast(str, doc[keys[0]])


def _is_raw_event(obj: object, *, require_event: bool = True) -> bool:
    """Whether ``obj`` deserialises as PostHog's ``RawEvent`` (or ``RawEngageEvent``)."""
    if not isinstance(obj, dict):
        return False
    if require_event and not isinstance(obj.get("event", 0), str):
        return False
    token_keys = [k for k in _TOKEN_ALIASES if k in obj]
    if len(token_keys) > 1 or sum(k in obj for k in _DISTINCT_ID_ALIASES) > 1:
        return False
    if token_keys and not isinstance(obj[token_keys[0]], str | None):
        return False
    offset = obj.get("offset")
    checks = (
        _is_uuid_field(obj.get("uuid")),
        isinstance(obj.get("properties", {}), dict),
        isinstance(obj.get("timestamp"), str | None),
        offset is None or (type(offset) is int and -_I64 <= offset < _I64),
        isinstance(obj.get("$set"), dict | None),
        isinstance(obj.get("$set_once"), dict | None),
    )
    return all(checks)


def _is_uuid_field(value: object) -> bool:
    if value is None or value == "":
        return True
    if not isinstance(value, str):
        return False
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _properties(event: Mapping[str, Any]) -> dict[str, Any]:
    props = event.get("properties")
    return props if isinstance(props, dict) else {}


def _event_token(event: Mapping[str, Any]) -> str | None:
    for key in _TOKEN_ALIASES:
        value = event.get(key)
        if value is not None:
            return cast(str, value)
    token = _properties(event).get("token")
    return token if isinstance(token, str) else None


def _events_token(events: Sequence[Mapping[str, Any]]) -> str:
    if len(events) == 1:
        token = _event_token(events[0])
        if token is None:
            raise CaptureRejectedError(Rejection.NO_TOKEN)
        return token
    tokens = {t for t in map(_event_token, events) if t is not None}
    if not tokens:
        raise CaptureRejectedError(Rejection.NO_TOKEN)
    if len(tokens) > 1:
        raise CaptureRejectedError(Rejection.MULTIPLE_TOKENS)
    return tokens.pop()


def _validate_token(token: str) -> None:
    token = token.strip()
    reason = None
    if not token:
        reason = "empty"
    elif len(token.encode("utf-8")) > _MAX_TOKEN_BYTES:
        reason = "too_long"
    elif not token.isascii():
        reason = "not_ascii"
    elif token.startswith("phx_"):
        reason = "personal_api_key"
    elif "\0" in token:
        reason = "null_byte"
    if reason is not None:
        raise CaptureRejectedError(Rejection.TOKEN_VALIDATION, reason)


def distinct_id_of(event: Mapping[str, Any]) -> str | None:
    """The distinct_id PostHog derives from an event, or None when it has none."""
    value = next((event[k] for k in _DISTINCT_ID_ALIASES if k in event), None)
    if value is None:
        value = _properties(event).get("distinct_id")
        if value is None:
            return None
    if isinstance(value, str):
        text = value
    else:
        text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    text = text.replace("\0", "\ufffd")
    return text[:_MAX_DISTINCT_ID_CHARS] or None


def events_in(payload: Any) -> tuple[dict[str, Any], ...]:
    """The event objects a decoded document carries, without validating them."""
    if isinstance(payload, dict):
        batch = payload.get("batch")
        items: list[Any] = batch if isinstance(batch, list) else [payload]
    elif isinstance(payload, list):
        items = payload
    else:
        items = []
    return tuple(e for e in items if isinstance(e, dict))


# --------------------------------------------------------------------------------------------
# HTTP framing


class _ClientGoneError(Exception):
    """The client closed the connection before sending the whole request."""


class _BadFramingError(Exception):
    """The request body's framing (Content-Length or chunks) could not be read."""


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    size: int
    over_limit: bool
    complete: bool


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    received_at: float


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes; with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a request on Linux), as PostHog's own server would not.
    disable_nagle_algorithm = True
    server_version = f"telemetry-capture/{__version__}"
    sys_version = ""

    @property
    def _owner(self) -> CaptureServer:
        return cast(_HTTPServer, self.server).owner

    def setup(self) -> None:
        super().setup()
        self._owner._track_connection(self.connection, live=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._owner._track_connection(self.connection, live=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the stderr access log: ``on_request`` reports requests instead."""

    def do_GET(self) -> None:
        """Serve GET."""
        self._dispatch()

    def do_POST(self) -> None:
        """Serve POST."""
        self._dispatch()

    def do_OPTIONS(self) -> None:
        """Serve OPTIONS (CORS preflight): PostHog answers ``{"status":1}``."""
        self._dispatch()

    def _dispatch(self) -> None:
        split = urlsplit(self.path)
        head = _Head(
            method=self.command,
            path=split.path,
            query=split.query,
            headers=tuple(self.headers.items()),
            received_at=time.monotonic(),
        )
        scripted = head.path in CAPTURE_PATHS and head.method != "OPTIONS"
        answer = self._owner._next_answer() if scripted else Normal()
        if scripted:
            self._owner._note_arrival()
        try:
            self._run(answer, head)
        except (_ClientGoneError, OSError):
            self.close_connection = True
        except _BadFramingError:
            self._respond(400, b"invalid request body framing", content_type=_TEXT, close=True)
        except Exception as exc:  # a bug in the fake: answer 500, then fail the test at close
            self._owner._record_error(exc)
            with contextlib.suppress(OSError):
                self._respond(500, b"capture_server bug", content_type=_TEXT, close=True)

    def _run(self, answer: Answer, head: _Head) -> None:
        owner = self._owner
        match answer:
            case Delay(seconds=seconds, then=then):
                if owner._stopping.wait(seconds):
                    self.close_connection = True
                else:
                    self._run(then or Normal(), head)
            case ResetMidBody(after_bytes=after_bytes):
                size = self._read_partial(after_bytes)
                owner._record(self._received(head, size, None, None, outcome=Outcome.RESET))
                self._reset()
            case DropConnection() | Hang():
                body = self._read_body(owner.max_body_bytes)
                hung = isinstance(answer, Hang)
                outcome = Outcome.HUNG if hung else Outcome.DROPPED
                decoded = self._decoded(head, body)
                owner._record(self._received(head, body.size, decoded, None, outcome=outcome))
                if hung:
                    owner._stopping.wait()
                self.close_connection = True
            case Status():
                self._answer_status(answer, head)
            case Normal():
                self._answer_normally(head)

    def _answer_status(self, answer: Status, head: _Head) -> None:
        body = self._read_body(self._owner.max_body_bytes)
        decoded = self._decoded(head, body)
        ok = 200 <= answer.code < 300
        data, content_type = _scripted_body(answer)
        self._owner._record(
            self._received(
                head,
                body.size,
                decoded,
                answer.code,
                error=None if ok else data.decode("utf-8", "replace"),
                events=events_in(decoded[1]) if ok else (),
            )
        )
        self._respond(
            answer.code,
            data,
            content_type=content_type,
            headers=answer.headers,
            close=not body.complete,
        )

    def _answer_normally(self, head: _Head) -> None:
        owner = self._owner
        body = self._read_body(owner.max_body_bytes)
        if body.over_limit:
            cap = owner.max_body_bytes
            rejected = CaptureRejectedError(
                Rejection.EVENT_TOO_BIG, f"Request body exceeds limit of {cap} bytes"
            )
            message = rejected.message
            result = CaptureResult(413, message.encode(), _TEXT, False, None, (), message)
        elif head.path in CAPTURE_PATHS:
            if head.method == "OPTIONS":
                result = CaptureResult(200, SUCCESS_BODY, _JSON, False, None, (), None)
            else:
                result = process_capture(
                    body.data,
                    path=head.path,
                    query=head.query,
                    content_encoding=_header(head.headers, "content-encoding"),
                    max_decompressed_bytes=owner.max_decompressed_bytes,
                )
        elif head.path in ("/", "/_readiness", "/_liveness") and head.method == "GET":
            result = CaptureResult(200, b"capture", _TEXT, False, None, (), None)
        else:
            result = CaptureResult(404, b"", None, False, None, (), None)
        owner._record(
            self._received(
                head,
                body.size,
                (result.was_gzip, result.payload),
                result.status,
                error=result.error,
                events=result.events,
            )
        )
        self._respond(
            result.status, result.body, content_type=result.content_type, close=not body.complete
        )

    def _decoded(self, head: _Head, body: _Body) -> tuple[bool, Any]:
        """(was_gzip, payload) decoded without validation, for answers that skip it."""
        encoding = _header(head.headers, "content-encoding")
        gz = is_gzip(body.data, query=head.query, content_encoding=encoding)
        if body.over_limit or not body.data:
            return gz, None
        try:
            payload = decode_payload(
                body.data,
                query=head.query,
                content_encoding=encoding,
                limit=self._owner.max_decompressed_bytes,
            )
        except CaptureRejectedError:
            return gz, None
        return gz, payload

    @staticmethod
    def _received(
        head: _Head,
        body_size: int,
        decoded: tuple[bool, Any] | None,
        status: int | None,
        *,
        outcome: Outcome = Outcome.ANSWERED,
        error: str | None = None,
        events: tuple[dict[str, Any], ...] = (),
    ) -> ReceivedRequest:
        was_gzip, payload = decoded if decoded is not None else (False, None)
        return ReceivedRequest(
            method=head.method,
            path=head.path,
            query=head.query,
            headers=head.headers,
            body_size=body_size,
            was_gzip=was_gzip,
            payload=payload,
            status=status,
            outcome=outcome,
            error=error,
            events=events,
            received_at=head.received_at,
        )

    # -- reading ----------------------------------------------------------------------------

    def _read_body(self, limit: int) -> _Body:
        """The body, kept up to ``limit`` bytes; beyond that drained (up to one more limit)."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            return self._read_chunked(limit)
        length = self._content_length()
        if length is None or length == 0:
            return _Body(b"", 0, over_limit=False, complete=True)
        if length <= limit:
            return _Body(self._read_exact(length), length, over_limit=False, complete=True)
        if length <= 2 * limit:
            self._discard(length)
            return _Body(b"", length, over_limit=True, complete=True)
        return _Body(b"", length, over_limit=True, complete=False)

    def _content_length(self) -> int | None:
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None
        try:
            length = int(raw)
        except ValueError:
            raise _BadFramingError(raw) from None
        if length < 0:
            raise _BadFramingError(raw)
        return length

    def _read_exact(self, n: int) -> bytes:
        data = self.rfile.read(n)
        if len(data) < n:
            raise _ClientGoneError
        return data

    def _discard(self, n: int) -> None:
        while n > 0:
            n -= len(self._read_exact(min(n, _READ_CHUNK)))

    def _read_chunked(self, limit: int) -> _Body:
        kept: list[bytes] = []
        size = 0
        while True:
            line = self.rfile.readline(1024)
            if not line:
                raise _ClientGoneError
            try:
                chunk_size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadFramingError(line) from None
            if chunk_size == 0:
                self._skip_trailers()
                return _Body(b"".join(kept), size, over_limit=size > limit, complete=True)
            if size + chunk_size > 2 * limit:
                return _Body(b"", size + chunk_size, over_limit=True, complete=False)
            chunk = self._read_exact(chunk_size)
            size += chunk_size
            if size <= limit:
                kept.append(chunk)
            else:
                kept.clear()
            self._read_exact(2)  # the CRLF closing the chunk

    def _skip_trailers(self) -> None:
        while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
            pass

    def _read_partial(self, after_bytes: int | None) -> int:
        length = self._content_length()
        if length is None:
            wanted = after_bytes or 0
        else:
            wanted = min(length // 2 if after_bytes is None else after_bytes, length)
        return len(self.rfile.read(wanted)) if wanted > 0 else 0

    # -- answering --------------------------------------------------------------------------

    def _respond(
        self,
        status: int,
        body: bytes,
        *,
        content_type: str | None,
        headers: Mapping[str, str] | None = None,
        close: bool = False,
    ) -> None:
        extra = dict(headers or {})
        given = {name.lower() for name in extra}
        bodiless = status in (204, 304)
        self.send_response(status)
        if content_type and not bodiless and "content-type" not in given:
            self.send_header("Content-Type", content_type)
        if not bodiless and "content-length" not in given:
            self.send_header("Content-Length", str(len(body)))
        for name, value in extra.items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
        self.end_headers()
        if not bodiless:
            self.wfile.write(body)

    def _reset(self) -> None:
        """Close with SO_LINGER 0, so the peer gets a TCP RST rather than a FIN."""
        self.close_connection = True
        linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        # The socket closes for real only when its reader file lets go of it too.
        with contextlib.suppress(OSError):
            self.connection.close()
        with contextlib.suppress(OSError):
            self.rfile.close()


def _scripted_body(answer: Status) -> tuple[bytes, str]:
    """The body and content type for a scripted status."""
    if isinstance(answer.body, str):
        return answer.body.encode("utf-8"), _TEXT
    if answer.body is not None:
        return answer.body, _TEXT
    if 200 <= answer.code < 300:
        return SUCCESS_BODY, _JSON
    default = BaseHTTPRequestHandler.responses.get(answer.code, ("error",))[0]
    return _DEFAULT_ERROR_TEXT.get(answer.code, default).encode("utf-8"), _TEXT


def _header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    return next((v for k, v in headers if k.lower() == name), None)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = sys.platform != "win32"
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], owner: CaptureServer) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.owner = owner
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        """Bind without HTTPServer's reverse DNS lookup of the host, which can stall."""
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve each connection in a thread the owner can join on close."""
        thread = threading.Thread(
            target=self._serve_connection,
            args=(request, client_address),
            name=f"capture-server-conn-{client_address}",
            daemon=True,
        )
        self.owner._track_thread(thread, live=True)
        thread.start()

    def _serve_connection(self, request: Any, client_address: Any) -> None:
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)
            self.owner._track_thread(threading.current_thread(), live=False)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away is normal; anything else is a bug to report at close."""
        exc = sys.exc_info()[1]
        if exc is not None and not isinstance(exc, OSError):
            self.owner._record_error(exc)


# --------------------------------------------------------------------------------------------
# The server


class CaptureServerError(RuntimeError):
    """The fake itself failed while serving (a bug in the fake, not in the client)."""


class CaptureServer:
    """A fake PostHog capture service on a background thread.

    Use as a context manager, or call :meth:`start` and :meth:`close`. Everything here may be
    called from any thread; the ``wait_for_*`` methods block the calling thread.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decompressed_bytes: int | None = None,
        on_request: Callable[[ReceivedRequest], None] | None = None,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self._address = (host, port)
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = (
            max_decompressed_bytes
            if max_decompressed_bytes is not None
            else max_body_bytes * DECOMPRESSED_BUDGET_FACTOR
        )
        self._on_request = on_request
        self._cond = threading.Condition()
        self._callback_lock = threading.Lock()
        self._requests: list[ReceivedRequest] = []
        self._arrivals = 0
        self._events: list[dict[str, Any]] = []
        self._script: deque[Answer] = deque()
        self._default: Answer = Normal()
        self._errors: list[BaseException] = []
        self._connections: set[socket.socket] = set()
        self._threads: set[threading.Thread] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._serve_thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        """Bind and start serving; returns self. Raises OSError when the address is taken."""
        if self._httpd is not None:
            raise RuntimeError("the capture server is already started")
        self._httpd = _HTTPServer(self._address, self)
        self._serve_thread = threading.Thread(
            target=self._httpd.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="capture-server",
            daemon=True,
        )
        self._serve_thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, end every open connection, and raise if a handler crashed."""
        self._shutdown(timeout)
        with self._cond:
            errors = list(self._errors)
        if errors:
            raise CaptureServerError(f"capture server handler failed: {errors[0]!r}") from errors[0]

    def _shutdown(self, timeout: float) -> None:
        httpd = self._httpd
        if httpd is None or self._stopping.is_set():
            return
        self._stopping.set()  # wakes Delay and Hang
        httpd.shutdown()
        with self._cond:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        deadline = time.monotonic() + timeout
        with self._cond:
            threads = list(self._threads)
        if self._serve_thread is not None:
            threads.append(self._serve_thread)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        self._shutdown(5.0)
        with self._cond:
            errors = list(self._errors)
        if errors:
            exc.add_note(f"the capture server also failed: {errors!r}")

    # -- addresses --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        return self._bound()[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (what the sidecar takes as ``--host``)."""
        host, port = self._bound()
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    @property
    def batch_url(self) -> str:
        """The ``/batch/`` endpoint URL."""
        return self.url + "/batch/"

    def _bound(self) -> tuple[str, int]:
        if self._httpd is None:
            raise RuntimeError("the capture server is not started")
        return self._httpd.server_name, self._httpd.server_port

    # -- scripting --------------------------------------------------------------------------

    def script(self, *answers: Answer | int) -> None:
        """Queue answers, used one per request in arrival order; an int means ``Status(int)``.

        Only requests to capture routes use the script (not OPTIONS, ``/`` or unknown paths).
        """
        queued = [_as_answer(a) for a in answers]
        with self._cond:
            self._script.extend(queued)

    def set_default(self, answer: Answer | int | None) -> None:
        """The answer used when the script is empty; None restores normal handling."""
        chosen = Normal() if answer is None else _as_answer(answer)
        with self._cond:
            self._default = chosen

    @property
    def script_remaining(self) -> int:
        """How many scripted answers have not been used yet."""
        with self._cond:
            return len(self._script)

    def _next_answer(self) -> Answer:
        with self._cond:
            return self._script.popleft() if self._script else self._default

    # -- recordings -------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request recorded so far, in the order they were recorded."""
        with self._cond:
            return list(self._requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event accepted with a 2xx so far, in order (duplicates included)."""
        with self._cond:
            return list(self._events)

    def clear(self) -> None:
        """Forget recorded requests and events (the script and default stay)."""
        with self._cond:
            self._requests.clear()
            self._events.clear()

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` events were accepted; return them all.

        Raises TimeoutError, saying what did arrive, when ``timeout`` seconds pass first.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._events) >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} events; {self._summary()}")
            return list(self._events)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests were recorded; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} requests; {self._summary()}")
            return list(self._requests)

    def wait_for_arrivals(self, n: int, timeout: float = 5.0) -> None:
        """Block until ``n`` capture requests have been received, answered or not.

        Unlike :meth:`wait_for_requests`, this returns as soon as a request's head is read,
        so a test can act while the request is still in flight (under a ``Delay``).
        """
        with self._cond:
            if not self._cond.wait_for(lambda: self._arrivals >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} arrivals; {self._summary()}")

    def _note_arrival(self) -> None:
        with self._cond:
            self._arrivals += 1
            self._cond.notify_all()

    def _summary(self) -> str:
        answers = ", ".join(
            str(r.status) if r.status is not None else r.outcome.value for r in self._requests
        )
        return f"got {len(self._events)} events from {len(self._requests)} requests [{answers}]"

    def _record(self, request: ReceivedRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._events.extend(request.events)
            self._cond.notify_all()
        if self._on_request is not None:
            with self._callback_lock:
                try:
                    self._on_request(request)
                except Exception as exc:
                    self._record_error(exc)

    def _record_error(self, exc: BaseException) -> None:
        with self._cond:
            self._errors.append(exc)
            self._cond.notify_all()

    def _track_connection(self, conn: socket.socket, *, live: bool) -> None:
        with self._cond:
            if live:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    def _track_thread(self, thread: threading.Thread, *, live: bool) -> None:
        with self._cond:
            if live:
                self._threads.add(thread)
            else:
                self._threads.discard(thread)


# --------------------------------------------------------------------------------------------
# Command line


def format_event_line(event: Mapping[str, Any]) -> str:
    """One compact line for an event: name, distinct_id, uuid, timestamp."""
    fields = (
        ("event", event.get("event")),
        ("distinct_id", distinct_id_of(event)),
        ("uuid", event.get("uuid")),
        ("timestamp", event.get("timestamp")),
    )
    return " ".join(f"{name}={_show(value)}" for name, value in fields)


def _show(value: object) -> str:
    if value is None:
        return "-"
    if (
        isinstance(value, str)
        and value
        and value.isprintable()
        and not any(c.isspace() or c == '"' for c in value)
    ):
        return value
    return json.dumps(value, ensure_ascii=False)


def describe_request(request: ReceivedRequest) -> str:
    """One line about a request, for the stderr log."""
    where = f"{request.method} {request.path}{'?' + request.query if request.query else ''}"
    if request.status is None:
        return f"{where} -> {request.outcome.value}"
    gz = " gzip" if request.was_gzip else ""
    detail = f"{len(request.events)} events, {request.body_size} bytes{gz}"
    if request.error:
        detail += f": {request.error}"
    return f"{where} -> {request.status} ({detail})"


def _printer(*, json_lines: bool, quiet: bool) -> Callable[[ReceivedRequest], None]:
    def on_request(request: ReceivedRequest) -> None:
        for event in request.events:
            if json_lines:
                line = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
            else:
                line = format_event_line(event)
            print(line, flush=True)
        if not quiet:
            print(describe_request(request), file=sys.stderr, flush=True)

    return on_request


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="telemetry-capture",
        description="A local fake of PostHog's capture API: prints each event it receives, "
        "one line per event on stdout. Point the sidecar's --host at the URL it shows.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted before answering 413 (default: PostHog's 20 MiB)",
    )
    parser.add_argument("--json", action="store_true", help="print each whole event as JSON")
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be at least 1")
    return args


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake until Ctrl-C or SIGTERM; exit status 0, or 1 when it cannot listen."""
    args = _parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    server = CaptureServer(
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        on_request=_printer(json_lines=args.json, quiet=args.quiet),
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            server.start()
        except OSError as exc:
            print(
                f"telemetry-capture: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        try:
            print(
                f"telemetry-capture {__version__}: fake PostHog capture listening on "
                f"{server.url} (POST {server.batch_url}); Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            # A bounded wait, not a bare wait(): on Windows a blocked wait ignores Ctrl-C.
            while not stop.wait(0.5):
                pass
        finally:
            server.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
