"""JSON-RPC 2.0 dispatch for one line of input, trio-correct and free of I/O.

jsonrpcserver parses, validates, binds params, calls methods and shapes responses, and this
module is the only one that touches it: methods return `success(...)` or `invalid_params(...)`
and raise `CallError`, all defined here. The library's public dispatchers (`async_dispatch`
and friends) gather a batch with `asyncio.gather`, which cannot run under trio, and its public
sync ones cannot await a method; so this module drives the per-request pipeline they are built
from (`async_dispatcher.dispatch_request`, which only awaits the method, then
`dispatcher.to_response` and `response.to_serializable_one`), one request after another. Those
modules are not the library's documented API, which is why pyproject.toml pins its exact
version. This module also checks each member of a batch on its own, as the JSON-RPC spec asks,
where the library would refuse the whole batch.

Each method has a `Lane`, written next to it in the table the app builds (`Method`), which says
how its line is ordered against the lines around it; `Dispatcher.lane` reads it, and a call
gets its place in line order as an argument (`Call.turn`).

Errors reach the wire here and only here.
"""

from __future__ import annotations

import enum
import importlib.util
import inspect
import json
import logging
import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Generic, TypeAlias, TypeVar

import trio

from sidecar.wire import fastjson, stdjson
from sidecar.wire.framing import OversizedLine


def _enter_bare_package(name: str) -> ModuleType | None:
    """Put package `name` in `sys.modules` without running its `__init__`; None when it is
    imported already."""
    if name in sys.modules:
        return None
    spec = importlib.util.find_spec(name)
    if spec is None:
        raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    package = importlib.util.module_from_spec(spec)
    sys.modules[name] = package
    return package


# jsonrpcserver's `__init__` imports what this module never uses: its public dispatchers'
# default request validator (jsonschema, whose validator it builds and checks at import) and
# its demo HTTP server. The pipeline modules below import neither, and requests are checked
# here (`request_problem`), so they load under a bare package object, which then leaves
# `sys.modules`: a later `import jsonrpcserver` elsewhere runs the real `__init__`, which
# finds these modules already loaded.
_bare = _enter_bare_package("jsonrpcserver")
try:
    from jsonrpcserver.async_dispatcher import dispatch_request
    from jsonrpcserver.dispatcher import create_request, to_response
    from jsonrpcserver.exceptions import JsonRpcError
    from jsonrpcserver.response import to_serializable_one
    from jsonrpcserver.result import InvalidParams, Success
    from jsonrpcserver.result import Result as _Result
finally:
    if _bare is not None and sys.modules.get("jsonrpcserver") is _bare:
        del sys.modules["jsonrpcserver"]

log = logging.getLogger(__name__)
C = TypeVar("C")
Result: TypeAlias = _Result
"""What a handler returns: `success(...)` or `invalid_params(...)`."""

# The codes JSON-RPC 2.0 defines, and the one of ours the contract adds.
ERROR_PARSE_ERROR = -32700
ERROR_INVALID_REQUEST = -32600
ERROR_STORAGE_UNAVAILABLE = -32001
# Requests in one JSON-RPC batch line. Each member may be a ph_send_batch whose answer lists up
# to 10,000 rejections, and a batch is answered in one line: the bound keeps that line, and
# the time the loop spends building it, small.
MAX_BATCH_REQUESTS = 32
_REQUEST_KEYS = frozenset({"jsonrpc", "method", "params", "id"})


class Lane(enum.Enum):
    """How a line is ordered against the lines before and after it.

    The queue sees the lines' writes, and the app sees their answers, in the order the lines
    came, except for a `BESIDE` line: its writes and its answer may come after those of the
    lines that follow it.
    """

    IN_ORDER = "in order"
    """Starts once every earlier line is answered; the next line waits for its answer."""

    OVERLAPPING = "overlapping"
    """A lone request that starts at once, beside the earlier lines still running, and waits
    for them (`Turn.wait`) before it touches shared state and before it is answered. Only a
    line that is one request takes this lane; in a JSON-RPC batch the method runs in order."""

    BESIDE = "beside"
    """May wait a long time: starts once every earlier line is answered, then runs beside the
    later lines and is answered when it is done. A batch line with such a member takes it."""


@dataclass(frozen=True, slots=True)
class Method:
    """One row of the method table: the handler and its line's `Lane`.

    The handler is `async (call: Call[C], **params) -> Result`; params are bound by name or
    position as jsonrpcserver does, and a missing or unknown one answers -32602 naming it.
    """

    handler: Callable[..., Awaitable[Result]]
    lane: Lane = Lane.IN_ORDER


