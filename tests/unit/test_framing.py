"""Unit tests for sidecar.wire.framing: the sans-I/O line decoder of the stdin stream."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sidecar.wire.framing import MAX_LINE_BYTES, Frame, LineDecoder, OversizedLine


def decode(chunks: list[bytes], max_line_bytes: int = MAX_LINE_BYTES) -> list[Frame]:
    """Feed `chunks` one by one, then finish, and return every frame produced."""
    decoder = LineDecoder(max_line_bytes)
    frames: list[Frame] = []
    for chunk in chunks:
        frames += decoder.feed(chunk)
    return frames + decoder.finish()


def expected_frames(lines: list[bytes], max_line_bytes: int) -> list[Frame]:
    """What the contract says the decoder yields for these lines (no newlines inside)."""
    frames: list[Frame] = []
    for line in lines:
        if len(line) > max_line_bytes:
            frames.append(OversizedLine(len(line)))
            continue
        text = line[:-1] if line.endswith(b"\r") else line
        if text.strip(b" \t\r"):
            frames.append(text)
    return frames


STREAM = b'{"a":1}\n{"b":"\xc3\xa9"}\r\n\n   \n\t\r\n{"c":[1,2]}\n'
STREAM_FRAMES: list[Frame] = [b'{"a":1}', b'{"b":"\xc3\xa9"}', b'{"c":[1,2]}']


def test_whole_stream_in_one_chunk() -> None:
    """A stream fed at once yields its non-blank lines, without terminators."""
    assert decode([STREAM]) == STREAM_FRAMES


@pytest.mark.parametrize("split", range(len(STREAM) + 1))
def test_split_at_every_byte_boundary(split: int) -> None:
    """Splitting the stream in two at any byte gives the same frames."""
    assert decode([STREAM[:split], STREAM[split:]]) == STREAM_FRAMES


def test_one_byte_at_a_time() -> None:
    """Feeding single bytes gives the same frames as feeding the whole stream."""
    assert decode([STREAM[i : i + 1] for i in range(len(STREAM))]) == STREAM_FRAMES


def test_frames_come_out_as_soon_as_their_newline_arrives() -> None:
    """`feed` returns a line in the call that completes it, not later."""
    decoder = LineDecoder()
    assert decoder.feed(b'{"a"') == []
    assert decoder.feed(b":1}\n{") == [b'{"a":1}']
    assert decoder.feed(b"}\n") == [b"{}"]
    assert decoder.finish() == []


def test_crlf_terminator_is_removed() -> None:
    """`\\r\\n` ends a line like `\\n`; the `\\r` is not part of the frame."""
    assert decode([b"abc\r\n", b"def\r", b"\n"]) == [b"abc", b"def"]


def test_only_one_trailing_cr_is_removed() -> None:
    """Only the `\\r` right before `\\n` is a terminator; one inside the line is kept."""
    assert decode([b"a\rb\r\r\n"]) == [b"a\rb\r"]


def test_blank_and_whitespace_lines_are_skipped() -> None:
    """Empty lines and lines of spaces, tabs and CRs produce no frame."""
    assert decode([b"\n\n \n\t\n \t \r\n\r\n"]) == []


def test_surrounding_whitespace_is_kept_in_a_real_line() -> None:
    """A non-blank line is passed through as is, leading/trailing blanks included."""
    assert decode([b"  {}\t\n"]) == [b"  {}\t"]


def test_line_exactly_at_the_limit_passes() -> None:
    """A line of exactly `max_line_bytes` bytes is a normal frame."""
    line = b"x" * 64
    assert decode([line + b"\n"], max_line_bytes=64) == [line]


def test_line_exactly_at_the_limit_passes_when_chunked() -> None:
    """A line of exactly the limit, spread over chunks, is still a normal frame."""
    line = b"y" * 64
    assert decode([line[:10], line[10:63], line[63:] + b"\n"], max_line_bytes=64) == [line]


def test_one_byte_over_gives_one_oversized_line_then_resyncs() -> None:
    """One byte over the limit: exactly one OversizedLine, and the next line is intact."""
    frames = decode([b"x" * 65 + b"\nnext\n"], max_line_bytes=64)
    assert frames == [OversizedLine(65), b"next"]


def test_oversized_unterminated_last_line_is_reported_by_finish() -> None:
    """An oversized line cut off by end of input is still reported, once."""
    decoder = LineDecoder(8)
    assert decoder.feed(b"ok\n" + b"z" * 20) == [b"ok"]
    assert decoder.finish() == [OversizedLine(20)]
    assert decoder.finish() == []


def test_oversized_line_over_many_chunks_is_never_buffered_beyond_limit() -> None:
    """While a huge line streams in, the buffer never holds more than the limit."""
    limit = 100
    decoder = LineDecoder(limit)
    frames: list[Frame] = []
    frames += decoder.feed(b"first\n")
    for _ in range(1000):
        frames += decoder.feed(b"q" * 37)
        assert len(decoder._buffer) <= limit
    frames += decoder.feed(b"q" * 3 + b"\r\nafter\n")
    assert len(decoder._buffer) <= limit
    assert frames == [b"first", OversizedLine(37 * 1000 + 3 + 1), b"after"]


def test_oversized_line_in_one_big_chunk_is_not_buffered() -> None:
    """A single chunk far past the limit without a newline leaves the buffer empty."""
    decoder = LineDecoder(16)
    assert decoder.feed(b"w" * 10_000) == []
    assert len(decoder._buffer) == 0
    assert decoder.feed(b"\n{}\n") == [OversizedLine(10_000), b"{}"]


def test_two_oversized_lines_in_a_row_each_reported_once() -> None:
    """Back-to-back oversized lines give one OversizedLine each."""
    frames = decode([b"a" * 10 + b"\n" + b"b" * 12 + b"\n" + b"ok\n"], max_line_bytes=5)
    assert frames == [OversizedLine(10), OversizedLine(12), b"ok"]


def test_finish_returns_unterminated_last_line() -> None:
    """At end of input, a last line without a newline is returned by `finish`."""
    decoder = LineDecoder()
    assert decoder.feed(b'{"x":1}\n{"y"') == [b'{"x":1}']
    assert decoder.feed(b":2}") == []
    assert decoder.finish() == [b'{"y":2}']
    assert decoder.finish() == []


def test_finish_drops_an_unterminated_blank_line_and_trailing_cr() -> None:
    """`finish` applies the same CR and blank rules as a terminated line."""
    decoder = LineDecoder()
    decoder.feed(b" \t")
    assert decoder.finish() == []
    decoder = LineDecoder()
    decoder.feed(b"[1]\r")
    assert decoder.finish() == [b"[1]"]


def test_feed_accepts_bytearray_and_empty_chunks() -> None:
    """A bytearray chunk and an empty chunk are handled; frames are bytes."""
    decoder = LineDecoder()
    assert decoder.feed(b"") == []
    frames = decoder.feed(bytearray(b"ab\n"))
    assert frames == [b"ab"]
    assert type(frames[0]) is bytes


def test_limit_must_be_positive() -> None:
    """A limit below one byte is refused."""
    with pytest.raises(ValueError, match="at least 1"):
        LineDecoder(0)


line_bytes = st.lists(st.sampled_from([b"a", b"{", b"}", b" ", b"\t", b"\r", b"\xc3", b"\xff"]))
lines_strategy = st.lists(line_bytes.map(b"".join), max_size=20)


@given(lines=lines_strategy, data=st.data())
def test_property_random_chunking_gives_the_non_blank_lines(
    lines: list[bytes], data: st.DataObject
) -> None:
    """For any lines joined by \\n and cut at any points, the frames are the non-blank lines."""
    stream = b"\n".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    chunks = [stream[a:b] for a, b in itertools.pairwise(bounds)]
    assert decode(chunks) == expected_frames(lines, MAX_LINE_BYTES)


@given(lines=lines_strategy, limit=st.integers(1, 12), data=st.data())
def test_property_small_limit_marks_exactly_the_long_lines(
    lines: list[bytes], limit: int, data: st.DataObject
) -> None:
    """With a small limit, exactly the lines over it become OversizedLine(len), buffer bounded."""
    stream = b"\n".join(lines)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    bounds = [0, *cuts, len(stream)]
    decoder = LineDecoder(limit)
    frames: list[Frame] = []
    for a, b in itertools.pairwise(bounds):
        frames += decoder.feed(stream[a:b])
        assert len(decoder._buffer) <= limit
    frames += decoder.finish()
    assert frames == expected_frames(lines, limit)
