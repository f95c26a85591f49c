"""Unit tests for sidecar.wire.events: the event contract, UUIDv7 and a property test."""

from __future__ import annotations

import copy
import json
import math
import re
import sys
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.events import normalize_event

from sidecar.wire import events as events_module
from sidecar.wire.events import MAX_EVENT_BYTES, EventError, is_unicode_text, normalize_batch
from sidecar.wire.stdjson import LongInt
from sidecar.wire.stdjson import loads as long_loads

NOW = datetime(2026, 11, 26, 10, 0, 0, 123456, tzinfo=UTC)
NOW_TEXT = "2026-11-26T10:00:00.123456+00:00"
NOW_MS = 1_795_687_200_123  # unix milliseconds of NOW
LIB_VERSION = "9.8.7"
FIXED_UUID = "0192f3a4-5b6c-7d8e-9f01-23456789abcd"
CANONICAL_TIMESTAMP = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{6}\+00:00", re.ASCII)
CANONICAL_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def normalize(raw: object, *, now: datetime = NOW) -> dict[str, Any]:
    """Normalise `raw` with the test clock and return the parsed result."""
    result = json.loads(normalize_event(raw, now=now, lib_version=LIB_VERSION))
    assert isinstance(result, dict)
    return result


def reason(raw: object) -> str:
    """Return the EventError reason for `raw`, failing if it is accepted."""
    with pytest.raises(EventError) as info:
        normalize_event(raw, now=NOW, lib_version=LIB_VERSION)
    return str(info.value)


def minimal(**fields: Any) -> dict[str, Any]:
    """Return a valid event with `fields` added or replaced."""
    return {"event": "page_view", "distinct_id": "user-1", **fields}


# --- shape of the output -------------------------------------------------------------------


def test_minimal_event_gets_every_required_field() -> None:
    """A bare event gets properties with $lib/$lib_version, a uuid and the current timestamp."""
    result = normalize({"event": "page_view", "distinct_id": "user-1"})
    assert result["event"] == "page_view"
    assert result["distinct_id"] == "user-1"
    assert result["properties"] == {"$lib": "telemetry-sidecar", "$lib_version": LIB_VERSION}
    assert CANONICAL_UUID.fullmatch(result["uuid"])
    assert result["timestamp"] == NOW_TEXT


def test_output_is_compact_json_with_raw_unicode() -> None:
    """The text has no spaces after separators and keeps non-ASCII characters unescaped."""
    text = normalize_event(
        minimal(properties={"city": "Zürich", "list": [1, 2]}), now=NOW, lib_version=LIB_VERSION
    )
    assert text == json.dumps(json.loads(text), separators=(",", ":"), ensure_ascii=False)
    assert "Zürich" in text
    assert ", " not in text
    assert ": " not in text


def test_app_key_order_is_kept_and_added_keys_follow() -> None:
    """Keys keep the app's order; keys the sidecar adds come after them."""
    raw = {"type": "capture", "event": "e", "distinct_id": "d", "custom": 1}
    assert list(normalize(raw)) == [
        "type",
        "event",
        "distinct_id",
        "custom",
        "properties",
        "uuid",
        "timestamp",
    ]


def test_other_fields_pass_through_unchanged() -> None:
    """$set, $set_once, type and custom fields (nested too) come out exactly as they went in."""
    extra = {
        "$set": {"email": "a@example.com", "plan": None},
        "$set_once": {"first_seen": "2026-01-01"},
        "type": "capture",
        "custom": {"nested": [1, 2.5, True, None, {"deep": "x"}]},
    }
    result = normalize(minimal(**extra))
    for key, value in extra.items():
        assert result[key] == value


def test_app_properties_pass_through_unchanged() -> None:
    """Properties the app sets are kept as they are, next to $lib and $lib_version."""
    properties = {"$current_url": "https://example.com/", "count": 3, "tags": ["a", "b"]}
    result = normalize(minimal(properties=properties))
    assert result["properties"] == {
        **properties,
        "$lib": "telemetry-sidecar",
        "$lib_version": LIB_VERSION,
    }


def test_caller_dict_is_not_mutated() -> None:
    """Normalising leaves the caller's event, its properties and nested values untouched."""
    raw: dict[str, Any] = {
        "event": "e",
        "properties": {"distinct_id": 7, "nested": {"a": [1]}},
        "timestamp": "2026-11-26T12:00:00+02:00",
        "uuid": FIXED_UUID.upper(),
    }
    snapshot = copy.deepcopy(raw)
    properties = raw["properties"]
    normalize(raw)
    assert raw == snapshot
    assert raw["properties"] is properties
    assert "$lib" not in properties


