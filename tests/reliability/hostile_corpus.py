"""Hostile stdin: hypothesis strategies for JSON-RPC-shaped junk, and a seeded corpus of lines.

The strategies keep to messages that cannot stop the process or purge its queue (a valid
`shutdown`, or `ph_set_opt_out` with `true`) and to `ph_flush` timeouts that cannot make an
answer wait: everything else is fair game, including every wrong type in every field.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

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
# Values of every JSON type and the awkward corners of each.
JUNK: tuple[Any, ...] = (
    None, True, False, 0, -1, 1, 2**63, -(2**63) - 1, HUGE_INT, -HUGE_INT, 0.5, -0.0, 1e308,
    float("inf"), float("-inf"), "", " ", "x", "2.0", "\u0000", "\ud800", "é" * 3, "🙂",
    "9" * 5000, [], [None], [[[[]]]], {}, {"": None}, {"a": {"b": {"c": []}}},
)


def dumps(value: object) -> str:
    """JSON text, with infinities written as numbers too large for a double (1e999)."""
    return json.dumps(value).replace("-Infinity", "-1e999").replace(
        "Infinity", "1e999"
    )


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
