"""Unit tests for sidecar.wire.fastjson: its orjson fast paths give exactly what the standard
library paths they stand in for give, in `rpc.parse_line` and `events._serialize`,
hostile input too."""

from __future__ import annotations

import enum
import json
import math
import sys
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from support.events import normalize_event

from sidecar.wire import events, fastjson
from sidecar.wire.events import MAX_EVENT_BYTES, EventError, normalize_batch
from sidecar.wire.rpc import Parsed, parse_line

NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@contextmanager
def stdlib_only() -> Iterator[None]:
    """Run with the fast paths declining everything: the standard library path alone."""
    with (
        mock.patch.object(fastjson, "loads", side_effect=fastjson.Declined),
        mock.patch.object(fastjson, "dumps", side_effect=fastjson.Declined),
    ):
        yield


def shape(value: object) -> list[tuple[str, object]]:
    """Every node of `value` in order, strictly: types, key order and -0.0 against 0.0 count.

    Iterative, so values nested past the recursion limit compare too.
    """
    nodes: list[tuple[str, object]] = []
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            nodes.append(("dict", list(node)))
            stack.extend(reversed(list(node.values())))
        elif isinstance(node, list | tuple):
            nodes.append((type(node).__name__, len(node)))
            stack.extend(reversed(node))
        else:
            nodes.append((type(node).__name__, repr(node)))
    return nodes


def parse_outcome(frame: bytes) -> tuple[str, object]:
    """What `parse_line` makes of `frame`: the error response line, or the parsed body's shape."""
    result = parse_line(frame)
    if isinstance(result, bytes):
        return ("error", result)
    assert isinstance(result, Parsed)
    return ("parsed", shape(result.body))


def assert_parses_as_stdlib(frame: bytes) -> tuple[str, object]:
    """`parse_line(frame)` with the fast path gives what it gives without; returns that."""
    fast = parse_outcome(frame)
    with stdlib_only():
        slow = parse_outcome(frame)
    assert fast == slow
    return fast


# ---- parse_line: generated JSON texts, hostile ones included ---------------------------------

WHITESPACE = st.sampled_from(["", "", " ", "\t", "\n", "\r", "\r\n", " \t\r\n "])
EDGE_NUMBERS = [
    str(2**64), str(2**64 - 1), str(2**63), str(2**63 - 1), str(-(2**63)), str(-(2**63) - 1),
    str(2**70), str(-(2**70)), "999999999999999999", "-999999999999999999", "1000000000000000000",
    "1e400", "-1e400", "1e-400", "1E5", "1e+5", "1E-5", "-0", "-0.0", "0e0", "0.0e-0",
    "9007199254740993", "9007199254740993.0", "2.2250738585072011e-308", "4.9e-324",
    "2.4703282292062327e-324", "2.4703282292062328e-324", "1.7976931348623157e308",
    "1.7976931348623158e308", "1.7976931348623159e308", "0.30000000000000004",
    "123456789012345678.123456789012345678", "1" * 400, "1" + "0" * 5000, "1e99999999999999999999",
    "01", "1.", ".5", "-", "+1", "0x10", "NaN", "Infinity", "-Infinity", "nan", "1_000",
]
NUMBERS = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers().map(str),
    st.floats(allow_nan=False, allow_infinity=False).map(repr),
    st.from_regex(r"-?(0|[1-9][0-9]{0,24})(\.[0-9]{1,24})?([eE][+-]?[0-9]{1,4})?", fullmatch=True),
)
STRING_PIECES = st.one_of(
    st.characters(codec="utf-8", min_codepoint=0x20, exclude_characters='"\\'),
    st.sampled_from(["{", "[", "]", "}", "é", "😀", "\u2028", "\x7f", "\ufeff"]),
    st.from_regex(r"[0-9]{15,25}", fullmatch=True),
    st.sampled_from([
        '\\"', "\\\\", "\\/", "\\b", "\\f", "\\n", "\\r", "\\t", "\\u0000", "\\u00e9",
        "\\ud83d\\ude00", "\\uDBFF\\uDFFF", "\\ud800", "\\udc00", "\\ud800\\u0041",
        "\\udc00\\ud800", "\\x41", "\\u12", "\\U0001F600",
    ]),
    st.integers(0, 0xFFFF).map(lambda c: f"\\u{c:04x}"),
    st.characters(max_codepoint=0x1F),  # raw control characters: not allowed in JSON strings
)
STRINGS = st.lists(STRING_PIECES, max_size=8).map(lambda pieces: '"' + "".join(pieces) + '"')
KEYS = st.one_of(st.sampled_from(['"a"', '"b"', '"jsonrpc"', '"id"', '"\\u0061"']), STRINGS)
SCALARS = st.one_of(
    NUMBERS, STRINGS, st.sampled_from(["true", "false", "null", "tru", "nul", "None", "'a'"])
)