def test_properties_are_not_copied_when_nothing_is_added() -> None:
    """With $lib and $lib_version present the properties are serialised as given."""
    properties = {"$lib": "web", "$lib_version": "1.0", "x": 1}
    result = normalize(minimal(properties=properties))
    assert result["properties"] == {"$lib": "web", "$lib_version": "1.0", "x": 1}


# --- the event object and 'event' ---------------------------------------------------------


@pytest.mark.parametrize("raw", [None, [], [minimal()], "event", 42, 4.5, True])
def test_non_object_event_is_rejected(raw: object) -> None:
    """Anything but a JSON object is rejected as a whole."""
    assert reason(raw) == "event must be an object"


@pytest.mark.parametrize("raw", [{"distinct_id": "d"}, {"event": None, "distinct_id": "d"}])
def test_missing_event_name_is_rejected(raw: dict[str, Any]) -> None:
    """An absent or null 'event' is reported as missing."""
    assert reason(raw) == "missing 'event'"


@pytest.mark.parametrize("name", ["", 42, True, ["page_view"], {"name": "x"}])
def test_event_name_must_be_a_non_empty_string(name: object) -> None:
    """An empty or non-string 'event' is rejected."""
    assert reason(minimal(event=name)) == "'event' must be a non-empty string"


# --- distinct_id ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("user-1", "user-1"),
        (" ", " "),
        (42, "42"),
        (0, "0"),
        (-7, "-7"),
        (12345678901234567890123, "12345678901234567890123"),
        (4.5, "4.5"),
        (-0.25, "-0.25"),
        (42.0, "42"),
        (1e21, "1e+21"),
    ],
)
def test_distinct_id_is_sent_as_string(given: object, expected: str) -> None:
    """Strings stay as they are; numbers become their string form (whole floats as integers)."""
    assert normalize(minimal(distinct_id=given))["distinct_id"] == expected


@pytest.mark.parametrize(
    "given", ["", True, False, [], ["u"], {}, {"id": "u"}, math.nan, math.inf, -math.inf]
)
def test_invalid_distinct_id_is_rejected(given: object) -> None:
    """Empty strings, booleans, containers, NaN and infinities are not distinct ids."""
    assert reason(minimal(distinct_id=given)) == (
        "'distinct_id' must be a non-empty string or number"
    )


@pytest.mark.parametrize("raw", [{"event": "e"}, {"event": "e", "distinct_id": None}])
def test_missing_distinct_id_is_rejected(raw: dict[str, Any]) -> None:
    """With no distinct_id anywhere (or only null) the event is rejected."""
    assert reason(raw) == "missing 'distinct_id'"


def test_top_level_distinct_id_wins_over_properties() -> None:
    """The top-level distinct_id is used; properties.distinct_id is left as sent."""
    result = normalize(minimal(distinct_id="top", properties={"distinct_id": "inner"}))
    assert result["distinct_id"] == "top"
    assert result["properties"]["distinct_id"] == "inner"


@pytest.mark.parametrize("top", [{}, {"distinct_id": None}])
def test_properties_distinct_id_is_used_when_top_level_is_absent(top: dict[str, Any]) -> None:
    """With no (or a null) top-level distinct_id, properties.distinct_id is written at top level."""
    result = normalize({"event": "e", **top, "properties": {"distinct_id": 99}})
    assert result["distinct_id"] == "99"
    assert result["properties"]["distinct_id"] == 99


def test_invalid_properties_distinct_id_is_rejected() -> None:
    """A fallback distinct_id from properties must be valid too, and the reason names it."""
    assert reason({"event": "e", "properties": {"distinct_id": ""}}) == (
        "'properties.distinct_id' must be a non-empty string or number"
    )


def test_invalid_top_level_distinct_id_does_not_fall_back() -> None:
    """A present but invalid top-level distinct_id rejects even when properties has a valid one."""
    raw = minimal(distinct_id="", properties={"distinct_id": "inner"})
    assert reason(raw) == "'distinct_id' must be a non-empty string or number"


# --- properties and $lib -------------------------------------------------------------------


