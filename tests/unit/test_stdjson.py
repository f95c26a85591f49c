"""Unit tests for sidecar.wire.stdjson: long integers kept as text, and the writer against the
standard library's own."""

from __future__ import annotations

import json
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar.wire.stdjson import LongInt, NotJson, dumps, loads

LIMIT = sys.get_int_max_str_digits()
LONG = "7" * (LIMIT + 1)  # one digit past what int() takes from text


def test_the_conversion_limit_is_in_force() -> None:
    """The tests below mean something only while Python's limit is set (4,300 by default)."""
    assert LIMIT > 0
    with pytest.raises(ValueError, match="limit"):
        int(LONG)


def test_long_integers_are_kept_as_their_digits_and_others_are_ints() -> None:
    """Past the limit, an integer is a LongInt holding its digits and sign; the integers next to
    it, up to the limit, are plain ints."""
    short = "9" * LIMIT
    value = loads(f'{{"a":[{LONG},-{LONG},{short},1,2.5],"b":"{LONG}"}}')
    assert value["a"][0] == LongInt(LONG)
    assert value["a"][1] == LongInt("-" + LONG)
    assert value["a"][2] == int(short)
    assert value["a"][3:] == [1, 2.5]
    assert value["b"] == LONG


def test_a_line_without_long_integers_parses_as_json_loads_does() -> None:
    """Plain JSON gives exactly json.loads's value."""
    text = '{"a":[1,-2,3.5e3,true,null,"\\ud800"],"b":{"c":{}}}'
    assert loads(text) == json.loads(text)


@pytest.mark.parametrize("text", ["NaN", "[Infinity]", f'{{"a":-Infinity,"b":{LONG}}}'])
def test_nan_and_infinity_are_refused(text: str) -> None:
    """NaN and Infinity are not JSON, with or without a long integer on the line."""
    with pytest.raises(NotJson):
        loads(text)


@pytest.mark.parametrize("text", ["{", f"[{LONG},]", f"{LONG}x", "[1,,2]"])
def test_text_that_is_not_json_raises_decode_error(text: str) -> None:
    """Broken JSON raises json.JSONDecodeError, long integer or not."""
    with pytest.raises(json.JSONDecodeError):
        loads(text)


def test_a_long_integer_is_written_back_as_the_same_digits() -> None:
    """dumps writes a LongInt as its digits, so a parse and a write give the text back."""
    text = f'{{"id":{LONG},"n":[-{LONG},1]}}'
    assert dumps(loads(text), ensure_ascii=True) == text
    assert repr(LongInt(LONG)) == f"LongInt(<{LIMIT + 1} digits>)"
    assert str(LongInt("-12")) == "-12"
    assert len({LongInt(LONG), LongInt(LONG)}) == 1


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(value=json_values, ensure_ascii=st.booleans())
def test_dumps_writes_what_the_standard_library_writes(value: object, ensure_ascii: bool) -> None:
    """Without LongInts, dumps gives json.dumps's compact text exactly (infinities included)."""
    expected = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii)
    assert dumps(value, ensure_ascii=ensure_ascii, allow_nan=True) == expected
    try:
        strict = json.dumps(value, separators=(",", ":"), ensure_ascii=ensure_ascii,
                            allow_nan=False)
    except ValueError:
        with pytest.raises(ValueError, match="not JSON compliant"):
            dumps(value, ensure_ascii=ensure_ascii)
    else:
        assert dumps(value, ensure_ascii=ensure_ascii) == strict


def test_dumps_converts_keys_and_refuses_other_types_like_the_standard_library() -> None:
    """Number, boolean and null keys become text as json.dumps makes them; a set is refused."""
    value = {1: "a", 2.5: "b", False: "c", None: "d", "s": (1, 2)}
    assert dumps(value, ensure_ascii=True) == json.dumps(value, separators=(",", ":"))
    with pytest.raises(TypeError):
        dumps({"a": {1}}, ensure_ascii=True)
    with pytest.raises(ValueError, match="not JSON compliant"):
        dumps([float("nan")], ensure_ascii=False)
    assert dumps([float("nan")], ensure_ascii=False, allow_nan=True) == "[NaN]"
