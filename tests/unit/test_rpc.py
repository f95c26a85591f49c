"""Unit tests for sidecar.wire.rpc: line parsing, request checks and the trio-side dispatcher."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any

import pytest
import trio
import trio.testing

from sidecar.wire.framing import OversizedLine
from sidecar.wire.rpc import (
    ERROR_STORAGE_UNAVAILABLE,
    IN_TURN,
    Call,
    CallError,
    Dispatcher,
    Lane,
    Method,
    Parsed,
    Result,
    Turn,
    encode,
    error_response,
    parse_line,
    request_problem,
    success,
)
from sidecar.wire.stdjson import LongInt


@dataclass
class Context:
    """What the test methods see as their context; records the calls made."""

    calls: list[str] = field(default_factory=list)


async def add(call: Call[Context], a: int, b: int) -> Result:
    """Return a + b."""
    call.context.calls.append(f"add {a} {b}")
    return success(a + b)


async def note(call: Call[Context], text: str = "") -> Result:
    """Record `text`; returns null."""
    call.context.calls.append(f"note {text}")
    return success(None)


async def echo(call: Call[Context], value: object) -> Result:
    """Return `value` unchanged."""
    call.context.calls.append("echo")
    return success(value)


async def storage_full(call: Call[Context]) -> Result:
    """Fail the way the store does when the disk is full."""
    call.context.calls.append("storage_full")
    raise CallError(ERROR_STORAGE_UNAVAILABLE, "Storage unavailable", "disk is full")


async def buggy(call: Call[Context]) -> Result:
    """Fail with a plain exception, as a bug would."""
    call.context.calls.append("buggy")
    raise RuntimeError("oops")


async def slow(call: Call[Context]) -> Result:
    """Stand-in for a method that may wait."""
    return success("done")


async def in_turn(call: Call[Context], name: str) -> Result:
    """Record `name` once the call's turn has come, as a store write does."""
    await call.turn.wait()
    call.context.calls.append(name)
    return success(name)


METHODS: dict[str, Method] = {
    "add": Method(add),
    "note": Method(note),
    "echo": Method(echo),
    "storage_full": Method(storage_full),
    "buggy": Method(buggy),
    "slow": Method(slow, Lane.BESIDE),
    "write": Method(in_turn, Lane.OVERLAPPING),
}


def parsed(message: object) -> Parsed:
    """Parse `message` as the reader would, failing if it is not a valid line."""
    result = parse_line(json.dumps(message).encode())
    assert isinstance(result, Parsed)
    return result


def error_of(line: bytes) -> dict[str, Any]:
    """Decode an error response line and return the whole response."""
    assert line.endswith(b"\n")
    response = json.loads(line)
    assert isinstance(response, dict)
    assert response["jsonrpc"] == "2.0"
    assert "result" not in response
    return response


def refused(frame: bytes | OversizedLine) -> dict[str, Any]:
    """Parse a frame that must be refused and return the error response it gets."""
    result = parse_line(frame)
    assert isinstance(result, bytes)
    return error_of(result)


async def respond(message: object, ctx: Context | None = None) -> Any:
    """Dispatch `message` and return the decoded response (None when nothing is owed)."""
    dispatcher = Dispatcher(METHODS, ctx if ctx is not None else Context())
    line = await dispatcher.respond(parsed(message))
    return None if line is None else json.loads(line)


def req(method: str, params: object = None, id_: object = 1) -> dict[str, Any]:
    """A request object (params omitted when None)."""
    item: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        item["params"] = params
    return item


def notif(method: str, params: object = None) -> dict[str, Any]:
    """A notification object (no id)."""
    item: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        item["params"] = params
    return item


# --- parse_line ---------------------------------------------------------------------------


def test_parse_valid_object_and_batch() -> None:
    """A JSON object or a non-empty array is returned as Parsed, holding the decoded line."""
    single = parse_line(b'{"jsonrpc":"2.0","method":"add","id":1}')
    assert isinstance(single, Parsed)
    assert single.body == {"jsonrpc": "2.0", "method": "add", "id": 1}
    batch = parse_line(b'[{"jsonrpc":"2.0","method":"add","id":1}, 5]')
    assert isinstance(batch, Parsed)
    assert batch.body == [{"jsonrpc": "2.0", "method": "add", "id": 1}, 5]