@pytest.mark.parametrize("properties", [[], ["a"], "props", 1, True])
def test_non_object_properties_are_rejected(properties: object) -> None:
    """Properties, when given, must be a JSON object."""
    assert reason(minimal(properties=properties)) == "'properties' must be an object"


def test_null_properties_count_as_absent() -> None:
    """A null 'properties' is replaced by an object holding $lib and $lib_version."""
    result = normalize(minimal(properties=None))
    assert result["properties"] == {"$lib": "telemetry-sidecar", "$lib_version": LIB_VERSION}


def test_app_lib_and_lib_version_are_kept() -> None:
    """An app's own $lib and $lib_version (even null) are not overwritten."""
    result = normalize(minimal(properties={"$lib": "web", "$lib_version": None}))
    assert result["properties"] == {"$lib": "web", "$lib_version": None}


def test_missing_half_of_lib_pair_is_filled_in() -> None:
    """With only $lib given, $lib_version is still added, and the other way round."""
    assert normalize(minimal(properties={"$lib": "web"}))["properties"] == {
        "$lib": "web",
        "$lib_version": LIB_VERSION,
    }
    assert normalize(minimal(properties={"$lib_version": "2"}))["properties"] == {
        "$lib_version": "2",
        "$lib": "telemetry-sidecar",
    }


# --- uuid ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "given",
    [
        FIXED_UUID,
        FIXED_UUID.upper(),
        FIXED_UUID.replace("-", ""),
        "{" + FIXED_UUID.upper() + "}",
        "urn:uuid:" + FIXED_UUID,
        "URN:UUID:" + FIXED_UUID.upper(),
    ],
)
def test_valid_uuid_is_kept_in_canonical_form(given: str) -> None:
    """Accepted UUID spellings come out lowercase and hyphenated."""
    assert normalize(minimal(uuid=given))["uuid"] == FIXED_UUID


@pytest.mark.parametrize(
    "given",
    [
        "",
        "not-a-uuid",
        FIXED_UUID[:-1],
        FIXED_UUID + "0",
        FIXED_UUID.replace("-", "", 1),
        " " + FIXED_UUID,
        FIXED_UUID + "\n",
        "+" + FIXED_UUID.replace("-", "")[1:],  # int(..., 16) would take it
        "1234_678" + FIXED_UUID.replace("-", "")[8:],  # and this
        "{" + FIXED_UUID,
        "urn:uuid:" + FIXED_UUID.replace("-", ""),
        FIXED_UUID.replace("a", "g"),
        "\uff10" + FIXED_UUID[1:],  # a full-width digit zero
        42,
        1.5,
        True,
        [FIXED_UUID],
        {"uuid": FIXED_UUID},
    ],
)
def test_invalid_uuid_is_rejected(given: object) -> None:
    """Malformed or non-string uuids reject the event instead of being replaced."""
    assert reason(minimal(uuid=given)) == "invalid 'uuid'"


@pytest.mark.parametrize("fields", [{}, {"uuid": None}])
def test_missing_uuid_gets_a_uuid7_stamped_with_now(fields: dict[str, Any]) -> None:
    """An absent or null uuid is replaced by a UUIDv7 carrying `now`'s milliseconds."""
    value = uuid.UUID(normalize(minimal(**fields))["uuid"])
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == NOW_MS


def test_assigned_uuids_differ_between_events() -> None:
    """Events normalised with the same `now` still get distinct uuids."""
    uuids = {normalize(minimal())["uuid"] for _ in range(1000)}
    assert len(uuids) == 1000


# --- timestamp -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("2026-11-26T10:00:00Z", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26t10:00:00z", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26T10:00:00.123Z", "2026-11-26T10:00:00.123000+00:00"),
        ("2026-11-26T10:00:00.123456+00:00", "2026-11-26T10:00:00.123456+00:00"),
        ("2026-11-26T10:00:00.1234567Z", "2026-11-26T10:00:00.123456+00:00"),
        ("2026-11-26T10:00:00,5Z", "2026-11-26T10:00:00.500000+00:00"),
        ("2026-11-26T10:00:00.123+02:00", "2026-11-26T08:00:00.123000+00:00"),
        ("2026-11-26T10:00:00-05:30", "2026-11-26T15:30:00.000000+00:00"),
        ("2026-11-26T10:00:00+0200", "2026-11-26T08:00:00.000000+00:00"),
        ("2026-11-26T10:00:00+02", "2026-11-26T08:00:00.000000+00:00"),
        ("2026-11-26T10:00:00-00:00", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26T10:00Z", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26 10:00:00", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26T10:00:00", "2026-11-26T10:00:00.000000+00:00"),
        ("2026-11-26", "2026-11-26T00:00:00.000000+00:00"),
        ("2026-01-01T01:00:00+02:00", "2025-12-31T23:00:00.000000+00:00"),
        ("2024-02-29T23:30:00-01:00", "2024-03-01T00:30:00.000000+00:00"),
    ],
)
def test_timestamp_is_converted_to_canonical_utc(given: str, expected: str) -> None:
    """Accepted ISO 8601 forms come out in UTC as YYYY-MM-DDTHH:MM:SS.ffffff+00:00."""
    assert normalize(minimal(timestamp=given))["timestamp"] == expected


