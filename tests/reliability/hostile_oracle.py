"""What a line of stdin is owed, worked out without the sidecar's own code: the test oracle.

JSON-RPC 2.0 and the sidecar's contract say: a blank line gets nothing; a line that is not JSON
(or not UTF-8, or uses NaN/Infinity) gets one -32700 with id null; an empty array or a JSON
value that is not an object or array gets one -32600 with id null; an object gets one answer
unless it is a valid notification; an array gets one array holding an answer for every member
that is owed one, in order (nothing at all when none is); an array of more than 32 members gets
one -32600 with id null and none of it is run. A member that is not a valid request
is answered -32600, with its id when the id is valid and null otherwise.

An integer too long for Python's int() text conversion is still a JSON number: `loads` keeps it
as a `LongNumber`, so a line holding one is owed what the same line with a short number is (a
long id is a valid id, echoed digit for digit). Answers are decoded with `loads` too.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass
from typing import Any

MAX_LINE_BYTES = 16 * 1024 * 1024
MAX_BATCH_REQUESTS = 32  # a longer JSON-RPC batch gets one -32600 (id null), nothing is run
METHODS = frozenset({"ph_send_batch", "ph_flush", "ph_status", "ph_set_opt_out", "ping",
                     "shutdown"})
_KEYS = frozenset({"jsonrpc", "method", "params", "id"})
_MISSING = object()


def _no_constants(name: str) -> Any:
    raise ValueError(name)


class LongNumber:
    """A JSON integer past `sys.get_int_max_str_digits()` digits, kept as its text."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LongNumber) and other.text == self.text

    def __hash__(self) -> int:
        return hash(self.text)

    def __repr__(self) -> str:
        return f"LongNumber({len(self.text)} chars)"


def _int_or_long(text: str) -> int | LongNumber:
    return int(text) if len(text.lstrip("-")) <= sys.get_int_max_str_digits() else LongNumber(text)


def loads(text: bytes | str) -> Any:
    """JSON as the contract reads it: no NaN or Infinity, any integer length (`LongNumber`)."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    return json.loads(text, parse_constant=_no_constants, parse_int=_int_or_long)


def valid_id(value: object) -> bool:
    """A JSON-RPC id: string, number or null (booleans are not numbers)."""
    if value is None or isinstance(value, str):
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int | LongNumber):
        return True
    return isinstance(value, float) and math.isfinite(value)


def is_request(item: object) -> bool:
    """A well-formed JSON-RPC 2.0 request or notification object."""
    return (
        isinstance(item, dict)
        and set(item) <= _KEYS
        and item.get("jsonrpc") == "2.0"
        and isinstance(item.get("method"), str)
        and ("params" not in item or isinstance(item["params"], dict | list))
        and ("id" not in item or valid_id(item["id"]))
    )


@dataclass(frozen=True)
class Owed:
    """One answer owed for one request object: its id, and which codes may answer it."""

    id: Any
    codes: frozenset[int | None]  # None stands for a result


def owed_for(item: object) -> Owed | None:
    """The answer a single request object is owed, or None for a valid notification."""
    if not is_request(item):
        has_id = isinstance(item, dict) and "id" in item and valid_id(item["id"])
        return Owed(item["id"] if has_id else None, frozenset({-32600}))
    assert isinstance(item, dict)
    if "id" not in item:
        return None
    if item["method"] not in METHODS:
        return Owed(item["id"], frozenset({-32601}))
    # A known method: a result, or invalid params. Never -32603 (that would be our bug).
    return Owed(item["id"], frozenset({None, -32602}))


@dataclass(frozen=True)
class Expected:
    """What one stdin line must produce on stdout."""

    kind: str  # "none", "one" (an object) or "array"
    owed: tuple[Owed, ...] = ()


NOTHING = Expected("none")


def expected_for_line(line: bytes) -> Expected:
    """What a line (without its newline) is owed."""
    if line.endswith(b"\r"):
        line = line[:-1]
    if not line.strip(b" \t\r"):
        return NOTHING
    if len(line) > MAX_LINE_BYTES:
        return Expected("one", (Owed(None, frozenset({-32600})),))
    try:
        body = loads(line)
    except (ValueError, RecursionError):
        return Expected("one", (Owed(None, frozenset({-32700})),))
    return expected_for_body(body)


def expected_for_body(body: object) -> Expected:
    """What a decoded line is owed."""
    if isinstance(body, list):
        if not body or len(body) > MAX_BATCH_REQUESTS:
            return Expected("one", (Owed(None, frozenset({-32600})),))
        owed = tuple(o for o in map(owed_for, body) if o is not None)
        return Expected("array", owed) if owed else NOTHING
    if isinstance(body, dict):
        one = owed_for(body)
        return NOTHING if one is None else Expected("one", (one,))
    return Expected("one", (Owed(None, frozenset({-32600})),))


def check_answer(expected: Expected, answer: Any) -> None:
    """Assert that a decoded stdout line is the answer `expected` describes."""
    if expected.kind == "one":
        assert isinstance(answer, dict), answer
        items = [answer]
    else:
        assert expected.kind == "array", expected
        assert isinstance(answer, list), answer
        items = answer
    assert len(items) == len(expected.owed), (expected, answer)
    for owed, item in zip(expected.owed, items, strict=True):
        check_item(owed, item)


def check_item(owed: Owed, item: Any) -> None:
    """One response object against what it is owed."""
    assert isinstance(item, dict), item
    assert item.get("jsonrpc") == "2.0", item
    assert ("result" in item) != ("error" in item), item
    assert set(item) in ({"jsonrpc", "result", "id"}, {"jsonrpc", "error", "id"}), item
    assert _same_id(item["id"], owed.id), (owed, item)
    code = item["error"]["code"] if "error" in item else None
    assert code in owed.codes, (owed, item)
    if code is not None:
        assert isinstance(item["error"]["message"], str), item
    if code == -32602:
        assert isinstance(item["error"].get("data"), str), item  # says which param


def _same_id(got: object, want: object) -> bool:
    if isinstance(want, float) and isinstance(got, int | float) and not isinstance(got, bool):
        return got == want
    return type(got) is type(want) and got == want
