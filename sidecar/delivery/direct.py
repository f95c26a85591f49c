"""POSTs to capture over one keep-alive HTTP/1.1 connection: h11 over a trio stream.

The sidecar sends one request at a time to one host fixed at spawn, so a connection pool has
nothing to choose. `DirectEndpoint` keeps at most one idle connection and reuses it while it is
younger than KEEPALIVE_EXPIRY_S (httpx's pool default) and the server has not closed it; h11
does the framing, this module moves the bytes and keeps the time. A request through a proxy goes
through httpx instead (`sidecar.delivery.httpclient`).

Timeouts are those of `httpx.Timeout(t)`: making the connection (TCP, then the TLS handshake),
writing the request and each read of the answer's head get `t` each; the answer's body is read
for at most `t` in all, and only its end counts (the status came already). Failures carry the
names httpx gives them (ConnectError, ConnectTimeout, WriteTimeout, ReadTimeout, ReadError,
RemoteProtocolError), so `last_error` reads the same whichever path carried the request.
"""

from __future__ import annotations

import enum
import ssl
from collections.abc import Sequence

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


class _Phase(enum.Enum):
    """Where a request is, which says what running out of time means."""

    CONNECT = "ConnectTimeout"
    WRITE = "WriteTimeout"
    READ = "ReadTimeout"
    BODY = "body"  # the answer came; its body only decides whether the connection is reused


class _Lost(Exception):
    """The server closed the connection before its answer's head was complete."""


class _Connection:
    """A connection to capture and its HTTP/1.1 state."""

    __slots__ = ("idle_since", "protocol", "socket", "stream")

    def __init__(self, stream: trio.abc.Stream, socket: trio.socket.SocketType) -> None:
        self.stream = stream
        # The TCP socket under `stream`, TLS or not: closing it ends the connection at once.
        self.socket = socket
        self.protocol = h11.Connection(h11.CLIENT)
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
        (`authority`), the request target and the headers every request carries."""
        if scheme == "https" and ssl_context is None:
            raise ValueError("https needs an ssl context")
        self._host = host
        self._port = port
        self._ssl_context = ssl_context if scheme == "https" else None
        if self._ssl_context is not None:
            self._ssl_context.set_alpn_protocols(["http/1.1"])
        self._target = target
        self._headers = ((b"Host", authority), *headers)
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
                written = await self._send(connection, body)
                phase = _Phase.READ
                head = await _receive_head(connection, scope, timeout)
                phase = _Phase.BODY
                scope.deadline = trio.current_time() + timeout
                reuse = await _skim_body(connection.stream, connection.protocol) and written
            if phase is not _Phase.BODY:  # the deadline passed before the answer came
                kind = FailureKind.CONNECT if phase is _Phase.CONNECT else FailureKind.TIMEOUT
                return TransportFailure(kind, phase.value)
            return Response(head.status_code, _retry_after(head.headers))
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
                    connection.protocol.start_next_cycle()
                    connection.idle_since = trio.current_time()
                    self._idle = connection
                else:
                    connection.close()

    async def aclose(self) -> None:
        """Close the idle connection, if any."""
        connection, self._idle = self._idle, None
        if connection is not None:
            connection.close()

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

    async def _send(self, connection: _Connection, body: bytes) -> bool:
        """Write the request; False if the server cut the write short. That is not a failure
        yet: a server may answer (413, say) and close before reading a whole body, so the
        answer is read next, but the connection is not reused."""
        protocol = connection.protocol
        headers = [*self._headers, (b"Content-Length", b"%d" % len(body))]
        head = protocol.send(h11.Request(method=b"POST", target=self._target, headers=headers))
        protocol.send_with_data_passthrough(h11.Data(data=body))  # framing only: no copy
        protocol.send(h11.EndOfMessage())
        try:
            await connection.stream.send_all((head or b"") + body)
        except trio.BrokenResourceError:
            return False
        return True


async def _receive_head(
    connection: _Connection, scope: trio.CancelScope, timeout: float  # noqa: ASYNC109
) -> h11.Response:
    """The answer's status line and headers (skipping 1xx answers); each read gets `timeout`.
    Raises _Lost, h11.RemoteProtocolError, or trio.BrokenResourceError."""
    protocol = connection.protocol
    while True:
        event = protocol.next_event()
        if event is h11.NEED_DATA:
            scope.deadline = trio.current_time() + timeout
            data = await connection.stream.receive_some(RECEIVE_BYTES)
            if not data and protocol.their_state is h11.SEND_RESPONSE:
                raise _Lost
            protocol.receive_data(bytes(data))
        elif type(event) is h11.Response:
            return event


async def _skim_body(stream: trio.abc.Stream, protocol: h11.Connection) -> bool:
    """Read the answer's body to its end, up to MAX_ANSWER_BYTES, and say whether the connection
    can carry the next request. An endless or broken body must neither fill memory nor hold the
    sender; the caller's deadline bounds the time."""
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
    return protocol.our_state is h11.DONE and protocol.their_state is h11.DONE


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