def _array(items: list[tuple[str, str, str]]) -> str:
    return "[" + ",".join(before + item + after for before, item, after in items) + "]"


def _object(members: list[tuple[str, str, str, str]]) -> str:
    return "{" + ",".join(f"{w}{key}{w2}:{value}{w3}" for w, key, w2, value, w3 in members) + "}"


def _containers(children: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.lists(st.tuples(WHITESPACE, children, WHITESPACE), max_size=5).map(_array),
        st.lists(
            st.tuples(WHITESPACE, KEYS, WHITESPACE, children, WHITESPACE), max_size=5
        ).map(_object),
    )


VALUES = st.recursive(SCALARS, _containers, max_leaves=25)


def _request(id_: str, value: str) -> str:
    return f'{{"jsonrpc":"2.0","id":{id_},"method":"ph_send_batch","params":{{"batch":[{value}]}}}}'


DOCUMENTS = st.one_of(
    VALUES,
    st.builds(_request, NUMBERS, VALUES),
    st.builds(lambda value: "[" + value + "]", VALUES),
)


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    """A line as the reader hands it over: mostly JSON, sometimes broken in some way."""
    text = draw(WHITESPACE) + draw(DOCUMENTS) + draw(WHITESPACE)
    frame = text.encode("utf-8", "surrogatepass")
    damage = draw(st.sampled_from(["none"] * 6 + ["cut", "byte", "bom", "tail"]))
    if damage == "cut" and frame:
        frame = frame[: draw(st.integers(0, len(frame) - 1))]
    elif damage == "byte":
        at = draw(st.integers(0, len(frame)))
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                    b"\xe2\x82", b"\x00", b"\x0b", b"\x0c", b"\xc2\xa0"]))
        frame = frame[:at] + bad + frame[at:]
    elif damage == "bom":
        frame = b"\xef\xbb\xbf" + frame
    elif damage == "tail":
        frame += draw(st.sampled_from([b"\r", b"\n", b" x", b",", b"]", b"}", b"1"]))
    return frame


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frames())
@example(b'{"jsonrpc":"2.0","method":"m","params":[18446744073709551616],"id":1}')
@example(b'{"jsonrpc":"2.0","method":"m","params":[1e400, -0.0, 1E5],"id":1}')
@example(b'{"a":1,"b":2,"a":3}')
@example(b'{"a":"\\u0000\\ud83d\\ude00\\ud800"}')
def test_parse_line_fast_path_matches_stdlib(frame: bytes) -> None:
    """For any line, hostile or not, parse_line gives the same error bytes or the same body
    (types, key order and float signs included) with the orjson fast path as without it."""
    assert_parses_as_stdlib(frame)


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        (str(2**64), 2**64),
        (str(2**70), 2**70),
        (str(-(2**63) - 1), -(2**63) - 1),
        (str(2**64 - 1), 2**64 - 1),
        (str(-(2**63)), -(2**63)),
        ("123456789012345678", 123456789012345678),
        ("1e400", math.inf),
        ("-1e400", -math.inf),
        ("-0.0", -0.0),
        ("-0", 0),
        ("1E5", 100000.0),
        ("1e-400", 0.0),
    ],
)
def test_parse_line_numbers_keep_their_exact_value_and_type(literal: str, value: object) -> None:
    """Big integers stay exact ints, 1e400 stays the float inf json gives, -0.0 keeps its sign,
    exponent forms are floats: as the standard library has it."""
    frame = b'{"jsonrpc":"2.0","method":"m","params":[' + literal.encode() + b'],"id":1}'
    outcome = assert_parses_as_stdlib(frame)
    assert outcome[0] == "parsed"
    result = parse_line(frame)
    assert isinstance(result, Parsed) and isinstance(result.body, dict)
    (parsed,) = result.body["params"]
    assert type(parsed) is type(value)
    assert repr(parsed) == repr(value)


