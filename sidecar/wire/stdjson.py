"""The standard library's JSON for what the orjson fast path declines, with long integers.

Python will not turn an integer of more than `sys.get_int_max_str_digits()` digits (4,300 by
default) into text or back, since the conversion takes time quadratic in its length, and
`json` inherits that refusal. A request line may still hold such a number, and it is valid
JSON. `loads` keeps each one as its digits (a `LongInt`), never converting it; `dumps` writes a
`LongInt` back as those same digits and everything else as the standard library does. So a long
integer where a number may pass through (an event property) reaches capture unchanged, one
where the request needs a small number (a timeout) is out of range, and a long integer id is
echoed as it came.

The limit is not lifted, here or anywhere: it is one setting for the whole process, and
lifting it would let a 16 MiB line hold up the loop for minutes converting a number.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any


class LongInt:
    """An integer too long for `int` text conversion, kept as its JSON digits (sign included)."""

    __slots__ = ("digits",)

    def __init__(self, digits: str) -> None:
        """`digits` is the integer's JSON text: an optional ``-`` and decimal digits."""
        self.digits = digits

    def __str__(self) -> str:
        """The digits."""
        return self.digits

    def __repr__(self) -> str:
        """A short form: the number of digits, not the digits."""
        return f"LongInt(<{len(self.digits.lstrip('-'))} digits>)"

    def __eq__(self, other: object) -> bool:
        """Equal to a `LongInt` with the same digits."""
        return isinstance(other, LongInt) and other.digits == self.digits

    def __hash__(self) -> int:
        """Hashes as its digits."""
        return hash(self.digits)


class NotJson(ValueError):
    """A NaN or Infinity literal, which Python's parser takes but JSON does not have."""


def _reject_constant(name: str) -> Any:
    raise NotJson(f"{name} is not valid JSON")


def _int_or_long(digits: str) -> int | LongInt:
    try:
        return int(digits)
    except ValueError:  # past the conversion limit
        return LongInt(digits)


def loads(text: str) -> Any:
    """Parse JSON text as ``json.loads`` does, refusing NaN and Infinity (`NotJson`) and keeping
    an integer past the conversion limit as a `LongInt`.

    Raises what ``json.loads`` raises for text that is not JSON (`json.JSONDecodeError`,
    `RecursionError` for nesting past the recursion limit).
    """
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except (json.JSONDecodeError, NotJson):
        raise
    except ValueError:
        # An integer past the conversion limit: parse again, handing each integer to a hook.
        # The hook costs a call per integer, so only these rare lines pay for it.
        return json.loads(text, parse_constant=_reject_constant, parse_int=_int_or_long)


def dumps(value: object, *, ensure_ascii: bool, allow_nan: bool = False) -> str:
    """Compact JSON text of `value`, as ``json.dumps(value, separators=(",", ":"),
    ensure_ascii=..., allow_nan=...)`` writes it, with each `LongInt` written as its digits.

    Takes what the parser makes (dicts, lists, strings, numbers, booleans, None, `LongInt`),
    tuples, and dict keys the standard library converts (numbers, booleans, None); raises
    `TypeError` for anything else and `ValueError` for NaN or an infinity unless `allow_nan`.
    Nesting past the recursion limit raises `RecursionError`.
    """
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    parts: list[str] = []
    _write(value, parts.append, quote, allow_nan)
    return "".join(parts)


def _write(
    value: object, out: Callable[[str], None], quote: Callable[[str], str], allow_nan: bool
) -> None:
    if isinstance(value, str):
        out(quote(value))
    elif isinstance(value, list | tuple):
        out("[")
        for index, item in enumerate(value):
            if index:
                out(",")
            _write(item, out, quote, allow_nan)
        out("]")
    elif isinstance(value, dict):
        out("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out(",")
            out(quote(key if isinstance(key, str) else _scalar_text(key, allow_nan)))
            out(":")
            _write(item, out, quote, allow_nan)
        out("}")
    else:
        out(_scalar_text(value, allow_nan))


def _scalar_text(value: object, allow_nan: bool) -> str:
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return int.__repr__(value)
    if isinstance(value, LongInt):
        return value.digits
    if isinstance(value, float):
        if math.isfinite(value):
            return float.__repr__(value)
        if not allow_nan:
            raise ValueError("Out of range float values are not JSON compliant")
        if math.isnan(value):
            return "NaN"
        return "Infinity" if value > 0 else "-Infinity"
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")
