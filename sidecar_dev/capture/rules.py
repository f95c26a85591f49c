"""PostHog's capture rules, free of I/O: what capture answers to a request's bytes.

Everything here is a pure function of the request (method, path, query, headers, body): the
compression hint and gzip detection, payload decoding with its size budget, the request shapes
PostHog accepts, token and event validation, and the status and body it answers. The HTTP layer
(:mod:`sidecar_dev.capture.http`) only frames bytes around it.

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
  payload too big (the wire-limit test above pins 413). 503: transient sink error. 429: rate
  limited.
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

import enum
import json
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import parse_qs

__all__ = [
    "CAPTURE_METHODS",
    "CAPTURE_PATHS",
    "DECOMPRESSED_BUDGET_FACTOR",
    "DEFAULT_MAX_BODY_BYTES",
    "HEALTH_PATHS",
    "JSON_TYPE",
    "SUCCESS_BODY",
    "TEXT_TYPE",
    "CaptureRejectedError",
    "CaptureResult",
    "Rejection",
    "accept_events",
    "answer_request",
    "compression_hint",
    "decode_payload",
    "distinct_id_of",
    "error_text",
    "events_in",
    "is_gzip",
    "peek_payload",
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

CAPTURE_METHODS = frozenset({"GET", "POST", "OPTIONS"})
"""The methods PostHog's router serves on the capture routes."""

HEALTH_PATHS = frozenset({"/", "/_readiness", "/_liveness"})
"""Routes that answer ``capture`` to GET."""

SUCCESS_BODY = b'{"status":1}'
TEXT_TYPE = "text/plain; charset=utf-8"
JSON_TYPE = "application/json"

_MAX_DISTINCT_ID_CHARS = 200
_MAX_TOKEN_BYTES = 64
_TOKEN_ALIASES = ("token", "$token", "api_key")
_DISTINCT_ID_ALIASES = ("distinct_id", "$distinct_id")
_I64 = 2**63


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


_ERROR_TEXT = {
    400: "failed to decode request: rejected by script",
    401: Rejection.NO_TOKEN.value[1],
    413: "maximum event size exceeded: rejected by script",
    429: "rate limited",
    503: "transient error, please retry",
}


def error_text(status: int) -> str:
    """The plain-text body PostHog sends with an error status (the reason phrase otherwise)."""
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "error"
    return _ERROR_TEXT.get(status, phrase)


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
        return _refused(rejected, was_gzip, payload)
    if parse_qs(query).get("beacon") == ["1"]:
        return CaptureResult(204, b"", None, was_gzip, payload, events, None)
    return CaptureResult(200, SUCCESS_BODY, JSON_TYPE, was_gzip, payload, events, None)


def answer_request(
    method: str,
    path: str,
    body: bytes,
    *,
    query: str = "",
    content_encoding: str | None = None,
    body_size: int | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    max_decompressed_bytes: int | None = None,
) -> CaptureResult:
    """What PostHog answers to a whole request on any route: the wire cap first, then the route.

    ``body_size`` is how many body bytes came off the wire (``len(body)`` when None); above
    ``max_body_bytes`` the answer is 413 whatever ``body`` holds, so a caller that stopped
    keeping bytes past the cap passes the size it drained.
    """
    size = len(body) if body_size is None else body_size
    if size > max_body_bytes:
        return _refused(
            CaptureRejectedError(
                Rejection.EVENT_TOO_BIG, f"Request body exceeds limit of {max_body_bytes} bytes"
            )
        )
    if path in CAPTURE_PATHS:
        if method == "OPTIONS":
            return CaptureResult(200, SUCCESS_BODY, JSON_TYPE, False, None, (), None)
        if method not in CAPTURE_METHODS:
            return CaptureResult(405, b"", None, False, None, (), None)
        budget = max_decompressed_bytes
        if budget is None:
            budget = max_body_bytes * DECOMPRESSED_BUDGET_FACTOR
        return process_capture(
            body,
            path=path,
            query=query,
            content_encoding=content_encoding,
            max_decompressed_bytes=budget,
        )
    if path in HEALTH_PATHS and method == "GET":
        return CaptureResult(200, b"capture", TEXT_TYPE, False, None, (), None)
    return CaptureResult(404, b"", None, False, None, (), None)


def _refused(
    rejected: CaptureRejectedError, was_gzip: bool = False, payload: Any = None
) -> CaptureResult:
    return CaptureResult(
        status=rejected.status,
        body=rejected.message.encode("utf-8"),
        content_type=TEXT_TYPE,
        was_gzip=was_gzip,
        payload=payload,
        events=(),
        error=rejected.message,
    )


def peek_payload(
    body: bytes, *, query: str = "", content_encoding: str | None = None, limit: int
) -> tuple[bool, Any]:
    """(was_gzip, document) of a body without validating it; the document is None if unreadable.

    For answers that skip PostHog's validation (scripted statuses and faults), so the recorded
    request still shows what was sent.
    """
    gz = is_gzip(body, query=query, content_encoding=content_encoding)
    if not body:
        return gz, None
    try:
        return gz, decode_payload(body, query=query, content_encoding=content_encoding, limit=limit)
    except CaptureRejectedError:
        return gz, None


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
        return json.loads(text, parse_constant=_refuse_constant, parse_int=_any_length_int)
    except ValueError as exc:
        raise CaptureRejectedError(Rejection.REQUEST_PARSING, str(exc)) from None


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_INT_PIECE_DIGITS = 1000


def _any_length_int(text: str) -> int:
    """A JSON integer of any length: int() refuses text past sys.get_int_max_str_digits()
    digits, and the sidecar passes such a number through, so it is built a piece at a time."""
    try:
        return int(text)
    except ValueError:
        pass
    digits = text.lstrip("-")
    value = 0
    for start in range(0, len(digits), _INT_PIECE_DIGITS):
        piece = digits[start : start + _INT_PIECE_DIGITS]
        value = value * 10 ** len(piece) + int(piece)
    return -value if text.startswith("-") else value


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