@pytest.mark.parametrize(
    "frame",
    [
        b'{"a":1,"b":2,"a":3}',
        b'{"a":"\\u0000","b":"x\\u0000y"}',
        '{"a":"😀 é \\ud83d\\ude00 \\uDBFF\\uDFFF"}'.encode(),
        b'{"a":"\\ud800"}',
        b'{"a":"\\udc00\\ud800"}',
        b' \t\r\n{"a" \r: \t[1 ,\n2]\r}\t \r\n',
        b'{"a":1}\r',
        b'{"a":1}\n',
        b'{"a":1}\r\n',
        b"\xef\xbb\xbf{}",
        b'{"a":NaN}',
        b'{"a":[Infinity]}',
        b'{"a":"\xff"}',
        b'{"a":"\xed\xa0\x80"}',
        b"[" + b'{"a":"' + b"{" * 2000 + b'"}' + b"]",
    ],
)
def test_parse_line_edge_cases_match_stdlib(frame: bytes) -> None:
    """Duplicate keys, NUL and non-BMP text, escaped lone surrogates, JSON whitespace, a trailing
    CR or LF, a BOM, NaN, bad UTF-8, brackets in strings: the same as without the fast path."""
    assert_parses_as_stdlib(frame)


@pytest.mark.parametrize("depth", [1, 2, 100, 499, 500, 501, 900, 1000, 1023, 1024, 1025, 5000])
@pytest.mark.parametrize("shape_", ["array", "object"])
def test_parse_line_deep_nesting_matches_stdlib(depth: int, shape_: str) -> None:
    """Nesting around half the recursion limit, the recursion limit and orjson's limit (1024) is
    accepted or refused as without the fast path."""
    if shape_ == "array":
        frame = b"[" * depth + b"1" + b"]" * depth
    else:
        frame = b'{"a":' * depth + b"1" + b"}" * depth
    assert_parses_as_stdlib(frame)