@pytest.mark.parametrize("fields", [{}, {"timestamp": None}])
def test_missing_timestamp_is_set_to_now(fields: dict[str, Any]) -> None:
    """An absent or null timestamp becomes `now` in the canonical format."""
    assert normalize(minimal(**fields))["timestamp"] == NOW_TEXT


@pytest.mark.parametrize(
    "given",
    [
        "",
        "yesterday",
        "1764151200",
        "2026-11-26T10:00:00Zjunk",
        " 2026-11-26T10:00:00Z",
        "2026-11-26T10:00:00Z ",
        "2026-11-26x10:00:00",  # fromisoformat alone would take any separator
        "2026-W48-4",
        "20261126T100000Z",
        "2026-11-26T10",
        "2026-11-26T10:00:00+02:00:30",
        "2026-11-26Z",
        "2026-02-30T10:00:00Z",
        "2026-11-26T24:00:00Z",
        "2026-12-31T23:59:60Z",
        "2026-11-26T10:00:00+24:00",
        "0000-01-01T00:00:00Z",
        "\uff12\uff10\uff12\uff16-11-26T10:00:00Z",  # full-width digits
        "Thu, 26 Nov 2026 10:00:00 GMT",
    ],
)
def test_unparseable_timestamp_is_rejected(given: str) -> None:
    """Strings outside the accepted ISO 8601 grammar, or naming no real instant, are rejected."""
    assert reason(minimal(timestamp=given)) == "unparseable 'timestamp'"


@pytest.mark.parametrize("given", [1764151200, 1764151200.5, True, [], {"iso": "x"}])
def test_non_string_timestamp_is_rejected(given: object) -> None:
    """Epoch numbers and other non-strings are not accepted as timestamps."""
    assert reason(minimal(timestamp=given)) == "'timestamp' must be an ISO 8601 string"


