"""JSON-RPC 2.0 dispatch for one line of input, trio-correct and free of I/O.

jsonrpcserver parses, validates, binds params, calls methods and shapes responses. Its own
`async_dispatch` gathers a batch with `asyncio.gather`, which cannot run under trio, so this
module drives the library's per-request pipeline (`async_dispatcher.dispatch_request`, which
only awaits the method) itself, one request after another. It also checks each member of a
batch on its own, as the JSON-RPC spec asks, where the library would refuse the whole batch.

Errors reach the wire here and only here.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from jsonrpcserver.async_dispatcher import dispatch_request
from jsonrpcserver.codes import ERROR_INVALID_REQUEST, ERROR_PARSE_ERROR
from jsonrpcserver.dispatcher import create_request, to_response
from jsonrpcserver.methods import Methods
from jsonrpcserver.response import to_serializable_one
from jsonrpcserver.sentinels import NOID

from sidecar.wire import fastjson
from sidecar.wire.framing import OversizedLine

log = logging.getLogger(__name__)

ERROR_STORAGE_UNAVAILABLE = -32001
# Requests in one JSON-RPC batch line. Each member may be a ph_send_batch whose answer lists up
# to 10,000 rejections (~0.5 MB of JSON, ~4 MB while built), and a batch is answered in one
# line: unbounded, a 2 MiB line of a million junk members made a 115 MB answer, took 620 MB
# and stalled the loop for 15 s (a 16 MiB line, eight times that).
MAX_BATCH_REQUESTS = 32
_REQUEST_KEYS = frozenset({"jsonrpc", "method", "params", "id"})


def encode(message: object) -> bytes:
    """One response line: compact, ASCII-only JSON and a newline."""
    return json.dumps(message, ensure_ascii=True, separators=(",", ":")).encode("ascii") + b"\n"


def error_response(code: int, message: str, data: object = None, id_: object = None) -> bytes:
    """An error response line."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "error": error, "id": id_})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    return isinstance(value, float) and math.isfinite(value)


def request_problem(item: object) -> str | None:
    """Why `item` is not a JSON-RPC 2.0 request object, or None when it is one."""
    if not isinstance(item, dict):
        return "a request must be a JSON object"
    if item.get("jsonrpc") != "2.0":
        return "'jsonrpc' must be \"2.0\""
    if not isinstance(item.get("method"), str):
        return "'method' must be a string"
    if "params" in item and not isinstance(item["params"], dict | list):
        return "'params' must be an object or an array"
    if "id" in item and not _valid_id(item["id"]):
        return "'id' must be a string, a number or null"
    extra = set(item) - _REQUEST_KEYS
    if extra:
        return f"unknown member {sorted(extra)[0]!r}"
    return None


@dataclass(frozen=True, slots=True)
class Parsed:
    """A decoded line: one request object or a batch of them (members not yet checked)."""

    body: dict[str, Any] | list[Any]

    @property
    def is_batch(self) -> bool:
        """Whether the line was a JSON array."""
        return isinstance(self.body, list)

    def method_names(self) -> set[str]:
        """The methods this line calls, as far as they can be read."""
        items = self.body if isinstance(self.body, list) else [self.body]
        return {
            i["method"] for i in items if isinstance(i, dict) and isinstance(i.get("method"), str)
        }


def parse_line(frame: bytes | OversizedLine) -> Parsed | bytes:
    """Decode a frame; returns the parsed line, or the error response line to send instead."""
    if isinstance(frame, OversizedLine):
        return error_response(
            ERROR_INVALID_REQUEST,
            "Invalid request",
            f"line over the size limit ({frame.seen_bytes}+ bytes)",
        )
    try:
        body = fastjson.loads(frame)  # checks the UTF-8 itself: no decoding on this path
    except fastjson.Declined:
        try:
            body = json.loads(frame.decode("utf-8"), parse_constant=_reject_constant)
        except UnicodeDecodeError as exc:
            return error_response(
                ERROR_PARSE_ERROR, "Parse error", f"invalid UTF-8 at byte {exc.start}"
            )
        except (ValueError, RecursionError) as exc:
            return error_response(ERROR_PARSE_ERROR, "Parse error", str(exc)[:200])
    if isinstance(body, list) and not body:
        return error_response(ERROR_INVALID_REQUEST, "Invalid request", "empty batch")
    if isinstance(body, list) and len(body) > MAX_BATCH_REQUESTS:
        return error_response(
            ERROR_INVALID_REQUEST,
            "Invalid request",
            f"batch of {len(body)} requests; at most {MAX_BATCH_REQUESTS}",
        )
    if not isinstance(body, dict | list):
        return error_response(
            ERROR_INVALID_REQUEST, "Invalid request", "a request must be a JSON object"
        )
    return Parsed(body)


class Dispatcher:
    """Calls methods for parsed lines and returns response lines (None when nothing is owed)."""

    def __init__(
        self, methods: Methods, context: object, *, slow_methods: Collection[str] = ()
    ) -> None:
        """`context` is passed to every method as its first argument."""
        self._methods = methods
        self._context = context
        self._slow = frozenset(slow_methods)

    def is_slow(self, parsed: Parsed) -> bool:
        """Whether the line may wait a long time (and so should not hold up the lines after it)."""
        return not self._slow.isdisjoint(parsed.method_names())

    async def respond(self, parsed: Parsed) -> bytes | None:
        """Run the line's request(s) in order and encode what is owed back."""
        if isinstance(parsed.body, dict):
            answer = await self._one(parsed.body)
            return None if answer is None else encode(answer)
        answers = [a for a in [await self._one(item) for item in parsed.body] if a is not None]
        return encode(answers) if answers else None

    async def _one(self, item: object) -> dict[str, Any] | None:
        problem = request_problem(item)
        if problem is not None:
            id_ = item.get("id") if isinstance(item, dict) and _valid_id(item.get("id")) else None
            return {
                "jsonrpc": "2.0",
                "error": {
                    "code": ERROR_INVALID_REQUEST,
                    "message": "Invalid request",
                    "data": problem,
                },
                "id": id_,
            }
        assert isinstance(item, dict)
        request = create_request(item)
        request, result = await dispatch_request(self._methods, self._context, request)
        if request.id is NOID:
            return None
        serializable = to_serializable_one(to_response(request, result))
        assert isinstance(serializable, dict)
        return serializable