def test_parse_fast_path_declines_what_orjson_would_get_wrong() -> None:
    """Lines with a 19-digit run, many brackets or over the size cap go the standard way; the
    rest orjson takes."""
    with pytest.raises(fastjson.Declined):
        fastjson.loads(b"[18446744073709551616]")
    with pytest.raises(fastjson.Declined):
        fastjson.loads(b'["1234567890123456789"]')  # a cheap superset: in strings too
    many = sys.getrecursionlimit() // 2 + 1
    with pytest.raises(fastjson.Declined):
        fastjson.loads(b"[" + b"[]," * (many - 1) + b"[]]")
    assert fastjson.loads(b"[" + b"[]," * (many - 3) + b"[]]") == [[]] * (many - 2)
    fits = b" [" + b"0," * ((fastjson.MAX_FAST_LINE_BYTES - 4) // 2) + b"0]"
    assert len(fits) == fastjson.MAX_FAST_LINE_BYTES
    assert fastjson.loads(fits) == [0] * (fastjson.MAX_FAST_LINE_BYTES // 2 - 1)
    with pytest.raises(fastjson.Declined):  # orjson would take 8 bytes of memory a byte here
        fastjson.loads(fits + b" ")
    assert fastjson.loads(b"[999999999999999999,-999999999999999999]") == [
        999999999999999999,
        -999999999999999999,
    ]


def test_parse_fast_path_takes_a_realistic_batch_line() -> None:
    """A ph_send_batch line of 100 ordinary events is parsed by orjson, to the same value."""
    line = json.dumps(_request_message([_realistic_event(i) for i in range(100)])).encode()
    assert fastjson.loads(line) == json.loads(line)


def test_orjson_keeps_integers_up_to_18_digits_exact() -> None:
    """The premise of the digit-run check: orjson reads every integer of at most 18 digits, and
    every one in [-2**63, 2**64), as the exact int."""
    for value in (10**18 - 1, -(10**18) + 1, 2**63 - 1, -(2**63), 2**64 - 1, 0, -1):
        parsed = orjson.loads(str(value))
        assert type(parsed) is int and parsed == value


# ---- events._serialize: generated events ------------------------------------------------------


class Color(enum.Enum):
    """A plain enum: orjson writes its value, json refuses it."""

    RED = "red"


class Level(enum.IntEnum):
    """An int enum: both write the number."""

    ONE = 1


class Tag(str):
    """A str subclass."""

    __slots__ = ()


@dataclass
class Point:
    """A dataclass: orjson writes it as an object, json refuses it."""

    x: int


ODD_VALUES = [
    uuid.UUID(int=1), Color.RED, Level.ONE, Tag("t"), Point(1), datetime(2026, 1, 1),
    date(2026, 1, 1), orjson.Fragment(b'{"raw":1}'), OrderedDict(a=1), (1, "a"), {1: "int key"},
    {None: 0}, {True: 0}, {1.5: 0}, {"1": 0, 1: 1}, b"bytes", {"set"}, 2**64, 2**63, -(2**63) - 1,
    2**64 - 1, -(2**63), math.nan, math.inf, -math.inf, "\ud800", "a\udfffb", -0.0, 1e-07, 1e-05,
    1e16, 5e-324, 1.7976931348623157e308, "é😀\u2028\x7f\x00\x1f\"\\",
]
LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(),
    st.text(st.characters(categories=["Cs"]), max_size=2),
    st.sampled_from(ODD_VALUES),
)
JSONISH = st.recursive(
    LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.text(max_size=4), children, max_size=4),
        st.tuples(children, children),
    ),
    max_leaves=20,
)
EVENTS = st.dictionaries(st.text(max_size=6), JSONISH, max_size=6)


def serialize_outcome(serialize: Callable[[dict[str, Any]], str], event: dict[str, Any]) -> Any:
    """The text `serialize` gives for `event`, or the EventError reason."""
    try:
        return ("text", serialize(event))
    except EventError as exc:
        return ("rejected", str(exc))


def floats_in(value: object) -> int:
    """How many floats `value` holds, at any depth."""
    count = 0
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, float):
            count += 1
        elif isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list | tuple):
            stack.extend(node)
    return count