@pytest.mark.parametrize("given", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_timestamp_leaving_the_calendar_in_utc_is_rejected(given: str) -> None:
    """A timestamp whose UTC equivalent falls outside years 1-9999 is rejected, not a crash."""
    assert reason(minimal(timestamp=given)) == "'timestamp' out of range"


def test_aware_non_utc_now_is_converted() -> None:
    """A `now` in another zone is written as the same instant in UTC."""
    plus_two = NOW.astimezone(timezone(timedelta(hours=2)))
    assert normalize(minimal(), now=plus_two)["timestamp"] == NOW_TEXT


def test_naive_now_is_a_caller_bug() -> None:
    """A naive `now` raises plain ValueError, not EventError: a caller bug, not the app's fault."""
    with pytest.raises(ValueError, match="timezone-aware") as info:
        normalize_event(minimal(), now=datetime(2026, 11, 26), lib_version=LIB_VERSION)
    assert not isinstance(info.value, EventError)


# --- size, NaN and other unserialisable content ----------------------------------------------


def padded_event(size: int) -> dict[str, Any]:
    """Return an event whose normalised UTF-8 size is exactly `size` bytes."""
    base = minimal(uuid=FIXED_UUID, timestamp=NOW_TEXT, properties={"pad": ""})
    base_size = len(normalize_event(base, now=NOW, lib_version=LIB_VERSION))
    base["properties"] = {"pad": "a" * (size - base_size)}
    return base


def test_event_at_the_size_limit_is_accepted() -> None:
    """An event of exactly MAX_EVENT_BYTES serialised bytes is accepted."""
    text = normalize_event(padded_event(MAX_EVENT_BYTES), now=NOW, lib_version=LIB_VERSION)
    assert len(text.encode()) == MAX_EVENT_BYTES


def test_event_over_the_size_limit_is_rejected_with_its_size() -> None:
    """One byte over the limit rejects the event, and the reason states the size."""
    message = reason(padded_event(MAX_EVENT_BYTES + 1))
    assert message == "event is 1000001 bytes serialized, over the 1000000 limit"


def test_size_limit_counts_utf8_bytes_not_characters() -> None:
    """Multi-byte characters count by their UTF-8 length."""
    base = minimal(uuid=FIXED_UUID, timestamp=NOW_TEXT, properties={"pad": ""})
    base_size = len(normalize_event(base, now=NOW, lib_version=LIB_VERSION))
    count = (MAX_EVENT_BYTES - base_size) // 2 + 1  # "é" is 2 bytes
    base["properties"] = {"pad": "é" * count}
    assert base_size + count < MAX_EVENT_BYTES
    assert reason(base).startswith(f"event is {base_size + 2 * count} bytes serialized")


@pytest.mark.parametrize(
    "fields",
    [
        {"properties": {"value": math.nan}},
        {"properties": {"nested": {"list": [1, math.inf]}}},
        {"$set": {"score": -math.inf}},
        {"custom": math.nan},
    ],
)
def test_nan_and_infinity_anywhere_are_rejected(fields: dict[str, Any]) -> None:
    """NaN or ±Infinity at any depth rejects the event, since PostHog cannot parse them."""
    assert reason(minimal(**fields)) == "event contains NaN or Infinity, which JSON cannot carry"


def test_nan_from_json_loads_is_rejected() -> None:
    """The NaN that Python's json.loads lets through from the wire is caught."""
    raw = json.loads('{"event":"e","distinct_id":"d","properties":{"v":NaN}}')
    assert "NaN" in reason(raw)


@pytest.mark.parametrize("text", ['"\\ud800"', '"a\\udfffb"'])
def test_lone_surrogate_is_rejected(text: str) -> None:
    """A lone surrogate escape, which json.loads accepts, rejects the event (no UTF-8 form)."""
    raw = minimal(properties={"v": json.loads(text)})
    assert reason(raw) == "event contains invalid Unicode (a lone surrogate)"


def test_paired_surrogate_escape_is_accepted() -> None:
    """A proper surrogate pair decodes to one character and is kept."""
    raw = minimal(properties={"v": json.loads('"\\ud83d\\ude00"')})
    assert normalize(raw)["properties"]["v"] == "\U0001f600"


@pytest.mark.parametrize(
    ("text", "unicode"),
    [("phc_key", True), ("é☃😀", True), ("\\ud800", False), ("phc_\\ud800x", False),
     ("\\udc00", False), ("\\udfff", False), ("\\ud83d\\ude00", True)],
)
def test_is_unicode_text_is_false_only_for_lone_surrogates(text: str, unicode: bool) -> None:
    """Text is Unicode text unless it holds a lone surrogate (a pair decodes to one character)."""
    assert is_unicode_text(json.loads(f'"{text}"')) is unicode


LONG = "8" * (sys.get_int_max_str_digits() + 1)  # past what int() takes from text


def test_a_long_integer_passes_through_as_the_same_digits() -> None:
    """An integer past the conversion limit, anywhere in the event, is written back as the
    digits it came as, next to integers the standard library converts."""
    raw = long_loads(
        f'{{"event":"e","distinct_id":"d","properties":{{"n":{LONG},"m":[-{LONG},{{"k":1}}],'
        f'"big":{10**4000}}},"custom":{LONG}}}'
    )
    text = normalize_event(raw, now=NOW, lib_version=LIB_VERSION)
    assert f'"n":{LONG},"m":[-{LONG},{{"k":1}}],"big":{10**4000}' in text
    assert f'"custom":{LONG},' in text
    result = long_loads(text)
    assert result["properties"]["n"] == LongInt(LONG)
    assert result["custom"] == LongInt(LONG)


@pytest.mark.parametrize("sign", ["", "-"])
def test_a_long_integer_distinct_id_is_sent_as_its_digits(sign: str) -> None:
    """A long integer distinct_id is a number, sent as its decimal text like any other."""
    text = normalize_event(minimal(distinct_id=LongInt(sign + LONG)), now=NOW,
                           lib_version=LIB_VERSION)
    assert json.loads(text)["distinct_id"] == sign + LONG
    raw = {"event": "e", "properties": {"distinct_id": LongInt(LONG)}}
    text = normalize_event(raw, now=NOW, lib_version=LIB_VERSION)
    assert long_loads(text)["distinct_id"] == LONG


@pytest.mark.parametrize(
    ("field", "expected"),
    [("event", "'event' must be a non-empty string"), ("uuid", "invalid 'uuid'"),
     ("timestamp", "'timestamp' must be an ISO 8601 string"),
     ("properties", "'properties' must be an object")],
)
def test_a_long_integer_where_text_or_an_object_is_needed_rejects_the_event(
    field: str, expected: str
) -> None:
    """A long integer as the event name, uuid, timestamp or properties rejects the event alone."""
    assert reason(minimal(**{field: LongInt(LONG)})) == expected


def test_a_long_integer_does_not_hide_nan_or_a_long_event() -> None:
    """With a long integer in the event, NaN is still named, and the size limit still holds."""
    assert reason(minimal(properties={"n": LongInt(LONG), "x": math.nan})) == (
        "event contains NaN or Infinity, which JSON cannot carry"
    )
    huge = LongInt("9" * MAX_EVENT_BYTES)
    assert "over the 1000000 limit" in reason(minimal(properties={"n": huge}))


@pytest.mark.parametrize("value", [{1, 2}, object(), b"bytes"])
def test_non_json_value_is_rejected(value: object) -> None:
    """Values json.loads never makes still give an EventError, not a crash."""
    assert reason(minimal(custom=value)) == "event contains a value that is not JSON"


# --- uuid7 ---------------------------------------------------------------------------------


def assigned_uuid(now: datetime) -> uuid.UUID:
    """The uuid the sidecar gives an event sent without one at `now`."""
    bodies, rejected = normalize_batch([{"event": "e", "distinct_id": "d"}], now=now,
                                       lib_version=LIB_VERSION)
    assert rejected == []
    return uuid.UUID(json.loads(bodies[0])["uuid"])


def test_uuid7_layout() -> None:
    """An assigned uuid is an RFC 9562 UUIDv7: version 7, variant 10, unix ms in the top 48."""
    value = assigned_uuid(NOW)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert (value.int >> 62) & 0b11 == 0b10
    assert (value.int >> 76) & 0xF == 7
    assert value.int >> 80 == NOW_MS


def test_uuid7_random_bits_come_from_rand() -> None:
    """The 74 non-fixed bits are taken from rand(10); version and variant override the rest."""
    ones = uuid.UUID(int=events_module._uuid7_int(NOW_MS, lambda n: b"\xff" * n))
    zeros = uuid.UUID(int=events_module._uuid7_int(NOW_MS, lambda n: b"\x00" * n))
    ms_hex = f"{NOW_MS:012x}"
    assert str(ones) == f"{ms_hex[:8]}-{ms_hex[8:]}-7fff-bfff-ffffffffffff"
    assert str(zeros) == f"{ms_hex[:8]}-{ms_hex[8:]}-7000-8000-000000000000"


def test_uuid7_truncates_to_the_millisecond() -> None:
    """Microseconds within one millisecond do not change the timestamp bits."""
    start = datetime(2026, 1, 1, tzinfo=UTC)
    assert assigned_uuid(start).int >> 80 == (
        assigned_uuid(start + timedelta(microseconds=999)).int >> 80
    )
    assert assigned_uuid(start + timedelta(milliseconds=1)).int >> 80 == (
        (assigned_uuid(start).int >> 80) + 1
    )


def test_uuid7_handles_non_utc_zones() -> None:
    """The timestamp bits depend on the instant, not on the zone it is expressed in."""
    west = NOW.astimezone(timezone(timedelta(hours=-8)))
    assert assigned_uuid(west).int >> 80 == assigned_uuid(NOW).int >> 80


def test_uuid7_sorts_by_time_across_milliseconds() -> None:
    """UUIDs made at increasing milliseconds sort in time order, as text and as integers."""
    times = [NOW + timedelta(milliseconds=i) for i in range(500)]
    values = [assigned_uuid(moment) for moment in times]
    assert values == sorted(values)
    assert [str(v) for v in values] == sorted(str(v) for v in values)


def test_uuid7_values_are_unique() -> None:
    """Many UUIDs assigned at one instant, in one batch and across batches, all differ."""
    bodies, _ = normalize_batch([{"event": "e", "distinct_id": "d"}] * 10_000, now=NOW,
                                lib_version=LIB_VERSION)
    values = {json.loads(body)["uuid"] for body in bodies}
    values |= {str(assigned_uuid(NOW)) for _ in range(100)}
    assert len(values) == 10_100


@pytest.mark.parametrize(
    "now", [datetime(2026, 11, 26), datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC)]
)
def test_uuid7_rejects_naive_or_pre_epoch_now(now: datetime) -> None:
    """A naive `now` or one before 1970 cannot be encoded and raises ValueError."""
    with pytest.raises(ValueError, match=r"timezone-aware|range"):
        assigned_uuid(now)


