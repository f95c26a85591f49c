"""Newline-delimited framing for the stdin protocol stream, free of I/O.

The decoder is fed whatever bytes the reader got and hands back complete lines. A line longer
than the limit is never held whole: the decoder keeps at most `max_line_bytes` of it, reports it
once as `OversizedLine`, drops the rest and resynchronises at the next newline.
"""

from __future__ import annotations

from dataclasses import dataclass

MAX_LINE_BYTES = 16 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class OversizedLine:
    """A line that went past the limit; only its size so far is kept, not its bytes."""

    seen_bytes: int


Frame = bytes | OversizedLine


class LineDecoder:
    """Splits a byte stream into lines ending in `\\n` (a trailing `\\r` is removed).

    Blank lines are skipped. `feed` returns the frames completed by the new bytes; `finish`
    returns a last unterminated line at end of input.
    """

    def __init__(self, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        if max_line_bytes < 1:
            raise ValueError("max_line_bytes must be at least 1")
        self._max = max_line_bytes
        self._buffer = bytearray()
        # While discarding an oversized line: how many bytes of it went by; None otherwise.
        self._discarded: int | None = None

    def feed(self, data: bytes | bytearray) -> list[Frame]:
        """Take the next chunk of the stream and return the frames it completes."""
        frames: list[Frame] = []
        start = 0
        end = len(data)
        while start < end:
            newline = data.find(b"\n", start)
            stop = end if newline < 0 else newline
            if self._discarded is not None:
                self._discarded += stop - start
                if newline >= 0:
                    frames.append(OversizedLine(self._discarded))
                    self._discarded = None
            elif len(self._buffer) + (stop - start) > self._max:
                self._discarded = len(self._buffer) + (stop - start)
                self._buffer.clear()
                if newline >= 0:
                    frames.append(OversizedLine(self._discarded))
                    self._discarded = None
            elif newline < 0:
                self._buffer += data[start:stop]
            else:
                if self._buffer:
                    self._buffer += data[start:stop]
                    line = bytes(self._buffer)
                    self._buffer.clear()
                else:
                    line = bytes(data[start:stop])
                self._append_line(frames, line)
            if newline < 0:
                break
            start = newline + 1
        return frames

    def finish(self) -> list[Frame]:
        """End of input: return an unterminated last line, if any."""
        frames: list[Frame] = []
        if self._discarded is not None:
            frames.append(OversizedLine(self._discarded))
            self._discarded = None
        elif self._buffer:
            line = bytes(self._buffer)
            self._buffer.clear()
            self._append_line(frames, line)
        return frames

    @staticmethod
    def _append_line(frames: list[Frame], line: bytes) -> None:
        if line.endswith(b"\r"):
            line = line[:-1]
        if line.strip(b" \t\r"):
            frames.append(line)
