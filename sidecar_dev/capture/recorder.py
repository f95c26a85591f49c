"""What the capture server received: requests, accepted events, arrivals, and waits on them.

A :class:`Recorder` is shared by every connection thread and by the test that reads it, so each
of its methods may be called from any thread; the ``wait_for_*`` methods block the caller on one
condition that every recording notifies.
"""

from __future__ import annotations

import enum
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["Outcome", "ReceivedRequest", "Recorder"]


class Outcome(enum.Enum):
    """How the server ended a request."""

    ANSWERED = "answered"
    DROPPED = "dropped"
    HUNG = "hung"
    RESET = "reset"


@dataclass(frozen=True, slots=True)
class ReceivedRequest:
    """One request as the server saw it and answered it."""

    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body_size: int
    """Bytes of body read off the wire, before any decompression."""
    was_gzip: bool
    payload: Any
    """The decoded JSON document, or None when there was none or it could not be decoded."""
    status: int | None
    """The HTTP status answered; None when the connection was dropped, hung or reset."""
    outcome: Outcome
    error: str | None
    """The refusal text sent with an error status, if any."""
    events: tuple[dict[str, Any], ...]
    """The events this request delivered (only when answered 2xx)."""
    received_at: float
    """``time.monotonic()`` when the request head had been read."""

    def header(self, name: str) -> str | None:
        """The first value of header ``name`` (any case), or None."""
        wanted = name.lower()
        return next((v for k, v in self.headers if k.lower() == wanted), None)


class Recorder:
    """The requests and events received so far, thread-safe, with blocking waits."""

    def __init__(self, on_request: Callable[[ReceivedRequest], None] | None = None) -> None:
        self._on_request = on_request
        # Guards every list and counter below; notified on each change a wait may be on.
        self._cond = threading.Condition()
        # Serialises on_request calls, so a printing callback never interleaves its lines.
        self._callback_lock = threading.Lock()
        # Requests in the order they ended (answered, dropped, hung or reset).
        self._requests: list[ReceivedRequest] = []
        # Invariant: the concatenation of every recorded request's ``events``, since clear().
        self._events: list[dict[str, Any]] = []
        # Capture requests whose head was read, answered or not; never cleared.
        self._arrivals = 0
        # Exceptions raised by the server's own code or by on_request, raised again at close.
        self._errors: list[BaseException] = []

    @property
    def requests(self) -> list[ReceivedRequest]:
        """Every request recorded so far, in the order they were recorded."""
        with self._cond:
            return list(self._requests)

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event accepted with a 2xx so far, in order (duplicates included)."""
        with self._cond:
            return list(self._events)

    @property
    def errors(self) -> list[BaseException]:
        """Failures of the server's own code so far, oldest first."""
        with self._cond:
            return list(self._errors)

    def clear(self) -> None:
        """Forget recorded requests and events."""
        with self._cond:
            self._requests.clear()
            self._events.clear()

    def note_arrival(self) -> None:
        """Count a capture request whose head has been read."""
        with self._cond:
            self._arrivals += 1
            self._cond.notify_all()

    def record(self, request: ReceivedRequest) -> None:
        """Keep a request that has ended, with its events, then tell ``on_request``."""
        with self._cond:
            self._requests.append(request)
            self._events.extend(request.events)
            self._cond.notify_all()
        if self._on_request is not None:
            with self._callback_lock:
                try:
                    self._on_request(request)
                except Exception as exc:
                    self.record_error(exc)

    def record_error(self, exc: BaseException) -> None:
        """Keep a failure of the server's own code, to be raised when the server closes."""
        with self._cond:
            self._errors.append(exc)
            self._cond.notify_all()

    def wait_for_events(self, n: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        """Block until at least ``n`` events were accepted; return them all.

        Raises TimeoutError, saying what did arrive, when ``timeout`` seconds pass first.
        """
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._events) >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} events; {self._summary()}")
            return list(self._events)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[ReceivedRequest]:
        """Block until at least ``n`` requests were recorded; return them all."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} requests; {self._summary()}")
            return list(self._requests)

    def wait_for_arrivals(self, n: int, timeout: float = 5.0) -> None:
        """Block until ``n`` capture requests have been received, answered or not."""
        with self._cond:
            if not self._cond.wait_for(lambda: self._arrivals >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} arrivals; {self._summary()}")

    def _summary(self) -> str:
        answers = ", ".join(
            str(r.status) if r.status is not None else r.outcome.value for r in self._requests
        )
        return f"got {len(self._events)} events from {len(self._requests)} requests [{answers}]"