def test_uuid7_rejects_short_random_input() -> None:
    """A rand that returns too few bytes is an error, not a silently weaker UUID."""
    with pytest.raises(ValueError, match="returned 4 bytes"):
        events_module._uuid7_int(NOW_MS, lambda n: b"\x00" * 4)


# --- properties (hypothesis) -----------------------------------------------------------------


def json_like(*, clean: bool) -> st.SearchStrategy[Any]:
    """JSON-like values as json.loads makes them; unless `clean`, with NaN, ±inf and surrogates."""
    characters = st.characters(codec="utf-8") if clean else st.characters(exclude_categories=())
    text = st.text(characters, max_size=20)
    scalars = (
        st.none()
        | st.booleans()
        | st.integers()
        | st.floats(allow_nan=not clean, allow_infinity=not clean)
        | text
    )
    return st.recursive(
        scalars,
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(text, children, max_size=4)
        ),
        max_leaves=20,
    )


wild_values = json_like(clean=False)
clean_values = json_like(clean=True)
clean_text = st.text(st.characters(codec="utf-8"))
fixed_offsets = st.integers(-1439, 1439).map(lambda minutes: timezone(timedelta(minutes=minutes)))
timestamp_like = (
    st.datetimes(timezones=fixed_offsets | st.none()).map(lambda moment: moment.isoformat())
    | st.datetimes().map(lambda moment: moment.isoformat(sep=" ") + "Z")
    | st.dates().map(str)
)
uuid_like = st.uuids().map(str) | st.uuids().map(lambda u: u.hex.upper())
good_fields = {
    "event": st.text(min_size=1, max_size=10),
    "distinct_id": st.text(min_size=1, max_size=10) | st.integers() | st.floats(),
}
other_fields = {
    "uuid": uuid_like | wild_values,
    "timestamp": timestamp_like | wild_values,
    "properties": st.dictionaries(st.text(max_size=10), wild_values, max_size=4) | wild_values,
}
known_fields = {
    **{key: strategy | wild_values for key, strategy in good_fields.items()},
    **other_fields,
}
event_like = (
    st.fixed_dictionaries(good_fields, optional=other_fields)
    | st.fixed_dictionaries({}, optional=known_fields)
).flatmap(
    lambda known: st.dictionaries(st.text(max_size=10), wild_values, max_size=3).map(
        lambda extra: {**extra, **known}
    )
)
aware_now = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
)
KNOWN_KEYS = frozenset(known_fields)


