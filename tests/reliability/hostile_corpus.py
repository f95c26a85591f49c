"""Hostile stdin: hypothesis strategies for JSON-RPC-shaped junk, and a seeded corpus of lines.

The strategies keep to messages that cannot stop the process or purge its queue (a valid
`shutdown`, or `ph_set_opt_out` with `true`) and to `ph_flush` timeouts that cannot make an
answer wait: everything else is fair game, including every wrong type in every field, and
integers past Python's int() text conversion limit (`LongNumber`) in every position.

`surrogate_cases` and `long_number_cases` are lines with the exact answer each is owed (`Case`):
a lone surrogate in every string parameter and event field of an otherwise valid call, and an
integer past the conversion limit in every position of one.
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from hostile_oracle import LongNumber
from hypothesis import strategies as st

PARAMS = {
    "ph_send_batch": ("batch", "api_key"),
    "ph_flush": ("timeout",),
    "ph_status": (),
    "ph_set_opt_out": ("opt_out",),
    "ping": (),
    "shutdown": (),
}
EVENT_FIELDS = ("event", "distinct_id", "uuid", "timestamp", "properties", "$set", "$set_once",
                "type", "offset")
HUGE_INT = 10**4000  # under Python's 4300-digit limit for int <-> text
# Integers int() will not take from text: just past the limit, and far past it.
LONG = LongNumber("1" + "0" * sys.get_int_max_str_digits())
LONGER = LongNumber("-" + "9" * 20_000)
# Values of every JSON type and the awkward corners of each.
JUNK: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, HUGE_INT, -HUGE_INT, LONG, LONGER, 0.5,
    -0.0, 1e308,
    float("inf"), float("-inf"), "", " ", "x", "2.0", "\u0000", "\ud800", "é" * 3, "🙂",
    "9" * 5000, [], [None], [[[[]]]], {}, {"": None}, {"a": {"b": {"c": []}}},
)


_LONG_MARK = "\x00long\x00"
_LONG_MARKED = re.compile(r'"\\u0000long\\u0000(-?[0-9]+)"')


def _mark_long(value: object) -> str:
    if isinstance(value, LongNumber):
        return _LONG_MARK + value.text
    raise TypeError(type(value).__name__)


def dumps(value: object) -> str:
    """JSON text, with infinities written as numbers too large for a double (1e999) and each
    LongNumber as its digits."""
    text = json.dumps(value, default=_mark_long)
    text = _LONG_MARKED.sub(lambda match: match[1], text)
    return text.replace("-Infinity", "-1e999").replace("Infinity", "1e999")


def _safe(method: object, params: object) -> bool:
    """False for calls that would stop the process, purge the queue, or wait a long time."""
    if method == "shutdown" and (params is None or params in ([], {})):
        return False
    if method == "ph_set_opt_out":
        value = params.get("opt_out") if isinstance(params, dict) else (
            params[0] if isinstance(params, list) and params else None
        )
        if value is True:
            return False
    if method == "ph_flush":
        value = params.get("timeout", 10) if isinstance(params, dict) else (
            params[0] if isinstance(params, list) and params else 10
        )
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0.05:
            # Valid timeouts (up to 3600) would make the answer wait offline; keep them tiny.
            try:
                if value <= 3600:
                    return False
            except OverflowError:
                pass
    return True


# ---- hypothesis strategies --------------------------------------------------------------------

junk = st.recursive(
    st.sampled_from(JUNK)
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)

event_like = st.fixed_dictionaries(
    {},
    optional={
        "event": st.sampled_from(["e", ""]) | junk,
        "distinct_id": st.sampled_from(["u", 7]) | junk,
        "uuid": st.sampled_from(["0190a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", "nope"]) | junk,
        "timestamp": st.sampled_from(["2024-05-01T12:00:00Z", "yesterday"]) | junk,
        "properties": st.dictionaries(st.text(max_size=8), junk, max_size=3) | junk,
        "$set": junk,
    },
) | junk


def _params_for(method: str) -> st.SearchStrategy[Any]:
    names = PARAMS.get(method, ())
    values: dict[str, st.SearchStrategy[Any]] = {name: junk for name in names}
    if "batch" in values:
        values["batch"] = st.lists(event_like, max_size=5) | junk
    named = st.fixed_dictionaries({}, optional=values)
    extra = st.dictionaries(st.sampled_from(["host", "url", "x", "api_host", "batch"]), junk,
                            min_size=1, max_size=2)
    return named | st.builds(lambda a, b: {**a, **b}, named, extra) | st.lists(junk, max_size=3)


@st.composite
def request_like(draw: st.DrawFn) -> Any:
    """A JSON-RPC request that is right in most places and wrong in some."""
    method = draw(st.sampled_from(sorted(PARAMS)) | st.sampled_from(["rpc.x", "", "PING"]) | junk)
    message: dict[str, Any] = {}
    if draw(st.integers(0, 9)):
        message["jsonrpc"] = draw(st.just("2.0") | junk)
    if draw(st.integers(0, 9)):
        message["method"] = method
    if draw(st.booleans()):
        message["params"] = draw(
            _params_for(method) if isinstance(method, str) else junk
        )
    if draw(st.integers(0, 4)):
        message["id"] = draw(st.integers(-5, 5) | st.text(max_size=5) | junk)
    if not draw(st.integers(0, 15)):
        message[draw(st.text(max_size=6))] = draw(junk)
    return message


def _is_safe_message(message: object) -> bool:
    if isinstance(message, list):
        return all(_is_safe_message(m) for m in message)
    if not isinstance(message, dict):
        return True
    return _safe(message.get("method"), message.get("params"))


line_body = (
    request_like()
    | st.lists(request_like() | junk, min_size=0, max_size=6)
    | junk
).filter(_is_safe_message)


# ---- the seeded corpus for the real process ---------------------------------------------------

VALID = {
    "ping": {"jsonrpc": "2.0", "id": 1, "method": "ping"},
    "status": {"jsonrpc": "2.0", "id": 2, "method": "ph_status"},
    "send": {
        "jsonrpc": "2.0", "id": 3, "method": "ph_send_batch",
        "params": {"batch": [{"event": "fuzz", "distinct_id": "u", "properties": {"k": 1}}]},
    },
    "optin": {"jsonrpc": "2.0", "id": 4, "method": "ph_set_opt_out",
              "params": {"opt_out": False}},
}


def wrong_types_everywhere() -> Iterator[bytes]:
    """Every JUNK value in every envelope field, every param of every method, and every field of
    an event: one line each."""
    for method, names in PARAMS.items():
        base = {"jsonrpc": "2.0", "id": f"{method}-base", "method": method}
        for field in ("jsonrpc", "method", "id"):
            for value in JUNK:
                yield from _safe_line({**base, field: value})
        for value in JUNK:
            yield from _safe_line({**base, "params": value})
            for name in (*names, "host", "url"):
                yield from _safe_line({**base, "params": {name: value}})
    event = {"event": "e", "distinct_id": "u"}
    for field in EVENT_FIELDS:
        for value in JUNK:
            params = {"batch": [{**event, field: value}, event]}
            line = {"jsonrpc": "2.0", "id": f"ev-{field}", "method": "ph_send_batch",
                    "params": params}
            yield (dumps(line) + "\n").encode()


def _safe_line(message: dict[str, Any]) -> Iterator[bytes]:
    if _is_safe_message(message):
        yield (dumps(message) + "\n").encode()


def random_lines(rng: random.Random, count: int) -> Iterator[bytes]:
    """Random bytes, random text, and byte-level mutations of valid requests; one line each."""
    bases = [json.dumps(v).encode() for v in VALID.values()]
    for _ in range(count):
        kind = rng.randrange(4)
        if kind == 0:
            line = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 120)))
        elif kind == 1:
            line = "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(rng.randrange(60)))
            line = line.encode("utf-8", "surrogatepass")
        else:
            data = bytearray(rng.choice(bases))
            for _ in range(rng.randrange(1, 4)):
                op = rng.randrange(3)
                at = rng.randrange(len(data))
                if op == 0:
                    data[at] = rng.randrange(256)
                elif op == 1:
                    del data[at]
                else:
                    data.insert(at, rng.choice(b'{}[]",:0\\\x00\xff'))
            line = bytes(data)
        yield line.replace(b"\n", b" ") + b"\n"


def special_lines() -> list[bytes]:
    """Hand-made hostile lines: nesting, huge numbers, NaN/Infinity, junk batches, dup ids."""
    deep = 100_000
    ping = '{"jsonrpc":"2.0","method":"ping","id":%s}'
    lines = [
        b"[" * deep + b"\n",
        b'{"a":' * deep + b"1" + b"}" * deep + b"\n",
        b"[" * deep + b"]" * deep + b"\n",
        b'{"jsonrpc":"2.0","id":1,"method":"ph_flush","params":{"timeout":1e999999}}\n',
        b'{"jsonrpc":"2.0","id":1e999999,"method":"ping"}\n',
        b'{"jsonrpc":"2.0","id":' + b"9" * 5000 + b',"method":"ping"}\n',
        b'{"jsonrpc":"2.0","id":' + str(HUGE_INT).encode() + b',"method":"ping"}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"ph_flush","params":{"timeout":'
        + str(HUGE_INT).encode() + b"}}\n",
        b'{"jsonrpc":"2.0","id":1,"method":"ph_flush","params":{"timeout":-'
        + str(HUGE_INT).encode() + b"}}\n",
        b'{"jsonrpc":"2.0","id":NaN,"method":"ping"}\n',
        b'{"jsonrpc":"2.0","id":1,"method":"ping","params":[Infinity]}\n',
        b"-Infinity\n",
        b'{"jsonrpc":"2.0","id":2,"method":"ph_send_batch","params":{"batch":[{"event":"n",'
        b'"distinct_id":"u","properties":{"big":1e999999,"huge":' + str(HUGE_INT).encode()
        + b"}}]}}\n",
        b'{"jsonrpc":"2.0","id":3,"method":"ph_send_batch","params":{"batch":[{"event":"n",'
        b'"distinct_id":' + str(HUGE_INT).encode() + b"}]}}\n",
        b'{"jsonrpc":"2.0","id":4,"method":"ph_send_batch","params":{"batch":[{"event":"n",'
        b'"distinct_id":"u","properties":{"deep":' + b"[" * 900 + b"]" * 900 + b"}}]}}\n",
        ("[" + ",".join(["0", "null", "[]", "{}", '"x"', "true"] * 50) + "]\n").encode(),
        ("[" + ",".join([ping % 7] * 5) + "]\n").encode(),  # duplicate ids in a batch
        (ping % 7 + "\n").encode() * 3,  # duplicate ids across lines
        ("[" + ",".join([ping % "null", '{"jsonrpc":"2.0","method":"ping"}']) + "]\n").encode(),
        b"\xef\xbb\xbf" + (ping % 8).encode() + b"\n",  # a UTF-8 BOM
        b"\xc0\xaf\xed\xa0\x80\xf8\x88\x80\x80\x80\n",  # overlong, surrogate, 5-byte forms
        (ping % 9).encode() + b"\r\n",
        b" \t \r\n",
        b"\x00\n",
    ]
    return lines


# ---- lines owed an exact answer ---------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """A line and the answer it is owed: an error `code` (-32602's data naming `names`), or a
    result (`code` None) that for ph_send_batch accepts `accepted` events and rejects the events
    at `rejected`; `id` is the id the answer carries."""

    label: str
    line: bytes
    code: int | None
    id: Any = 1
    names: str | None = None
    accepted: int | None = None
    rejected: tuple[int, ...] = ()


SURROGATES = ("\ud800", "phc_\ud800x", "\udc00", "\udfff")
GOOD_EVENT = {"event": "e", "distinct_id": "d"}


def _call(method: str, params: object = None, id_: object = 1, **envelope: object) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": id_}
    if params is not None:
        message["params"] = params
    message.update(envelope)
    return (dumps(message) + "\n").encode()


def _event_cases(label: str, value: object) -> Iterator[Case]:
    """`value` in every field of the first of two events (the second is valid): the first is
    rejected alone."""
    fields: dict[str, dict[str, Any]] = {
        "event": {**GOOD_EVENT, "event": value},
        "uuid": {**GOOD_EVENT, "uuid": value},
        "timestamp": {**GOOD_EVENT, "timestamp": value},
        "properties": {**GOOD_EVENT, "properties": value},
    }
    for field, event in fields.items():
        yield Case(f"{label} as {field}", _call("ph_send_batch", {"batch": [event, GOOD_EVENT]}),
                   None, accepted=1, rejected=(0,))


def surrogate_cases() -> Iterator[Case]:
    """A lone surrogate (a JSON escape) in every string parameter and event field of an
    otherwise valid call, and in the envelope."""
    for text in SURROGATES:
        label = f"surrogate {text.encode('unicode_escape').decode()}"
        yield Case(f"{label} in api_key", _call(
            "ph_send_batch", {"batch": [GOOD_EVENT], "api_key": text}), -32602, names="api_key")
        yield Case(f"{label} in api_key, empty batch", _call(
            "ph_send_batch", {"batch": [], "api_key": text}), -32602, names="api_key")
        yield Case(f"{label} in timeout", _call("ph_flush", {"timeout": text}), -32602,
                   names="timeout")
        yield Case(f"{label} in opt_out", _call("ph_set_opt_out", {"opt_out": text}), -32602,
                   names="opt_out")
        # The data names the param by its repr, which escapes the surrogate.
        yield Case(f"{label} as a param name", _call("ping", {text: 1}), -32602,
                   names=repr(text))
        yield Case(f"{label} as the method", _call(text), -32601)
        yield Case(f"{label} as the id", _call("ping", id_=text), None, id=text)
        yield Case(f"{label} in jsonrpc", _call("ping", jsonrpc="2.0" + text), -32600)
        yield from _event_cases(label, text)
        for field, event in {
            "distinct_id": {**GOOD_EVENT, "distinct_id": text},
            "properties.distinct_id": {"event": "e", "properties": {"distinct_id": text}},
            "a property name": {**GOOD_EVENT, "properties": {text: 1}},
            "a property value": {**GOOD_EVENT, "properties": {"k": [{"v": text}]}},
            "$set": {**GOOD_EVENT, "$set": {"name": text}},
            "another field": {**GOOD_EVENT, "custom": text},
        }.items():
            yield Case(f"{label} in {field}", _call(
                "ph_send_batch", {"batch": [event, GOOD_EVENT]}), None, accepted=1, rejected=(0,))


def long_number_cases() -> Iterator[Case]:
    """An integer past the conversion limit in every position of an otherwise valid call: a
    result where a number may be, -32602 naming the param where it may not, -32600 in the
    envelope."""
    for number in (LONG, LONGER):
        label = f"{len(number.text.lstrip('-'))}-digit integer"
        yield Case(f"{label} as the id", _call("ping", id_=number), None, id=number)
        yield Case(f"{label} as the id of ph_send_batch", _call(
            "ph_send_batch", {"batch": [GOOD_EVENT]}, id_=number), None, id=number, accepted=1)
        for where, event in {
            "a property": {**GOOD_EVENT, "properties": {"n": number}},
            "a nested property": {**GOOD_EVENT, "properties": {"a": [{"n": [number]}]}},
            "$set": {**GOOD_EVENT, "$set": {"n": number}},
            "another field": {**GOOD_EVENT, "custom": number},
            "distinct_id": {**GOOD_EVENT, "distinct_id": number},
            "properties.distinct_id": {"event": "e", "properties": {"distinct_id": number}},
        }.items():
            yield Case(f"{label} in {where}", _call("ph_send_batch", {"batch": [event]}), None,
                       accepted=1)
        yield from _event_cases(label, number)
        for method, name, params in (
            ("ph_send_batch", "batch", {"batch": number}),
            ("ph_send_batch", "api_key", {"batch": [GOOD_EVENT], "api_key": number}),
            ("ph_flush", "timeout", {"timeout": number}),
            ("ph_set_opt_out", "opt_out", {"opt_out": number}),
            ("ping", "x", {"x": number}),
        ):
            yield Case(f"{label} in {method}'s {name}", _call(method, params), -32602, names=name)
        yield Case(f"{label} as a positional param", _call("ph_status", [number]), -32602)
        yield Case(f"{label} as params", _call("ping", number), -32600)
        yield Case(f"{label} as the method", _call(number), -32600)  # type: ignore[arg-type]
        yield Case(f"{label} in jsonrpc", _call("ping", jsonrpc=number), -32600)
        yield Case(f"{label} as the line", (dumps(number) + "\n").encode(), -32600, id=None)
        yield Case(f"{label} as an unknown member", _call("ping", extra=number), -32600)