class Turn:
    """A call's place in line order.

    `wait` returns once every earlier line has taken its place in the queue; `take_place`
    marks this call's place taken, so the next line may write while this one's commit is still
    under way. A line whose call ends without taking its place takes it as it ends.
    """

    __slots__ = ("_earlier", "_mine")

    def __init__(self, earlier: trio.Event | None = None, mine: trio.Event | None = None) -> None:
        """`earlier` is set once the lines before this one have their places (None: they
        have); `mine` is set by `take_place` (None: no line waits for it)."""
        self._earlier = earlier
        self._mine = mine

    async def wait(self) -> None:
        """Return once every earlier line has its place (at once when they already had)."""
        if self._earlier is not None:
            await self._earlier.wait()

    def take_place(self) -> None:
        """This call's writes are in the queue's order now; the next line may write."""
        if self._mine is not None:
            self._mine.set()


IN_TURN = Turn()
"""The turn of a line that starts only once every earlier line is done."""


@dataclass(frozen=True, slots=True)
class Call(Generic[C]):
    """What a handler gets as its first argument: the app's context and the call's turn."""

    context: C
    turn: Turn


class CallError(JsonRpcError):
    """Raised by a handler to answer with this error: `CallError(code, message, data)`."""

    def __init__(self, code: int, message: str, data: object) -> None:
        """An error answer with a `data` that says what went wrong."""
        super().__init__(code, message, data)


def success(value: object) -> Result:
    """A handler's answer: `value` is the result."""
    return Success(value)


def invalid_params(data: str) -> Result:
    """A handler's answer: -32602, with `data` naming the param and saying what is wrong."""
    return InvalidParams(data)


def encode(message: object) -> bytes:
    """One response line: compact, ASCII-only JSON and a newline."""
    try:
        text = json.dumps(message, ensure_ascii=True, separators=(",", ":"))
    except TypeError:  # a `LongInt` id: written back as the digits it came with
        text = stdjson.dumps(message, ensure_ascii=True)
    return text.encode("ascii") + b"\n"


def error_response(code: int, message: str, data: object = None, id_: object = None) -> bytes:
    """An error response line."""
    error: dict[str, object] = {"code": code, "message": message}
    if data is not None:
        error["data"] = data
    return encode({"jsonrpc": "2.0", "error": error, "id": id_})


def _valid_id(value: object) -> bool:
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | stdjson.LongInt):
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
            body = stdjson.loads(frame.decode("utf-8"))
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


class Dispatcher(Generic[C]):
    """Calls methods for parsed lines and returns response lines (None when nothing is owed)."""

    def __init__(self, methods: Mapping[str, Method], context: C) -> None:
        """`methods` is the method table by name; `context` goes to every call (`Call`)."""
        self._lanes = {name: method.lane for name, method in methods.items()}
        self._beside = frozenset(
            name for name, method in methods.items() if method.lane is Lane.BESIDE
        )
        self._handlers = {name: method.handler for name, method in methods.items()}
        self._context = context
        # jsonrpcserver binds params with `inspect.signature(handler).bind(...)` on every call,
        # and `inspect.signature` returns a function's `__signature__` when one is set: each
        # handler carries its own, built once, instead of one built per call.
        for handler in self._handlers.values():
            handler.__signature__ = inspect.signature(handler)  # type: ignore[attr-defined]

    def lane(self, parsed: Parsed) -> Lane:
        """The lane of the line: its method's for one request; for a JSON-RPC batch, `BESIDE`
        when a member calls a `BESIDE` method and `IN_ORDER` otherwise."""
        if isinstance(parsed.body, dict):
            name = parsed.body.get("method")
            return self._lanes.get(name, Lane.IN_ORDER) if isinstance(name, str) else Lane.IN_ORDER
        if self._beside.isdisjoint(parsed.method_names()):
            return Lane.IN_ORDER
        return Lane.BESIDE

    async def respond(self, parsed: Parsed, turn: Turn = IN_TURN) -> bytes | None:
        """Run the line's request(s) in order and encode what is owed back.

        `turn` is handed to every call of the line; the default is for a line that starts once
        every earlier line is done.
        """
        call = Call(self._context, turn)
        if isinstance(parsed.body, dict):
            answer = await self._one(parsed.body, call)
            return None if answer is None else encode(answer)
        answers = [await self._one(item, call) for item in parsed.body]
        owed = [answer for answer in answers if answer is not None]
        return encode(owed) if owed else None

    async def _one(self, item: object, call: Call[C]) -> dict[str, Any] | None:
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
        request, result = await dispatch_request(self._handlers, call, request)
        if "id" not in item:  # a notification: it ran, nothing is owed
            return None
        serializable = to_serializable_one(to_response(request, result))
        assert isinstance(serializable, dict)
        return serializable
