"""``telemetry-capture``: the local capture server for app developers, one line per event.

Point a dev build's ``--host`` at the URL it shows; each accepted event is printed as one line
on stdout (or as JSON with ``--json``) and each request is described on stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from types import FrameType
from typing import Any

from sidecar import __version__
from sidecar_dev.capture.recorder import ReceivedRequest
from sidecar_dev.capture.rules import DEFAULT_MAX_BODY_BYTES, distinct_id_of
from sidecar_dev.capture.server import CaptureServer

__all__ = ["describe_request", "format_event_line", "main"]


def format_event_line(event: Mapping[str, Any]) -> str:
    """One compact line for an event: name, distinct_id, uuid, timestamp."""
    fields = (
        ("event", event.get("event")),
        ("distinct_id", distinct_id_of(event)),
        ("uuid", event.get("uuid")),
        ("timestamp", event.get("timestamp")),
    )
    return " ".join(f"{name}={_show(value)}" for name, value in fields)


def _show(value: object) -> str:
    if value is None:
        return "-"
    if (
        isinstance(value, str)
        and value
        and value.isprintable()
        and not any(c.isspace() or c == '"' for c in value)
    ):
        return value
    return json.dumps(value, ensure_ascii=False)


def describe_request(request: ReceivedRequest) -> str:
    """One line about a request, for the stderr log."""
    where = f"{request.method} {request.path}{'?' + request.query if request.query else ''}"
    if request.status is None:
        return f"{where} -> {request.outcome.value}"
    gz = " gzip" if request.was_gzip else ""
    detail = f"{len(request.events)} events, {request.body_size} bytes{gz}"
    if request.error:
        detail += f": {request.error}"
    return f"{where} -> {request.status} ({detail})"


def _printer(*, json_lines: bool, quiet: bool) -> Callable[[ReceivedRequest], None]:
    def on_request(request: ReceivedRequest) -> None:
        for event in request.events:
            if json_lines:
                line = json.dumps(event, ensure_ascii=True, separators=(",", ":"))
            else:
                line = format_event_line(event)
            print(line, flush=True)
        if not quiet:
            print(describe_request(request), file=sys.stderr, flush=True)

    return on_request


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="telemetry-capture",
        description="A local fake of PostHog's capture API: prints each event it receives, "
        "one line per event on stdout. Point the sidecar's --host at the URL it shows.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8765, help="port (0 picks a free one)")
    parser.add_argument(
        "--max-body-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted before answering 413 (default: PostHog's 20 MiB)",
    )
    parser.add_argument("--json", action="store_true", help="print each whole event as JSON")
    parser.add_argument("--quiet", action="store_true", help="no per-request log on stderr")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error("--port must be within 0..65535")
    if args.max_body_bytes < 1:
        parser.error("--max-body-bytes must be at least 1")
    return args


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event) -> Iterator[None]:
    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake until Ctrl-C or SIGTERM; exit status 0, or 1 when it cannot listen."""
    args = _parse_args(argv)
    if isinstance(sys.stdout, io.TextIOWrapper):
        sys.stdout.reconfigure(errors="backslashreplace")
    server = CaptureServer(
        host=args.host,
        port=args.port,
        max_body_bytes=args.max_body_bytes,
        on_request=_printer(json_lines=args.json, quiet=args.quiet),
    )
    stop = threading.Event()
    with _stop_on_signals(stop):
        try:
            server.start()
        except OSError as exc:
            print(
                f"telemetry-capture: cannot listen on {args.host}:{args.port}: {exc}",
                file=sys.stderr,
            )
            return 1
        try:
            print(
                f"telemetry-capture {__version__}: fake PostHog capture listening on "
                f"{server.url} (POST {server.batch_url}); Ctrl-C to stop",
                file=sys.stderr,
                flush=True,
            )
            # A bounded wait, not a bare wait(): on Windows a blocked wait ignores Ctrl-C.
            while not stop.wait(0.5):
                pass
        finally:
            server.close()
    return 0