def test_parse_invalid_utf8_is_parse_error() -> None:
    """Bytes that are not UTF-8 give -32700 with id null and the byte offset."""
    response = refused(b'{"a":"\xff"}')
    assert response["error"]["code"] == -32700
    assert response["id"] is None
    assert "byte 6" in response["error"]["data"]


@pytest.mark.parametrize(
    "line", [b"{", b"{'a':1}", b'{"a":1,}', b"not json", b'{"a":1} trailing', b"\x00"]
)
def test_parse_bad_json_is_parse_error(line: bytes) -> None:
    """Malformed JSON gives -32700 with id null."""
    response = refused(line)
    assert response["error"]["code"] == -32700
    assert response["error"]["message"] == "Parse error"
    assert response["id"] is None


@pytest.mark.parametrize("constant", [b"NaN", b"Infinity", b"-Infinity"])
def test_parse_nan_and_infinity_are_parse_errors(constant: bytes) -> None:
    """NaN and Infinity are not JSON, even though Python's parser accepts them."""
    line = b'{"jsonrpc":"2.0","method":"echo","params":[' + constant + b'],"id":1}'
    response = refused(line)
    assert response["error"]["code"] == -32700
    assert response["id"] is None


def test_parse_deep_nesting_is_parse_error() -> None:
    """JSON nested past the recursion limit is a parse error, not a crash."""
    line = b"[" * 100_000 + b"]" * 100_000
    response = refused(line)
    assert response["error"]["code"] == -32700


LONG = "9" * (sys.get_int_max_str_digits() + 1)  # past what int() takes from text


async def test_a_request_with_an_integer_past_the_conversion_limit_is_answered_by_its_id() -> None:
    """An integer too long for int() anywhere in a request (valid JSON) does not make the line a
    parse error: the request runs and is answered with its id."""
    line = b'{"jsonrpc":"2.0","method":"echo","params":[[1,%s]],"id":7}' % LONG.encode()
    result = parse_line(line)
    assert isinstance(result, Parsed)
    answer = await Dispatcher(METHODS, Context()).respond(result)
    assert answer == b'{"jsonrpc":"2.0","result":[1,%s],"id":7}\n' % LONG.encode()


async def test_a_long_integer_id_is_echoed_with_the_same_digits() -> None:
    """A long integer is a valid id (a number), echoed digit for digit, in a batch too."""
    for sign in ("", "-"):
        digits = (sign + LONG).encode()
        line = b'[{"jsonrpc":"2.0","method":"add","params":[1,2],"id":%s}]' % digits
        result = parse_line(line)
        assert isinstance(result, Parsed)
        assert request_problem(result.body[0]) is None
        answer = await Dispatcher(METHODS, Context()).respond(result)
        assert answer == b'[{"jsonrpc":"2.0","result":3,"id":%s}]\n' % digits


async def test_a_long_integer_where_a_param_is_bound_is_invalid_params() -> None:
    """A long integer as an unexpected positional param is -32602 with the request's id."""
    result = parse_line(b'{"jsonrpc":"2.0","method":"add","params":[1,2,%s],"id":"x"}'
                        % LONG.encode())
    assert isinstance(result, Parsed)
    answer = await Dispatcher(METHODS, Context()).respond(result)
    assert answer is not None
    assert json.loads(answer)["error"]["code"] == -32602
    assert json.loads(answer)["id"] == "x"


def test_encode_writes_a_long_integer_as_its_digits() -> None:
    """`encode` writes a LongInt as the bare number it came as."""
    assert encode({"id": LongInt("-" + LONG)}) == b'{"id":-%s}\n' % LONG.encode()


def test_parse_oversized_is_invalid_request_with_size() -> None:
    """An OversizedLine gives -32600 with id null and the size seen."""
    response = refused(OversizedLine(16_777_217))
    assert response["error"]["code"] == -32600
    assert response["id"] is None
    assert "16777217" in response["error"]["data"]