def assert_serializes_as_stdlib(event: dict[str, Any]) -> Any:
    """`_serialize` gives what the standard library path gives, up to float spelling."""
    fast = serialize_outcome(events._serialize, event)
    slow = serialize_outcome(events._serialize_stdlib, event)
    if slow[0] == "rejected":
        assert fast == slow
        return fast
    assert fast[0] == "text"
    fast_text, slow_text = fast[1], slow[1]
    pairs = list
    assert shape(json.loads(fast_text, object_pairs_hook=pairs)) == shape(
        json.loads(slow_text, object_pairs_hook=pairs)
    )
    floats = floats_in(event)
    if floats == 0:
        assert fast_text == slow_text  # byte for byte
    # What _FAST_MAX_BYTES rests on.
    assert len(slow_text.encode("utf-8", "surrogatepass")) <= len(fast_text.encode()) + floats
    return fast


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
@example({"a": math.nan})
@example({"a": [1, {"b": math.inf}]})
@example({"a": "\ud800"})
@example({"a": 2**64, "b": -(2**63) - 1})
@example({"a": uuid.UUID(int=1)})
def test_serialize_fast_path_matches_stdlib(event: dict[str, Any]) -> None:
    """For any dict, NaN, Infinity, lone surrogates, huge ints and Python objects included,
    _serialize rejects it with the same reason as the standard library path or writes JSON of
    the same value (identical bytes when it holds no float)."""
    assert_serializes_as_stdlib(event)


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (math.nan, "event contains NaN or Infinity, which JSON cannot carry"),
        ([1, {"x": -math.inf}], "event contains NaN or Infinity, which JSON cannot carry"),
        ("\ud800", "event contains invalid Unicode (a lone surrogate)"),
        (uuid.UUID(int=1), "event contains a value that is not JSON"),
        (Color.RED, "event contains a value that is not JSON"),
        (orjson.Fragment(b"1"), "event contains a value that is not JSON"),
        (datetime(2026, 1, 1), "event contains a value that is not JSON"),
        (Point(1), "event contains a value that is not JSON"),
        ({"set"}, "event contains a value that is not JSON"),
    ],
)
def test_normalize_event_rejects_what_the_stdlib_path_rejects(value: object, reason: str) -> None:
    """NaN/Infinity (which orjson would write as null), lone surrogates and Python objects that
    orjson would encode are rejected with today's reason."""
    raw = {"event": "e", "distinct_id": "u", "properties": {"v": value}}
    with pytest.raises(EventError) as info:
        normalize_event(raw, now=NOW, lib_version="1")
    assert str(info.value) == reason
    assert_serializes_as_stdlib({"v": value})


def test_infinity_from_a_request_line_is_still_rejected() -> None:
    """1e400 on the wire parses to inf (as json gives it) and the event is rejected for it."""
    line = _request_line([{"event": "e", "distinct_id": "u", "properties": {"big": 1e400}}])
    line = line.replace(b"Infinity", b"1e400")
    result = parse_line(line)
    assert isinstance(result, Parsed) and isinstance(result.body, dict)
    bodies, rejected = normalize_batch(result.body["params"]["batch"], now=NOW, lib_version="1")
    assert bodies == []
    assert rejected == [(0, "event contains NaN or Infinity, which JSON cannot carry")]


@pytest.mark.parametrize(
    "value",
    [
        2**64,
        -(2**63) - 1,
        2**200,
        Level.ONE,
        Tag("t"),
        OrderedDict(b=1, a=2),
        (1, (2, "x")),
        {1: "a", None: "b", 2.5: "d"},
        {True: "c", False: "d"},
        1e-07,
        -0.0,
    ],
)
def test_values_orjson_refuses_or_spells_differently_are_written_as_stdlib(value: object) -> None:
    """Ints past 64 bits, enum and str subclasses, dict subclasses, tuples, non-string keys,
    floats: the same JSON value as the standard library writes (its very text, but for floats)."""
    event = {"event": "e", "distinct_id": "u", "properties": {"v": value}}
    text = normalize_event(event, now=NOW, lib_version="1")
    with stdlib_only():
        reference = normalize_event(event, now=NOW, lib_version="1")
    assert shape(json.loads(text)["properties"]["v"]) == shape(
        json.loads(reference)["properties"]["v"]
    )


@pytest.mark.parametrize("depth", [1, 63, 64, 65, 254, 255, 256, 900, 5000])
def test_deep_events_are_handled_as_on_the_stdlib_path(depth: int) -> None:
    """Nesting at and past the fast path's depth, orjson's (254) and the recursion limit: the
    same text, or the same 'nested too deeply' rejection."""
    value: object = 1
    for _ in range(depth):
        value = [value]
    assert_serializes_as_stdlib({"v": value})