@settings(max_examples=500)
@given(raw=event_like | wild_values, now=aware_now)
def test_normalize_event_raises_only_event_error_and_emits_valid_events(
    raw: object, now: datetime
) -> None:
    """For any JSON-like input the result is an EventError or a well-formed, stable event."""
    snapshot = repr(raw)  # repr, not ==, because NaN != NaN
    try:
        text = normalize_event(raw, now=now, lib_version=LIB_VERSION)
    except EventError as exc:
        assert str(exc)
        assert repr(raw) == snapshot
        return
    assert repr(raw) == snapshot
    result = json.loads(text)
    assert isinstance(result, dict)
    assert isinstance(result["event"], str)
    assert result["event"]
    assert isinstance(result["distinct_id"], str)
    assert result["distinct_id"]
    assert isinstance(result["properties"], dict)
    assert "$lib" in result["properties"]
    assert "$lib_version" in result["properties"]
    assert CANONICAL_UUID.fullmatch(result["uuid"])
    assert CANONICAL_TIMESTAMP.fullmatch(result["timestamp"])
    assert len(text.encode()) <= MAX_EVENT_BYTES
    # Normalising the output again changes nothing: stored events are already canonical.
    assert normalize_event(result, now=NOW, lib_version="other") == text


@settings(max_examples=200)
@given(
    name=clean_text.filter(bool),
    distinct_id=clean_text.filter(bool),
    properties=st.dictionaries(clean_text, clean_values, max_size=4),
    extra=st.dictionaries(
        clean_text.filter(lambda key: key not in KNOWN_KEYS), clean_values, max_size=3
    ),
)
def test_well_formed_events_are_accepted_with_fields_intact(
    name: str, distinct_id: str, properties: dict[str, Any], extra: dict[str, Any]
) -> None:
    """Valid events without NaN or lone surrogates are accepted and keep every app field."""
    raw = {**extra, "event": name, "distinct_id": distinct_id, "properties": properties}
    result = normalize(raw)
    assert result["event"] == name
    assert result["distinct_id"] == distinct_id
    for key, value in properties.items():
        assert result["properties"][key] == value
    for key, value in extra.items():
        assert result[key] == value