def test_parse_empty_batch_is_invalid_request() -> None:
    """`[]` gives a single -32600 (not an empty array)."""
    response = refused(b" [ ] ")
    assert response["error"]["code"] == -32600
    assert response["error"]["data"] == "empty batch"
    assert response["id"] is None


@pytest.mark.parametrize("line", [b"42", b'"ping"', b"null", b"true", b"1.5"])
def test_parse_non_object_is_invalid_request(line: bytes) -> None:
    """A JSON scalar is valid JSON but not a request: -32600."""
    response = refused(line)
    assert response["error"]["code"] == -32600
    assert response["id"] is None


def test_error_response_omits_absent_data() -> None:
    """`error_response` without data has no `data` member; with one, it is kept."""
    assert json.loads(error_response(-32601, "Method not found", id_=3)) == {
        "jsonrpc": "2.0",
        "error": {"code": -32601, "message": "Method not found"},
        "id": 3,
    }
    assert json.loads(error_response(-32600, "Invalid request", "why"))["error"]["data"] == "why"


# --- request_problem ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "item",
    [
        {"jsonrpc": "2.0", "method": "m"},
        {"jsonrpc": "2.0", "method": "m", "id": 1},
        {"jsonrpc": "2.0", "method": "m", "id": "abc"},
        {"jsonrpc": "2.0", "method": "m", "id": None},
        {"jsonrpc": "2.0", "method": "m", "id": 1.5},
        {"jsonrpc": "2.0", "method": "m", "params": [], "id": 1},
        {"jsonrpc": "2.0", "method": "m", "params": {"a": 1}, "id": 1},
    ],
)
def test_request_problem_accepts_valid_requests(item: object) -> None:
    """Well-formed requests and notifications have no problem."""
    assert request_problem(item) is None


@pytest.mark.parametrize(
    ("item", "needle"),
    [
        (5, "JSON object"),
        ([], "JSON object"),
        ("x", "JSON object"),
        ({"method": "m", "id": 1}, "jsonrpc"),
        ({"jsonrpc": "1.0", "method": "m", "id": 1}, "jsonrpc"),
        ({"jsonrpc": 2.0, "method": "m", "id": 1}, "jsonrpc"),
        ({"jsonrpc": "2.0", "id": 1}, "method"),
        ({"jsonrpc": "2.0", "method": 7, "id": 1}, "method"),
        ({"jsonrpc": "2.0", "method": None, "id": 1}, "method"),
        ({"jsonrpc": "2.0", "method": "m", "params": "a", "id": 1}, "params"),
        ({"jsonrpc": "2.0", "method": "m", "params": 3, "id": 1}, "params"),
        ({"jsonrpc": "2.0", "method": "m", "params": None, "id": 1}, "params"),
        ({"jsonrpc": "2.0", "method": "m", "id": True}, "id"),
        ({"jsonrpc": "2.0", "method": "m", "id": [1]}, "id"),
        ({"jsonrpc": "2.0", "method": "m", "id": {"a": 1}}, "id"),
        ({"jsonrpc": "2.0", "method": "m", "id": float("nan")}, "id"),
        ({"jsonrpc": "2.0", "method": "m", "id": 1, "extra": 0}, "'extra'"),
    ],
)
def test_request_problem_names_the_problem(item: object, needle: str) -> None:
    """Each malformed request is refused with a reason naming what is wrong."""
    problem = request_problem(item)
    assert problem is not None
    assert needle in problem


# --- Dispatcher ---------------------------------------------------------------------------


async def test_single_request_with_named_params() -> None:
    """A request runs its method and answers with its result and id."""
    ctx = Context()
    response = await respond(req("add", {"a": 2, "b": 3}, id_="req-7"), ctx)
    assert response == {"jsonrpc": "2.0", "result": 5, "id": "req-7"}
    assert ctx.calls == ["add 2 3"]


async def test_single_request_with_positional_params() -> None:
    """Positional params follow the context argument."""
    assert (await respond(req("add", [4, 5])))["result"] == 9