def test_output_is_compact_ordered_and_raw_utf8() -> None:
    """The fast text is compact JSON, keys in insertion order, non-ASCII written raw."""
    event = {"z": "é😀", "a": [1, 2.5, None, True], "m": {"y": 1, "b": 2}}
    text = events._serialize(event)
    assert text == '{"z":"é😀","a":[1,2.5,null,true],"m":{"y":1,"b":2}}'
    assert fastjson.dumps(event) == text.encode()  # the fast path wrote it


def test_size_limit_is_exact() -> None:
    """An event of exactly MAX_EVENT_BYTES is kept, one byte more is rejected, with the size."""
    base = {
        "event": "e",
        "distinct_id": "u",
        "uuid": str(uuid.UUID(int=7)),
        "timestamp": "2026-11-26T10:00:00Z",
        "properties": {"$lib": "l", "$lib_version": "1", "pad": ""},
    }
    room = MAX_EVENT_BYTES - len(normalize_event(base, now=NOW, lib_version="1").encode())
    pad = "é" * (room // 2) + "x" * (room % 2)  # two bytes a character, non-ASCII on purpose
    fits = {**base, "properties": {**base["properties"], "pad": pad}}
    text = normalize_event(fits, now=NOW, lib_version="1")
    assert len(text.encode()) == MAX_EVENT_BYTES
    over = {**fits, "properties": {**fits["properties"], "pad": fits["properties"]["pad"] + "x"}}
    with pytest.raises(EventError) as info:
        normalize_event(over, now=NOW, lib_version="1")
    assert str(info.value) == (
        f"event is {MAX_EVENT_BYTES + 1} bytes serialized, over the {MAX_EVENT_BYTES} limit"
    )


def test_float_spelling_cannot_move_an_event_across_the_size_limit() -> None:
    """An event whose orjson text fits but whose standard library text does not (1e-07 is one
    byte longer than 1e-7) is rejected as on the standard library path, by that path's size."""
    event = {"f": [1e-07] * (MAX_EVENT_BYTES // 5 - 10)}
    stdlib_size = len(json.dumps(event, separators=(",", ":")))
    assert len(orjson.dumps(event)) <= MAX_EVENT_BYTES < stdlib_size
    with pytest.raises(EventError) as info:
        events._serialize(event)
    assert str(info.value) == (
        f"event is {stdlib_size} bytes serialized, over the {MAX_EVENT_BYTES} limit"
    )


@settings(max_examples=1000)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_orjson_float_text_is_at_most_one_byte_shorter_and_same_value(value: float) -> None:
    """The premise of events._FAST_MAX_BYTES: orjson spells a float in no more than one byte less
    than repr, and it reads back as the same float."""
    text = orjson.dumps(value)
    assert len(repr(value)) - len(text) <= 1
    parsed = json.loads(text)
    assert repr(parsed) == repr(value)


def test_fast_path_takes_a_realistic_event() -> None:
    """An ordinary event is written by orjson, byte for byte as the standard library would."""
    event = _realistic_event(3)
    assert fastjson.dumps(event).decode() == events._serialize_stdlib(event)


# ---- helpers ----------------------------------------------------------------------------------


def _realistic_event(index: int) -> dict[str, Any]:
    return {
        "event": "$pageview",
        "distinct_id": f"user-{index:06d}",
        "timestamp": "2026-11-26T10:00:00.037Z",
        "uuid": str(uuid.UUID(int=index, version=4)),
        "properties": {
            "$current_url": f"https://app.example.com/projects/{index}/insights",
            "$pathname": f"/projects/{index}/insights",
            "$browser": "Firefox",
            "$os": "Windows",
            "$session_id": str(uuid.UUID(int=index + 1, version=4)),
            "title": "Übersicht: Café 😀",
            "plan": "pro",
            "$screen_width": 1920,
            "$set": {"email": "a@example.com", "verified": True, "seats": None},
        },
    }


def _request_message(batch: list[Any]) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": 1, "method": "ph_send_batch", "params": {"batch": batch}}


def _request_line(batch: list[Any]) -> bytes:
    return json.dumps(_request_message(batch), separators=(",", ":")).encode()
