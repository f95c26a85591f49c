"""PostHog's /batch/ request body, free of I/O (what capture's answers mean is in `policy`).

Request bodies are spliced from the stored JSON text of each event rather than re-encoded:
the queue already holds normalised, compact JSON. They are compressed before the attempt's
`sent_at` is known (see `BodyDraft`).
"""

from __future__ import annotations

import json
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


class BodyDraft:
    """A request body compressed up to its last field, finished at the attempt.

    The document is `{"api_key", "batch", "sent_at"}` with `sent_at` last, so everything but
    the attempt's own time can be compressed ahead of it (in the store's thread, in the same
    trip that leases the batch); `finish` deflates only the time and writes the trailer.
    A draft is finished once: a second attempt at the same events builds a new draft.
    (Copying the deflate stream to finish it twice costs more than compressing afresh.)
    """

    __slots__ = ("_head", "_stream")

    def __init__(self, api_key: str, bodies: Sequence[str]) -> None:
        """Compress the document up to the value of `sent_at`."""
        text = '{"api_key":%s,"batch":[%s],"sent_at":"' % (  # noqa: UP031
            json.dumps(api_key),
            ",".join(bodies),
        )
        self._stream: zlib._Compress | None = zlib.compressobj(
            GZIP_LEVEL, zlib.DEFLATED, _GZIP_WBITS, _GZIP_MEMLEVEL, GZIP_STRATEGY
        )
        # The sync flush makes deflate do all its work on the batch now: without it, most of
        # the input waits in the stream and `finish` compresses it.
        self._head = self._stream.compress(text.encode("utf-8")) + self._stream.flush(
            zlib.Z_SYNC_FLUSH
        )

    def finish(self, sent_at: datetime) -> bytes:
        """The whole gzip body with `sent_at` (milliseconds, UTC, `Z`); only once."""
        stream, self._stream = self._stream, None
        if stream is None:
            raise RuntimeError("this body was finished already")
        stamp = sent_at.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        return self._head + stream.compress(f'{stamp}"}}'.encode("ascii")) + stream.flush()
