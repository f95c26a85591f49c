"""Scripted answers: the faults a test can make the capture server play, and their queue.

An answer says what happens to one capture request instead of (or before) PostHog's handling:
a fixed status with its headers, a delay, a dropped, hung or reset connection. The answers are
plain frozen values; :class:`Script` hands them out one per capture request, in arrival order,
from any thread. How each is played on a socket is the HTTP layer's job
(:mod:`sidecar_dev.capture.http`).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TypeAlias

from sidecar_dev.capture.rules import JSON_TYPE, SUCCESS_BODY, TEXT_TYPE, error_text

__all__ = [
    "Answer",
    "Delay",
    "DropConnection",
    "Hang",
    "Normal",
    "ResetMidBody",
    "Script",
    "Status",
    "as_answer",
]


@dataclass(frozen=True, slots=True)
class Normal:
    """Handle the request as PostHog would: validate it, then answer 200 or the error status."""


@dataclass(frozen=True, slots=True)
class Status:
    """Answer with this status whatever the request holds.

    ``body`` defaults to ``{"status":1}`` for 2xx and to PostHog's text for known errors.
    Events in a request answered 2xx this way are recorded as accepted, without validation.
    A ``Content-Length`` in ``headers`` that is not the body's length is sent as given (a
    response whose body never completes, or overruns).
    """

    code: int
    body: bytes | str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 200 <= self.code <= 599:
            raise ValueError(f"status code must be within 200..599, not {self.code}")

    def content(self) -> tuple[bytes, str]:
        """The body and content type this answer sends."""
        if isinstance(self.body, str):
            return self.body.encode("utf-8"), TEXT_TYPE
        if self.body is not None:
            return self.body, TEXT_TYPE
        if 200 <= self.code < 300:
            return SUCCESS_BODY, JSON_TYPE
        return error_text(self.code).encode("utf-8"), TEXT_TYPE

    def declared_length(self) -> int | None:
        """The ``Content-Length`` the scripted headers declare, if they declare one."""
        for name, value in self.headers.items():
            if name.lower() == "content-length":
                return int(value)
        return None


@dataclass(frozen=True, slots=True)
class Delay:
    """Wait ``seconds`` after reading the request head, then give ``then`` (default: normal)."""

    seconds: float
    then: Answer | None = None

    def __post_init__(self) -> None:
        if self.seconds < 0:
            raise ValueError("a delay cannot be negative")


@dataclass(frozen=True, slots=True)
class DropConnection:
    """Read the whole request, then close the connection without answering."""


@dataclass(frozen=True, slots=True)
class Hang:
    """Read the whole request, then answer nothing until the server stops."""


@dataclass(frozen=True, slots=True)
class ResetMidBody:
    """Read ``after_bytes`` of the body (default: half of it), then reset the connection (RST)."""

    after_bytes: int | None = None


Answer: TypeAlias = Normal | Status | Delay | DropConnection | Hang | ResetMidBody


def as_answer(answer: Answer | int) -> Answer:
    """An answer as given, with a bare int read as ``Status(int)``."""
    return Status(answer) if isinstance(answer, int) else answer


class Script:
    """The answers queued for capture requests, and the one used when the queue is empty.

    Thread-safe: tests queue answers from their own thread while connection threads take them.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # Answers not used yet, oldest first; each capture request takes the leftmost.
        self._queue: deque[Answer] = deque()
        # The answer when the queue is empty.
        self._default: Answer = Normal()

    def extend(self, *answers: Answer | int) -> None:
        """Queue answers, used one per capture request in arrival order."""
        queued = [as_answer(a) for a in answers]
        with self._lock:
            self._queue.extend(queued)

    def set_default(self, answer: Answer | int | None) -> None:
        """The answer used when the queue is empty; None restores normal handling."""
        chosen = Normal() if answer is None else as_answer(answer)
        with self._lock:
            self._default = chosen

    @property
    def remaining(self) -> int:
        """How many queued answers have not been used yet."""
        with self._lock:
            return len(self._queue)

    def take(self) -> Answer:
        """The next queued answer, or the default."""
        with self._lock:
            return self._queue.popleft() if self._queue else self._default
