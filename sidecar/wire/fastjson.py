"""orjson fast paths for the two JSON hot spots of ingest, each exact or declined.

`loads` stands in for the request line's ``json.loads`` and `dumps` for an event's
``json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode``. Each
either gives what the standard library would (the same value; for `dumps`, JSON text of the same
value, as UTF-8) or raises `Declined`, and the caller then takes its standard library path,
which alone decides every error and its message. orjson also differs where it raises no error,
so each fast path declines up front what it cannot vouch for:

- orjson reads an integer outside ``[-2**63, 2**64)`` as a float. `loads` declines a line with
  a run of 19 ASCII digits anywhere (strings too: a cheap superset), since every integer of at
  most 18 digits is inside that range.
- orjson parses nesting up to 1024 deep; the standard library stops at the recursion limit,
  counting from wherever the caller already is. `loads` declines a line with more ``[`` and
  ``{`` bytes (a bound on its depth) than half the recursion limit: the standard library parses
  that deep for any caller less than half the limit deep, and the sidecar's are a few dozen.
- orjson needs more memory than json for a line of many small values, so `loads` declines
  lines over `MAX_FAST_LINE_BYTES`.
- orjson writes NaN and Infinity as ``null`` and encodes UUIDs, enums, dataclasses, datetimes,
  subclasses of builtins and ``orjson.Fragment``, all of which the standard library refuses or
  writes its own way. `dumps` declines anything but plain dicts, lists, tuples, strings, ints,
  finite floats, booleans and None, nested at most `MAX_FAST_DEPTH` deep.

Where orjson does raise (lone surrogates, integers past 64 bits, non-string keys, the things
it does not parse), the fast path declines too. Floats may be written differently from
``repr`` (``1e-7`` for ``1e-07``, ``0.00001`` for ``1e-05``) but always parse to the same value.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable
from typing import Any

import orjson

MAX_FAST_DEPTH = 64
"""Deepest nesting `dumps` takes (events nest a few levels; orjson's own limit is 254)."""

MAX_FAST_LINE_BYTES = 1024 * 1024
"""Longest line `loads` takes. orjson's working memory is 16 bytes a value, up to 8 times the
line for a line of many small values, more than json needs; this keeps its extra under
8 MiB. The bracket bound already sends real batches past a few hundred events the standard
way."""

_DIGITS_TO_ZERO = bytes.maketrans(b"123456789", b"000000000")
_INT_OUTSIDE_64_BITS = b"0" * 19  # a run this long is where such an integer would have to be


class Declined(Exception):
    """The fast path cannot vouch for this input; use the standard library."""


def loads(frame: bytes) -> Any:
    """Parse one JSON text as ``json.loads(frame.decode("utf-8"))`` would, or raise `Declined`.

    Invalid UTF-8 and the NaN and Infinity literals, which orjson does not parse, are declined.
    """
    if len(frame) > MAX_FAST_LINE_BYTES:
        raise Declined
    # One-byte replace() finds the byte with memchr, where count() compares byte by byte.
    brackets = 2 * len(frame) - len(frame.replace(b"[", b"")) - len(frame.replace(b"{", b""))
    if brackets > sys.getrecursionlimit() // 2:
        raise Declined
    if _INT_OUTSIDE_64_BITS in frame.translate(_DIGITS_TO_ZERO):
        raise Declined
    try:
        return orjson.loads(frame)
    except orjson.JSONDecodeError:
        raise Declined from None


def dumps(event: dict[str, Any]) -> bytes:
    """Compact JSON of `event` as UTF-8, the value the standard library would write, or raise
    `Declined`."""
    try:
        plain = _is_plain(event, MAX_FAST_DEPTH)
    except RecursionError:  # the caller is already deep; the standard path decides
        plain = False
    if not plain:
        raise Declined
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:  # lone surrogate, int past 64 bits, non-string key
        raise Declined from None


def _is_plain(node: dict[str, Any] | list[Any] | tuple[Any, ...], depth: int) -> bool:
    """Whether everything in `node` is of a type orjson writes exactly as the standard library
    does (keys are left to orjson, which refuses all but str), at most `depth` levels deep."""
    if depth == 0:
        return False
    values: Iterable[Any] = node.values() if isinstance(node, dict) else node
    for value in values:
        kind = type(value)
        if kind is str or kind is int or kind is bool or value is None:
            continue
        if kind is float:
            if math.isfinite(value):
                continue
            return False
        if (kind is dict or kind is list or kind is tuple) and _is_plain(value, depth - 1):
            continue
        return False
    return True
