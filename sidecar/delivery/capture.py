"""PostHog's /batch/ request body, free of I/O (what capture's answers mean is in `policy`).

Request bodies are spliced from the stored JSON text of each event rather than re-encoded:
the queue already holds normalised, compact JSON. They are compressed before the attempt's
`sent_at` is known (see `BodyDraft`).
"""

from __future__ import annotations

import json
import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime

# Level 5 with Z_FILTERED, which drops matches of five bytes or fewer: in event JSON those
# are mostly pieces of uuids and ids that code no smaller as matches than as literals, so the
# body comes out both smaller and cheaper to make than at level 6 with the default strategy.
GZIP_LEVEL = 5
GZIP_STRATEGY = zlib.Z_FILTERED
_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip member, not a bare zlib stream
_GZIP_MEMLEVEL = 8  # zlib's default
_STORED_FINAL = struct.Struct("<BHH")
_TRAILER = struct.Struct("<II")


class BodyDraft:
    """A request body compressed up to its last field, finished at the attempt.

    The document is `{"api_key", "batch", "sent_at"}` with `sent_at` last, so everything but
    the attempt's own time is compressed ahead of it (in the store's thread, in the same trip
    that leases the batch), up to a sync flush, which leaves the deflate stream on a byte
    boundary. `finish` appends the time as the stream's last block, stored as is (a few bytes
    more than deflating them, and no deflate work on the event loop), then the gzip trailer.
    """

    __slots__ = ("_crc", "_head", "_size")

    def __init__(self, api_key: str, bodies: Sequence[str]) -> None:
        """Compress the document up to the value of `sent_at`."""
        text = '{"api_key":%s,"batch":[%s],"sent_at":"' % (  # noqa: UP031
            json.dumps(api_key),
            ",".join(bodies),
        )
        data = text.encode("utf-8")
        stream = zlib.compressobj(
            GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS, _GZIP_MEMLEVEL, GZIP_STRATEGY
        )
        # The gzip header and the deflated text, ending in a sync flush's empty stored block:
        # byte-aligned, not final.
        self._head = stream.compress(data) + stream.flush(zlib.Z_SYNC_FLUSH)
        self._crc = zlib.crc32(data)
        self._size = len(data)

    def finish(self, sent_at: datetime) -> bytes:
        """The whole gzip body with `sent_at` (milliseconds, UTC, `Z`)."""
        stamp = sent_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        tail = f'{stamp}"}}'.encode("ascii")
        # A final stored block (BFINAL=1, BTYPE=00, LEN, NLEN, the bytes), then CRC-32 and
        # ISIZE of the whole text, little-endian (RFC 1951 3.2.4, RFC 1952 2.3.1).
        length = len(tail)
        return b"".join((
            self._head,
            _STORED_FINAL.pack(1, length, length ^ 0xFFFF),
            tail,
            _TRAILER.pack(zlib.crc32(tail, self._crc), (self._size + length) & 0xFFFFFFFF),
        ))
