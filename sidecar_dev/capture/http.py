"""The capture server's HTTP/1.1 handling: h11 frames the bytes, this module plays the answers.

h11 parses request heads, Content-Length and chunked bodies, keep-alive and ``Expect:
100-continue``, and serialises responses; it does no I/O. Around it, each connection has one
blocking socket and one thread (:class:`Listener` accepts them), so a scripted fault can simply
block: a :class:`~sidecar_dev.capture.faults.Delay` or
:class:`~sidecar_dev.capture.faults.Hang` waits on the server's stop event, and a
:class:`~sidecar_dev.capture.faults.ResetMidBody` closes the socket with ``SO_LINGER`` 0 so the
peer gets a TCP RST. The faults that break HTTP on purpose (a reset mid-body, a body shorter
than its declared length) bypass h11 and act on the socket itself.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import ssl
import struct
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.utils import formatdate
from http import HTTPStatus
from typing import Any, cast
from urllib.parse import urlsplit

import h11

from sidecar import __version__
from sidecar_dev.capture.faults import (
    Answer,
    Delay,
    DropConnection,
    Hang,
    Normal,
    ResetMidBody,
    Script,
    Status,
)
from sidecar_dev.capture.recorder import Outcome, ReceivedRequest, Recorder
from sidecar_dev.capture.rules import (
    CAPTURE_PATHS,
    TEXT_TYPE,
    answer_request,
    events_in,
    peek_payload,
)

__all__ = ["Listener", "ServingContext", "serve_connection"]

SERVER_HEADER = f"telemetry-capture/{__version__}"
_READ_CHUNK = 64 * 1024
# The largest request head h11 buffers before refusing it.
_MAX_HEAD_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class ServingContext:
    """What every connection of one server shares."""

    script: Script
    recorder: Recorder
    stopping: threading.Event
    """Set when the server stops: wakes every Delay and Hang."""
    max_body_bytes: int
    max_decompressed_bytes: int


class _ClientGoneError(Exception):
    """The client closed the connection before sending the whole request."""


class _BadFramingError(Exception):
    """The request could not be framed (a malformed head, Content-Length or chunk)."""


@dataclass(frozen=True, slots=True)
class _Head:
    method: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    content_length: int | None
    received_at: float

    @classmethod
    def of(cls, request: h11.Request) -> _Head:
        split = urlsplit(request.target.decode("ascii", "replace"))
        headers = tuple(
            (name.decode("latin-1"), value.decode("latin-1"))
            for name, value in request.headers.raw_items()
        )
        length = next((int(v) for k, v in request.headers if k == b"content-length"), None)
        return cls(
            method=request.method.decode("ascii"),
            path=split.path,
            query=split.query,
            headers=headers,
            content_length=length,
            received_at=time.monotonic(),
        )

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name), None)


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    """The body, or nothing once it went past the limit."""
    size: int
    """Bytes of body read off the wire (or declared, when not read)."""
    complete: bool
    """Whether the whole body was read, so the connection can take another request."""


class _Exchange:
    """One connection's h11 state and its socket: read events, play answers, write responses."""

    def __init__(self, sock: socket.socket, context: ServingContext) -> None:
        self.sock = sock
        self.context = context
        self.h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=_MAX_HEAD_BYTES)
        # Whether the peer closed its side (recv returned nothing).
        self.eof = False

    # -- reading ----------------------------------------------------------------------------

    def next_event(self) -> h11.Event | type[h11.PAUSED]:
        """The next h11 event, reading the socket as h11 needs more bytes."""
        while True:
            try:
                event = self.h11.next_event()
            except h11.RemoteProtocolError:
                if self.eof:
                    raise _ClientGoneError from None
                raise _BadFramingError from None
            if event is not h11.NEED_DATA:
                return cast("h11.Event | type[h11.PAUSED]", event)
            if self.h11.they_are_waiting_for_100_continue:
                self._send_continue()
            data = self.sock.recv(_READ_CHUNK)
            self.eof = not data
            self.h11.receive_data(data)

    def read_body(self, head: _Head, limit: int) -> _Body:
        """The body, kept up to ``limit`` bytes; beyond that drained (up to one more limit).

        A body declared longer than twice the limit is not read at all: the answer goes out at
        once and the connection closes, so the client may see a reset instead.
        """
        declared = head.content_length
        if declared is not None and declared > 2 * limit:
            return _Body(b"", declared, complete=False)
        kept: list[bytes] = []
        size = 0
        while True:
            event = self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
                if size > 2 * limit:
                    return _Body(b"", size, complete=False)
                if size <= limit:
                    kept.append(event.data)
                else:
                    kept.clear()
            elif isinstance(event, h11.EndOfMessage):
                return _Body(b"".join(kept) if size <= limit else b"", size, complete=True)
            else:
                raise _BadFramingError(event)

    def read_some_body(self, wanted: int) -> int:
        """Read ``wanted`` body bytes or more (fewer if the body ends); how many, at most that."""
        size = 0
        while size < wanted:
            event = self.next_event()
            if isinstance(event, h11.Data):
                size += len(event.data)
            else:
                break
        return min(size, wanted)

    # -- writing ----------------------------------------------------------------------------

    def respond(
        self,
        method: str,
        status: int,
        body: bytes,
        *,
        content_type: str | None,
        headers: Sequence[tuple[str, str]] = (),
        close: bool = False,
    ) -> None:
        """Send a whole response to a ``method`` request; ``close`` ends the connection after it."""
        bodiless = status in (204, 304) or method == "HEAD"
        given = {name.lower() for name, _ in headers}
        fields = [("Server", SERVER_HEADER), ("Date", formatdate(usegmt=True))]
        if content_type and not bodiless and "content-type" not in given:
            fields.append(("Content-Type", content_type))
        if not bodiless and "content-length" not in given:
            fields.append(("Content-Length", str(len(body))))
        fields.extend(headers)
        if close:
            fields.append(("Connection", "close"))
        data = self._head_bytes(status, fields)
        if not bodiless and body:
            data += self.h11.send(h11.Data(data=body)) or b""
        data += self.h11.send(h11.EndOfMessage()) or b""
        self.sock.sendall(data)

    def _head_bytes(self, status: int, fields: list[tuple[str, str]]) -> bytes:
        response = h11.Response(status_code=status, headers=fields, reason=_reason(status))
        return self.h11.send(response) or b""

    def _send_continue(self) -> None:
        """Tell a client waiting on ``Expect: 100-continue`` to send its body."""
        continue_ = h11.InformationalResponse(status_code=100, headers=[])
        self.sock.sendall(self.h11.send(continue_) or b"")

    def respond_unframed(
        self, status: int, body: bytes, headers: Sequence[tuple[str, str]]
    ) -> None:
        """Send a head as given and then ``body`` raw, whatever length the head declares.

        The response cannot end cleanly, so the connection is held until the peer closes it
        (or the server stops), as a server whose answer stalls would.
        """
        fields = [("Server", SERVER_HEADER), ("Date", formatdate(usegmt=True)), *headers]
        self.sock.sendall(self._head_bytes(status, fields) + body)
        while self.sock.recv(_READ_CHUNK):
            pass

    def reset(self) -> None:
        """Close with SO_LINGER 0, so the peer gets a TCP RST rather than a FIN."""
        linger = struct.pack("HH" if sys.platform == "win32" else "ii", 1, 0)
        with contextlib.suppress(OSError):
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        with contextlib.suppress(OSError):
            self.sock.close()

    # -- playing answers --------------------------------------------------------------------

    def serve(self) -> None:
        """Serve requests on this connection until either side ends it."""
        while True:
            event = self.next_event()
            if not isinstance(event, h11.Request):
                return  # ConnectionClosed: the client is done
            head = _Head.of(event)
            scripted = head.path in CAPTURE_PATHS and head.method != "OPTIONS"
            answer: Answer = self.context.script.take() if scripted else Normal()
            if scripted:
                self.context.recorder.note_arrival()
            if not self.play(answer, head):
                return
            if self.h11.our_state is not h11.DONE or self.h11.their_state is not h11.DONE:
                return
            self.h11.start_next_cycle()

    def play(self, answer: Answer, head: _Head) -> bool:
        """Answer one request as scripted; whether the connection may take another."""
        context = self.context
        match answer:
            case Delay(seconds=seconds, then=then):
                if context.stopping.wait(seconds):
                    return False
                return self.play(then or Normal(), head)
            case ResetMidBody(after_bytes=after_bytes):
                length = head.content_length
                if length is None:
                    wanted = after_bytes or 0
                else:
                    wanted = min(length // 2 if after_bytes is None else after_bytes, length)
                size = self.read_some_body(wanted) if wanted > 0 else 0
                context.recorder.record(_received(head, size, None, None, outcome=Outcome.RESET))
                self.reset()
                return False
            case DropConnection() | Hang():
                body = self.read_body(head, context.max_body_bytes)
                hung = isinstance(answer, Hang)
                outcome = Outcome.HUNG if hung else Outcome.DROPPED
                peeked = self._peek(head, body)
                context.recorder.record(_received(head, body.size, peeked, None, outcome=outcome))
                if hung:
                    context.stopping.wait()
                return False
            case Status():
                return self._answer_status(answer, head)
            case Normal():
                return self._answer_normally(head)

    def _answer_status(self, answer: Status, head: _Head) -> bool:
        body = self.read_body(head, self.context.max_body_bytes)
        ok = 200 <= answer.code < 300
        data, content_type = answer.content()
        peeked = self._peek(head, body)
        self.context.recorder.record(
            _received(
                head,
                body.size,
                peeked,
                answer.code,
                error=None if ok else data.decode("utf-8", "replace"),
                events=events_in(peeked[1]) if ok else (),
            )
        )
        headers = list(answer.headers.items())
        declared = answer.declared_length()
        if declared is not None and declared != len(data):
            self.respond_unframed(answer.code, data, headers)
            return False
        self.respond(
            head.method, answer.code, data, content_type=content_type, headers=headers,
            close=not body.complete,
        )
        return body.complete

    def _answer_normally(self, head: _Head) -> bool:
        context = self.context
        body = self.read_body(head, context.max_body_bytes)
        result = answer_request(
            head.method,
            head.path,
            body.data,
            query=head.query,
            content_encoding=head.header("content-encoding"),
            body_size=body.size,
            max_body_bytes=context.max_body_bytes,
            max_decompressed_bytes=context.max_decompressed_bytes,
        )
        context.recorder.record(
            _received(
                head,
                body.size,
                (result.was_gzip, result.payload),
                result.status,
                error=result.error,
                events=result.events,
            )
        )
        self.respond(
            head.method, result.status, result.body, content_type=result.content_type,
            close=not body.complete,
        )
        return body.complete

    def _peek(self, head: _Head, body: _Body) -> tuple[bool, Any]:
        return peek_payload(
            body.data,
            query=head.query,
            content_encoding=head.header("content-encoding"),
            limit=self.context.max_decompressed_bytes,
        )


def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


def _received(
    head: _Head,
    body_size: int,
    peeked: tuple[bool, Any] | None,
    status: int | None,
    *,
    outcome: Outcome = Outcome.ANSWERED,
    error: str | None = None,
    events: tuple[dict[str, Any], ...] = (),
) -> ReceivedRequest:
    was_gzip, payload = peeked if peeked is not None else (False, None)
    return ReceivedRequest(
        method=head.method,
        path=head.path,
        query=head.query,
        headers=head.headers,
        body_size=body_size,
        was_gzip=was_gzip,
        payload=payload,
        status=status,
        outcome=outcome,
        error=error,
        events=events,
        received_at=head.received_at,
    )


def serve_connection(sock: socket.socket, context: ServingContext) -> None:
    """Serve one accepted connection to its end, then close it.

    A client that goes away or breaks HTTP ends its connection quietly (a bad head or body
    framing is answered 400 first); an exception from the server's own code is answered 500
    and kept by the recorder, to be raised when the server closes.
    """
    exchange = _Exchange(sock, context)
    try:
        exchange.serve()
    except (_ClientGoneError, OSError):
        pass
    except _BadFramingError:
        _answer_if_possible(exchange, 400, b"invalid request framing")
    except Exception as exc:
        context.recorder.record_error(exc)
        _answer_if_possible(exchange, 500, b"capture server bug")
    finally:
        with contextlib.suppress(OSError):
            sock.close()


def _answer_if_possible(exchange: _Exchange, status: int, body: bytes) -> None:
    if exchange.h11.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    with contextlib.suppress(OSError, h11.LocalProtocolError):
        exchange.respond("", status, body, content_type=TEXT_TYPE, close=True)


class Listener:
    """A listening socket whose connections are each served on their own thread.

    ``start`` binds and starts accepting; ``close`` stops accepting, shuts every open
    connection's socket (which wakes its blocked read) and joins the threads.
    """

    def __init__(
        self,
        address: tuple[str, int],
        serve: Callable[[socket.socket], None],
        *,
        on_error: Callable[[BaseException], None],
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._serve = serve
        self._on_error = on_error
        self._ssl_context = ssl_context
        family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self._sock = socket.socket(family, socket.SOCK_STREAM)
        self._wake_reader, self._wake_writer = socket.socketpair()
        self._lock = threading.Lock()
        # Open connection sockets, each shut at close to wake the thread reading it.
        self._connections: set[socket.socket] = set()
        # Connection threads still running; joined at close.
        self._threads: set[threading.Thread] = set()
        # Set once close() began: a connection thread that starts after it ends at once.
        self._closing = False
        self._accept_thread: threading.Thread | None = None
        try:
            if sys.platform != "win32":
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self._sock.bind(address)
            self._sock.listen(128)
            self._sock.setblocking(False)
        except BaseException:
            self._close_sockets()
            raise
        bound = self._sock.getsockname()
        self.host: str = str(bound[0])
        self.port: int = int(bound[1])

    def start(self) -> None:
        """Start accepting connections on a background thread."""
        self._accept_thread = threading.Thread(
            target=self._accept_loop, name="capture-server", daemon=True
        )
        self._accept_thread.start()

    def close(self, timeout: float) -> None:
        """Stop accepting, end every open connection, and wait up to ``timeout`` for threads."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(OSError):
            self._wake_writer.send(b"x")
        if self._accept_thread is not None:
            self._accept_thread.join(timeout)
        with self._lock:
            self._closing = True
            connections = list(self._connections)
            threads = list(self._threads)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self._close_sockets()

    def _close_sockets(self) -> None:
        for sock in (self._sock, self._wake_reader, self._wake_writer):
            with contextlib.suppress(OSError):
                sock.close()

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._sock, selectors.EVENT_READ)
            selector.register(self._wake_reader, selectors.EVENT_READ)
            while True:
                ready = {key.fileobj for key, _ in selector.select()}
                if self._wake_reader in ready:
                    return
                try:
                    conn, _ = self._sock.accept()
                except (BlockingIOError, InterruptedError, ConnectionAbortedError):
                    continue
                except OSError as exc:
                    self._on_error(exc)
                    return
                conn.setblocking(True)
                thread = threading.Thread(
                    target=self._run_connection, args=(conn,), name="capture-conn", daemon=True
                )
                with self._lock:
                    self._threads.add(thread)
                thread.start()

    def _run_connection(self, conn: socket.socket) -> None:
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._ssl_context is not None:
                conn = self._ssl_context.wrap_socket(
                    conn, server_side=True, do_handshake_on_connect=False
                )
            with self._lock:
                if self._closing:
                    return
                self._connections.add(conn)
            if self._ssl_context is not None:
                assert isinstance(conn, ssl.SSLSocket)
                conn.do_handshake()
            self._serve(conn)
        except OSError:
            pass  # a client that went away, or refused our certificate
        except Exception as exc:
            self._on_error(exc)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                self._connections.discard(conn)
                self._threads.discard(threading.current_thread())
