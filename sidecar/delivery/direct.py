"""POSTs to capture over one keep-alive HTTP/1.1 connection on a trio stream.

The sidecar sends one request at a time to one host fixed at spawn, so a connection pool has
nothing to choose. `DirectEndpoint` keeps at most one idle connection and reuses it while it is
younger than KEEPALIVE_EXPIRY_S (httpx's pool default) and the server has not closed it. A
request through a proxy goes through httpx instead (`sidecar.delivery.httpclient`).

Framing: the request carries the same headers every time, put into bytes once (and checked by
h11 then). Capture's answer is small and comes whole in one read: `read_plain_answer` takes it
when it is plain HTTP/1.1 with one Content-Length and a body that ends where the read ends, and
turns down anything else, which h11 then frames from the same bytes, as if it had carried the
whole exchange. This module moves the bytes and keeps the time.

Timeouts are those of `httpx.Timeout(t)`: making the connection (TCP, then the TLS handshake),
writing the request and each read of the answer's head get `t` each; the answer's body is read
for at most `t` in all, and only its end counts (the status came already). Failures carry the
names httpx gives them (ConnectError, ConnectTimeout, WriteTimeout, ReadTimeout, ReadError,
RemoteProtocolError), so `last_error` reads the same whichever path carried the request.
"""

from __future__ import annotations

import enum
import re
import ssl
from collections.abc import Sequence
from typing import NamedTuple

import h11
import trio

from sidecar.delivery.policy import Answer, FailureKind, Response, TransportFailure
from sidecar.delivery.tls import describe_connect_failure

# An idle connection older than this is closed rather than reused (httpx's pool default):
# servers and load balancers drop idle connections after a while, often without a word.
KEEPALIVE_EXPIRY_S = 5.0
# Bytes asked of the stream per read.
RECEIVE_BYTES = 64 * 1024
# Bytes of an answer's body read before giving up on it (PostHog's is `{"status":1}`).
MAX_ANSWER_BYTES = 64 * 1024

# What `read_plain_answer` takes; anything else goes to h11. A status line of HTTP/1.1 with a
# final status and a printable reason; header fields as RFC 9110 spells them (a token, a colon,
# printable ASCII words), no obs-fold, no bare CR or LF.
_STATUS_LINE = re.compile(rb"HTTP/1\.1 ([2-9][0-9][0-9])(?: [\t\x20-\x7e]*)?")
_FIELD = re.compile(
    rb"([!#$%&'*+.^_`|~0-9A-Za-z-]+):[ \t]*([\x21-\x7e]+(?:[ \t]+[\x21-\x7e]+)*)?[ \t]*"
)


class PlainAnswer(NamedTuple):
    """A whole, plainly framed answer: its status, Retry-After (several joined with ", ", as
    httpx joins them), and whether the connection can carry the next request."""

    status: int
    retry_after: str | None
    keep_alive: bool


def read_plain_answer(data: bytes) -> PlainAnswer | None:
    """The answer in `data` if `data` is exactly one plain HTTP/1.1 answer: a final status, well
    formed header fields, one Content-Length, no Transfer-Encoding, and the whole body with
    nothing after it. None for anything else (h11 reads those)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    status_line = _STATUS_LINE.fullmatch(lines[0])
    if status_line is None:
        return None
    status = int(status_line[1])
    length: int | None = None
    retry_after: list[bytes] = []
    keep_alive = True
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        name, value = field[1].lower(), field[2] or b""
        if name == b"content-length":
            if length is not None or not value.isdigit():
                return None
            length = int(value)
        elif name == b"transfer-encoding":
            return None
        elif name == b"connection":
            if b"close" in (token.strip().lower() for token in value.split(b",")):
                keep_alive = False
        elif name == b"retry-after":
            retry_after.append(value)
    if length is None or len(data) != end + 4 + length:
        return None
    if length and status in (204, 304):  # no body whatever the header says: h11's to judge
        return None
    joined = b", ".join(retry_after).decode("ascii") if retry_after else None
    return PlainAnswer(status, joined, keep_alive)


class _Phase(enum.Enum):
    """Where a request is, which says what running out of time means."""

    CONNECT = "ConnectTimeout"
    WRITE = "WriteTimeout"
    READ = "ReadTimeout"
    BODY = "body"  # the answer came; its body only decides whether the connection is reused


class _Lost(Exception):
    """The server closed the connection before its answer's head was complete."""