async def test_request_with_null_id_is_answered() -> None:
    """`"id": null` is a request, not a notification, and gets an answer with id null."""
    response = await respond(req("add", {"a": 1, "b": 1}, id_=None))
    assert response == {"jsonrpc": "2.0", "result": 2, "id": None}


async def test_notification_runs_but_gets_no_response() -> None:
    """A notification runs its method and owes nothing back."""
    ctx = Context()
    assert await respond(notif("note", {"text": "hi"}), ctx) is None
    assert ctx.calls == ["note hi"]


async def test_batch_with_mixed_members_answers_each_in_order() -> None:
    """Each invalid member gets its own -32600 (id echoed when valid); valid ones still run."""
    ctx = Context()
    batch = [
        req("add", {"a": 1, "b": 2}, id_=1),
        42,
        {"jsonrpc": "2.0", "method": 5, "id": "x"},
        {"jsonrpc": "1.0", "method": "add", "id": True},
        notif("note", {"text": "n"}),
        {"jsonrpc": "2.0", "method": "note"},
        {"jsonrpc": "2.0", "method": "note", "params": "bad"},
        req("add", [10, 20], id_=2),
    ]
    responses = await respond(batch, ctx)
    assert isinstance(responses, list)
    assert [r.get("id") for r in responses] == [1, None, "x", None, None, 2]
    assert responses[0]["result"] == 3
    for invalid in responses[1:5]:
        assert invalid["error"]["code"] == -32600
        assert invalid["error"]["message"] == "Invalid request"
        assert isinstance(invalid["error"]["data"], str)
    assert responses[5]["result"] == 30
    assert ctx.calls == ["add 1 2", "note n", "note ", "add 10 20"]


async def test_batch_of_notifications_owes_nothing() -> None:
    """A batch of only notifications runs them all in order and returns None."""
    ctx = Context()
    batch = [notif("note", {"text": "1"}), notif("note", {"text": "2"}), notif("nope")]
    assert await respond(batch, ctx) is None
    assert ctx.calls == ["note 1", "note 2"]


async def test_batch_with_one_request_is_still_an_array() -> None:
    """A batch answer is always an array, even with one response."""
    assert await respond([req("add", [1, 1], id_=9)]) == [{"jsonrpc": "2.0", "result": 2, "id": 9}]


async def test_unknown_method() -> None:
    """An unknown method gives -32601 with the request's id."""
    response = await respond(req("nope", id_=4))
    assert response["error"]["code"] == -32601
    assert response["id"] == 4


async def test_unknown_param_is_invalid_params_naming_it() -> None:
    """An unexpected named param gives -32602 whose data names it; the method does not run."""
    ctx = Context()
    response = await respond(req("add", {"a": 1, "b": 2, "bogus": 3}, id_=5), ctx)
    assert response["error"]["code"] == -32602
    assert "bogus" in response["error"]["data"]
    assert response["id"] == 5
    assert ctx.calls == []


async def test_missing_param_is_invalid_params_naming_it() -> None:
    """A missing required param gives -32602 whose data names it."""
    response = await respond(req("add", {"a": 1}, id_=6))
    assert response["error"]["code"] == -32602
    assert "'b'" in response["error"]["data"]


async def test_json_rpc_error_from_a_method_keeps_its_code() -> None:
    """A method raising JsonRpcError(-32001, ...) answers with that code, message and data."""
    response = await respond(req("storage_full", id_=8))
    assert response == {
        "jsonrpc": "2.0",
        "error": {"code": -32001, "message": "Storage unavailable", "data": "disk is full"},
        "id": 8,
    }


async def test_plain_exception_from_a_method_is_internal_error() -> None:
    """A method raising a plain exception answers -32603 and the server goes on."""
    ctx = Context()
    dispatcher = Dispatcher(METHODS, ctx)
    line = await dispatcher.respond(parsed(req("buggy", id_=10)))
    assert line is not None
    response = json.loads(line)
    assert response["error"]["code"] == -32603
    assert response["id"] == 10
    after = await dispatcher.respond(parsed(req("add", [1, 2], id_=11)))
    assert after is not None
    assert json.loads(after)["result"] == 3


