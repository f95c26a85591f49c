"""The capture server as tests and the command line use it: start, script, read, close."""

from __future__ import annotations

import functools
import ssl
import threading
from collections.abc import Callable
from types import TracebackType
from typing import Any

from sidecar_dev.capture.faults import Answer, Script
from sidecar_dev.capture.http import Listener, ServingContext, serve_connection
from sidecar_dev.capture.recorder import ReceivedRequest, Recorder
from sidecar_dev.capture.rules import DECOMPRESSED_BUDGET_FACTOR, DEFAULT_MAX_BODY_BYTES

__all__ = ["CaptureServer", "CaptureServerError"]


class CaptureServerError(RuntimeError):
    """The fake itself failed while serving (a bug in the fake, not in the client)."""


class CaptureServer:
    """A fake PostHog capture service on background threads.

    Use as a context manager, or call :meth:`start` and :meth:`close`. Everything here may be
    called from any thread; the ``wait_for_*`` methods block the calling thread (from trio, call
    them through ``trio.to_thread.run_sync``). With ``ssl_context`` every connection is TLS.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        max_decompressed_bytes: int | None = None,
        on_request: Callable[[ReceivedRequest], None] | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError("max_body_bytes must be at least 1")
        self._address = (host, port)
        self.max_body_bytes = max_body_bytes
        self.max_decompressed_bytes = (
            max_decompressed_bytes
            if max_decompressed_bytes is not None
            else max_body_bytes * DECOMPRESSED_BUDGET_FACTOR
        )
        self._ssl_context = ssl_context
        self._script = Script()
        self._recorder = Recorder(on_request)
        self._stopping = threading.Event()
        self._listener: Listener | None = None

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> CaptureServer:
        """Bind and start serving; returns self. Raises OSError when the address is taken."""
        if self._listener is not None:
            raise RuntimeError("the capture server is already started")
        context = ServingContext(
            script=self._script,
            recorder=self._recorder,
            stopping=self._stopping,
            max_body_bytes=self.max_body_bytes,
            max_decompressed_bytes=self.max_decompressed_bytes,
        )
        self._listener = Listener(
            self._address,
            functools.partial(serve_connection, context=context),
            on_error=self._recorder.record_error,
            ssl_context=self._ssl_context,
        )
        self._listener.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        """Stop serving, end every open connection, and raise if a handler crashed."""
        self._shutdown(timeout)
        errors = self._recorder.errors
        if errors:
            raise CaptureServerError(f"capture server handler failed: {errors[0]!r}") from errors[0]

    def _shutdown(self, timeout: float) -> None:
        if self._listener is None or self._stopping.is_set():
            return
        self._stopping.set()  # wakes Delay and Hang
        self._listener.close(timeout)

    def __enter__(self) -> CaptureServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None:
            self.close()
            return
        self._shutdown(5.0)
        errors = self._recorder.errors
        if errors:
            exc.add_note(f"the capture server also failed: {errors!r}")

    # -- addresses --------------------------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host."""
        return self._bound()[0]

    @property
    def port(self) -> int:
        """The bound port (the chosen one when started with port 0)."""
        return self._bound()[1]

    @property
    def url(self) -> str:
        """Base URL, e.g. ``http://127.0.0.1:54321`` (what the sidecar takes as ``--host``)."""
        host, port = self._bound()
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://[{host}]:{port}" if ":" in host else f"{scheme}://{host}:{port}"

    @property
    def batch_url(self) -> str:
        """The ``/batch/`` endpoint URL."""
        return self.url + "/batch/"

    def _bound(self) -> tuple[str, int]:
        if self._listener is None:
            raise RuntimeError("the capture server is not started")
        return self._listener.host, self._listener.port

    # -- scripting --------------------------------------------------------------------------

    def script(self, *answers: Answer | int) -> None:
        """Queue answers, used one per request in arrival order; an int means ``Status(int)``.

        Only requests to capture routes use the script (not OPTIONS, ``/`` or unknown paths).
        """
        self._script.extend(*answers)

    def set_default(self, answer: Answer | int | None) -> None:
        """The answer used when the script is empty; None restores normal handling."""
        self._script.set_default(answer)

    @property
    def script_remaining(self) -> int:
        """How many scripted answers have not been used yet."""
        return self._script.remaining

    # -- recordings -------------------------------------------------------------------------

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request recorded so far, in the order they were recorded."""
        return self._recorder.requests

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event accepted with a 2xx so far, in order (duplicates included)."""
        return self._recorder.events

    def clear(self) -> None:
        """Forget recorded requests and events (the script and default stay)."""
        self._recorder.clear()

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` events were accepted; return them all.

        Raises TimeoutError, saying what did arrive, when ``timeout`` seconds pass first.
        """
        return self._recorder.wait_for_events(n, timeout)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests were recorded; return them all."""
        return self._recorder.wait_for_requests(n, timeout)

    def wait_for_arrivals(self, n: int, timeout: float = 5.0) -> None:
        """Block until ``n`` capture requests have been received, answered or not.

        Unlike :meth:`wait_for_requests`, this returns as soon as a request's head is read,
        so a test can act while the request is still in flight (under a ``Delay``).
        """
        self._recorder.wait_for_arrivals(n, timeout)
