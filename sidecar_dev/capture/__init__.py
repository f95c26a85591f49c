"""A local fake of PostHog's capture endpoint, over real HTTP, for tests and for app developers.

Two uses:

* Test suites run ``with CaptureServer() as server:`` to play PostHog on 127.0.0.1 (port 0),
  script faults (statuses with ``Retry-After``, delays, dropped, hung and reset connections),
  and wait on what arrived with ``server.wait_for_events(n)``. The server runs on background
  threads and its recording API is thread-safe, so it serves plain sync tests and trio tests
  alike.
* App developers run ``telemetry-capture`` (or ``python -m sidecar_dev.capture``) and point a
  dev build's ``--host`` at it: each accepted event is printed as one line on stdout.

One module per job:

* :mod:`~sidecar_dev.capture.rules`: PostHog's rules (decoding, validation, tokens, what
  capture answers), pure functions with no I/O, and the facts they copy from PostHog's source;
* :mod:`~sidecar_dev.capture.faults`: the scripted answers (``Status``, ``Delay``, ``Hang``,
  ``DropConnection``, ``ResetMidBody``) and the queue that hands them out;
* :mod:`~sidecar_dev.capture.http`: HTTP/1.1 over sockets and threads, framed by h11, where the
  answers are played;
* :mod:`~sidecar_dev.capture.recorder`: the requests and events received, and waits on them;
* :mod:`~sidecar_dev.capture.server`: :class:`CaptureServer`, which puts them together;
* :mod:`~sidecar_dev.capture.cli`: the ``telemetry-capture`` command.
"""

from sidecar_dev.capture.cli import describe_request, format_event_line, main
from sidecar_dev.capture.faults import (
    Answer,
    Delay,
    DropConnection,
    Hang,
    Normal,
    ResetMidBody,
    Status,
)
from sidecar_dev.capture.recorder import Outcome, ReceivedRequest
from sidecar_dev.capture.rules import (
    CAPTURE_PATHS,
    DEFAULT_MAX_BODY_BYTES,
    CaptureRejectedError,
    CaptureResult,
    Rejection,
    accept_events,
    answer_request,
    decode_payload,
    distinct_id_of,
    events_in,
    is_gzip,
    process_capture,
)
from sidecar_dev.capture.server import CaptureServer, CaptureServerError

__all__ = [
    "CAPTURE_PATHS",
    "DEFAULT_MAX_BODY_BYTES",
    "Answer",
    "CaptureRejectedError",
    "CaptureResult",
    "CaptureServer",
    "CaptureServerError",
    "Delay",
    "DropConnection",
    "Hang",
    "Normal",
    "Outcome",
    "ReceivedRequest",
    "Rejection",
    "ResetMidBody",
    "Status",
    "accept_events",
    "answer_request",
    "decode_payload",
    "describe_request",
    "distinct_id_of",
    "events_in",
    "format_event_line",
    "is_gzip",
    "main",
    "process_capture",
]