async def test_response_line_is_ascii_with_one_newline() -> None:
    """Non-ASCII results are \\u-escaped; the line ends with its only newline."""
    dispatcher = Dispatcher(METHODS, Context())
    value = "héllo ☃ 😀\nline two\u2028"
    line = await dispatcher.respond(parsed(req("echo", [value], id_="é")))
    assert line is not None
    assert line.isascii()
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    assert b"\\u00e9" in line
    assert b"\\u2603" in line
    assert b"\\ud83d\\ude00" in line
    assert json.loads(line) == {"jsonrpc": "2.0", "result": value, "id": "é"}


def test_encode_is_compact_ascii_line() -> None:
    """`encode` writes compact separators, ASCII only, and one trailing newline."""
    assert encode({"a": [1, "ü"]}) == b'{"a":[1,"\\u00fc"]}\n'


def test_a_lone_request_takes_its_methods_lane() -> None:
    """One request is in the lane the table gives its method; an unknown or unreadable method
    is in order."""
    dispatcher = Dispatcher(METHODS, Context())
    assert dispatcher.lane(parsed(req("write", {"name": "x"}))) is Lane.OVERLAPPING
    assert dispatcher.lane(parsed(notif("slow"))) is Lane.BESIDE
    assert dispatcher.lane(parsed(req("add", [1, 2]))) is Lane.IN_ORDER
    assert dispatcher.lane(parsed(req("nope"))) is Lane.IN_ORDER
    assert dispatcher.lane(parsed({"jsonrpc": "2.0", "method": ["write"], "id": 1})) is (
        Lane.IN_ORDER
    )


def test_a_batch_line_is_beside_when_a_member_is_and_in_order_otherwise() -> None:
    """A JSON-RPC batch runs beside later lines when any member's method does; an overlapping
    method in a batch does not make the batch overlap."""
    dispatcher = Dispatcher(METHODS, Context())
    assert dispatcher.lane(parsed([req("add", [1, 2]), 7, notif("slow")])) is Lane.BESIDE
    assert dispatcher.lane(parsed([req("write", {"name": "x"}), req("add", [1, 2])])) is (
        Lane.IN_ORDER
    )
    assert dispatcher.lane(parsed([req("add", [1, 2]), {"method": 3}, 5])) is Lane.IN_ORDER


async def test_a_call_waits_for_the_turn_it_is_handed() -> None:
    """A call handed a turn whose earlier lines are not done waits in `turn.wait()` until they
    are; with the default turn it runs at once."""
    ctx = Context()
    dispatcher = Dispatcher(METHODS, ctx)
    earlier_done = trio.Event()
    answers: list[bytes | None] = []

    async def answer() -> None:
        answers.append(await dispatcher.respond(parsed(req("write", {"name": "late"})),
                                                Turn(earlier_done)))

    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(answer)
            await trio.testing.wait_all_tasks_blocked()
            assert ctx.calls == []
            assert await dispatcher.respond(parsed(req("write", {"name": "now"}))) is not None
            assert ctx.calls == ["now"]
            earlier_done.set()
    assert ctx.calls == ["now", "late"]
    assert answers[0] is not None
    assert json.loads(answers[0])["result"] == "late"


async def test_every_call_of_a_batch_line_gets_the_lines_turn() -> None:
    """The turn given to a line reaches each of its members' calls."""
    ctx = Context()
    earlier_done = trio.Event()
    line = parsed([req("write", {"name": "a"}, id_=1), req("write", {"name": "b"}, id_=2)])
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Dispatcher(METHODS, ctx).respond, line, Turn(earlier_done))
            await trio.testing.wait_all_tasks_blocked()
            assert ctx.calls == []
            earlier_done.set()
    assert ctx.calls == ["a", "b"]


async def test_the_default_turn_is_already_come() -> None:
    """`IN_TURN` never waits."""
    with trio.fail_after(5):
        await IN_TURN.wait()


def test_method_names_skips_unreadable_members() -> None:
    """`method_names` lists the string methods of well-shaped members only."""
    line = parsed([req("a"), {"method": 5}, "x", notif("b"), req("a")])
    assert line.method_names() == {"a", "b"}