def test_normalize_batch_matches_normalize_event_one_by_one() -> None:
    """The batch form gives each event the same text as normalize_event, bar its new uuid."""
    now = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)
    raws: list[object] = [
        {"event": "a", "distinct_id": "u", "uuid": "0190b5c2-7e7a-7c5e-8f3a-1c2d3e4f5a6b"},
        {"event": "", "distinct_id": "u"},
        {"event": "b", "distinct_id": 7, "timestamp": "2026-11-26T12:00:00+02:00", "uuid": None},
        "not an event",
        {"event": "c", "distinct_id": "u"},
    ]
    bodies, rejected = normalize_batch(raws, now=now, lib_version="1.2.3")
    assert [index for index, _ in rejected] == [1, 3]
    assert rejected[1][1] == "event must be an object"
    assert bodies[0] == normalize_event(raws[0], now=now, lib_version="1.2.3")
    middle = json.loads(bodies[1])
    assert (middle["distinct_id"], middle["timestamp"]) == ("7", "2026-11-26T10:00:00.000000+00:00")
    last = json.loads(bodies[2])
    assert last["timestamp"] == "2026-11-26T10:00:00.000000+00:00"
    assert uuid.UUID(last["uuid"]).version == 7


def test_normalize_batch_gives_every_new_event_its_own_uuid7_for_now() -> None:
    """A batch larger than the random pool still gets distinct UUIDv7s stamped with `now`."""
    now = datetime(2026, 11, 26, 10, 0, 0, 123000, tzinfo=UTC)
    bodies, rejected = normalize_batch(
        [{"event": "e", "distinct_id": "u"}] * 300, now=now, lib_version="1"
    )
    assert rejected == []
    uuids = [uuid.UUID(json.loads(body)["uuid"]) for body in bodies]
    assert len(set(uuids)) == 300
    millis = int(now.timestamp() * 1000)
    assert all(u.version == 7 and u.int >> 80 == millis for u in uuids)


# ---- the shortcut for UTC timestamps -------------------------------------------------------------


def _digits(low: int, high: int) -> st.SearchStrategy[str]:
    return st.integers(low, high).map(lambda n: f"{n:02d}")


_NEAR_UTC_TIMESTAMPS = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y}-{mo}-{d}{sep}{h}:{mi}:{s}{frac}{zone}",
    st.sampled_from(["0000", "0001", "1900", "2000", "2024", "2026", "2100", "9999"]),
    _digits(0, 13),
    _digits(0, 32),
    st.sampled_from(["T", "t", " "]),
    _digits(0, 25),
    _digits(0, 61),
    _digits(0, 61),
    st.sampled_from(["", ".1", ".12", ".123", ".1234", ".123456", ".1234567", ",123", ".999"]),
    st.sampled_from(["Z", "z", "+00:00", "-00:00", "+01:00", "", "+0000", "Zx"]),
)


@settings(max_examples=3000)
@given(_NEAR_UTC_TIMESTAMPS)
def test_the_utc_shortcut_agrees_with_parsing_and_converting(value: str) -> None:
    """In and around the shapes the shortcut takes (leap days, month 13, day 32, hour 24,
    second 60, year 0, other zones, separators and fractions), the canonical text or the
    rejection is exactly what parsing and converting the timestamp gives."""

    def outcome(canonical: Any) -> str:
        try:
            return str(canonical(value))
        except EventError as exc:
            return f"rejected: {exc}"

    assert outcome(events_module._canonical_timestamp) == outcome(
        events_module._converted_timestamp
    )