class _Connection:
    """A connection to capture, between requests or carrying one."""

    __slots__ = ("idle_since", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        # The TCP socket under `stream`, TLS or not: closing it ends the connection at once.
        self.socket = socket
        self.idle_since = 0.0

    def reusable(self, now: float) -> bool:
        """Idle for less than KEEPALIVE_EXPIRY_S, and nothing to read: an idle connection
        that is readable has been closed by the server (or sent something it must not)."""
        return now - self.idle_since < KEEPALIVE_EXPIRY_S and not self.socket.is_readable()

    def close(self) -> None:
        """End the connection without a goodbye (no TLS close_notify): nothing waits on it."""
        self.socket.close()


class DirectEndpoint:
    """Capture's `/batch/` URL over a direct connection; `post` makes one attempt."""

    def __init__(
        self,
        *,
        scheme: str,
        host: str,
        port: int,
        authority: bytes,
        target: bytes,
        headers: tuple[tuple[bytes, bytes], ...],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        """Where to connect (`host`, `port`; TLS with `ssl_context` for https), the Host header
        (`authority`), the request target and the headers every request carries (h11 checks
        them here: a bad one raises h11.LocalProtocolError)."""
        if scheme == "https" and ssl_context is None:
            raise ValueError("https needs an ssl context")
        self._host = host
        self._port = port
        self._ssl_context = ssl_context if scheme == "https" else None
        if self._ssl_context is not None:
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._target = target
        self._headers = ((b"Host", authority), *headers)
        h11.Request(method=b"POST", target=target, headers=list(self._headers))  # checks, once
        # The request up to its Content-Length, which `post` adds with the blank line.
        self._request_head = b"POST %s HTTP/1.1\r\n%s" % (
            target,
            b"".join(b"%s: %s\r\n" % field for field in self._headers),
        )
        # Invariant: a connection with no request on it, ready for the next, or None.
        self._idle: _Connection | None = None

    async def post(self, body: bytes, timeout: float) -> Answer:  # noqa: ASYNC109
        """POST one gzip body; the answer's status and Retry-After, or why none came."""
        connection, self._idle = self._idle, None
        if connection is not None and not connection.reusable(trio.current_time()):
            connection.close()
            connection = None
        phase = _Phase.CONNECT
        reuse = False
        try:
            with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                if connection is None:
                    connection = await self._connect()
                phase = _Phase.WRITE
                scope.deadline = trio.current_time() + timeout
                written = await _send(connection, self._request(body))
                phase = _Phase.READ
                answer, protocol, reuse = await self._read_head(connection, body, scope, timeout)
                phase = _Phase.BODY
                if protocol is not None:
                    reuse = await _skim_body(connection.stream, protocol, scope, timeout)
                reuse = reuse and written
            if phase is not _Phase.BODY:  # the deadline passed before the answer came
                kind = FailureKind.CONNECT if phase is _Phase.CONNECT else FailureKind.TIMEOUT
                return TransportFailure(kind, phase.value)
            return answer
        except (OSError, trio.BrokenResourceError) as exc:
            if phase is _Phase.CONNECT:
                return TransportFailure(
                    FailureKind.CONNECT, describe_connect_failure(exc, "ConnectError")
                )
            return TransportFailure(FailureKind.LOST, "ReadError")
        except (_Lost, h11.RemoteProtocolError):
            return TransportFailure(FailureKind.LOST, "RemoteProtocolError")
        finally:
            if connection is not None:
                if reuse:
                    connection.idle_since = trio.current_time()
                    self._idle = connection
                else:
                    connection.close()

    async def aclose(self) -> None:
        """Close the idle connection, if any."""
        connection, self._idle = self._idle, None
        if connection is not None:
            connection.close()

    def _request(self, body: bytes) -> bytes:
        """The whole request carrying `body`."""
        return b"%sContent-Length: %d\r\n\r\n%s" % (self._request_head, len(body), body)

    async def _read_head(
        self,
        connection: _Connection,
        body: bytes,
        scope: trio.CancelScope,
        timeout: float,  # noqa: ASYNC109
    ) -> tuple[Response, h11.Connection | None, bool]:
        """The answer to the request carrying `body`, and either the h11 client still to read
        its body, or None and whether the connection can carry the next request. Each read
        gets `timeout`; raises _Lost, h11.RemoteProtocolError, or trio.BrokenResourceError."""
        scope.deadline = trio.current_time() + timeout
        data = bytes(await connection.stream.receive_some(RECEIVE_BYTES))
        if not data:
            raise _Lost
        plain = read_plain_answer(data)
        if plain is not None:
            return Response(plain.status, plain.retry_after), None, plain.keep_alive
        protocol = self._h11_after_request(body)
        protocol.receive_data(data)
        head = await _receive_head(connection.stream, protocol, scope, timeout)
        return Response(head.status_code, _retry_after(head.headers)), protocol, False

    def _h11_after_request(self, body: bytes) -> h11.Connection:
        """An h11 client that has sent this request (its bytes are dropped: they went out
        already), ready to frame the answer."""
        protocol = h11.Connection(h11.CLIENT)
        headers = [*self._headers, (b"Content-Length", b"%d" % len(body))]
        protocol.send(h11.Request(method=b"POST", target=self._target, headers=headers))
        protocol.send_with_data_passthrough(h11.Data(data=body))
        protocol.send(h11.EndOfMessage())
        return protocol

    async def _connect(self) -> _Connection:
        """A new connection (TLS for https); raises OSError or trio.BrokenResourceError."""
        tcp = await trio.open_tcp_stream(self._host, self._port)
        if self._ssl_context is None:
            return _Connection(tcp, tcp.socket)
        tls = trio.SSLStream(
            tcp, self._ssl_context, server_hostname=self._host, https_compatible=True
        )
        try:
            await tls.do_handshake()
        except BaseException:
            tcp.socket.close()
            raise
        return _Connection(tls, tcp.socket)


async def _send(connection: _Connection, request: bytes) -> bool:
    """Write the request; False if the server cut the write short. That is not a failure yet:
    a server may answer (413, say) and close before reading a whole body, so the answer is read
    next, but the connection is not reused."""
    try:
        await connection.stream.send_all(request)
    except trio.BrokenResourceError:
        return False
    return True


async def _receive_head(
    stream: trio.abc.Stream,
    protocol: h11.Connection,
    scope: trio.CancelScope,
    timeout: float,  # noqa: ASYNC109
) -> h11.Response:
    """The answer's status line and headers (skipping 1xx answers); each read gets `timeout`.
    Raises _Lost, h11.RemoteProtocolError, or trio.BrokenResourceError."""
    while True:
        event = protocol.next_event()
        if event is h11.NEED_DATA:
            scope.deadline = trio.current_time() + timeout
            data = await stream.receive_some(RECEIVE_BYTES)
            if not data and protocol.their_state is h11.SEND_RESPONSE:
                raise _Lost
            protocol.receive_data(bytes(data))
        elif type(event) is h11.Response:
            return event


async def _skim_body(
    stream: trio.abc.Stream,
    protocol: h11.Connection,
    scope: trio.CancelScope,
    timeout: float,  # noqa: ASYNC109
) -> bool:
    """Read the answer's body to its end, up to MAX_ANSWER_BYTES and for `timeout` at most in
    all, and say whether the connection can carry the next request. An endless or broken body
    must neither fill memory nor hold the sender."""
    scope.deadline = trio.current_time() + timeout
    seen = 0
    try:
        while True:
            event = protocol.next_event()
            if event is h11.NEED_DATA:
                protocol.receive_data(bytes(await stream.receive_some(RECEIVE_BYTES)))
            elif type(event) is h11.Data:
                seen += len(event.data)
                if seen > MAX_ANSWER_BYTES:
                    return False
            elif type(event) is h11.EndOfMessage:
                break
            else:  # ConnectionClosed, or PAUSED (an answer that closes the connection)
                return False
    except (OSError, trio.BrokenResourceError, h11.RemoteProtocolError):
        return False
    done = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
    return done and not protocol.trailing_data[0]  # nothing sent beyond the answer


def _retry_after(headers: Sequence[tuple[bytes, bytes]]) -> str | None:
    """The Retry-After value (several are joined with ", ", as httpx does), decoded as httpx
    decodes header values: ASCII, else UTF-8, else Latin-1."""
    values = [value for name, value in headers if name == b"retry-after"]
    if not values:
        return None
    raw = b", ".join(values)
    for encoding in ("ascii", "utf-8"):
        try:
            return raw.decode(encoding)
        except UnicodeDecodeError:
            pass
    return raw.decode("latin-1")
