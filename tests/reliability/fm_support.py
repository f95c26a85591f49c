"""Shared pieces for the fault-matrix, hostile-input and security suites (and their bench scripts).

The sidecar is driven through `sidecar_dev.driver`; this module adds a flood written without
reading the answers, and network peers for it: a connection counter that accepts and hangs up,
a server whose answer never ends, a CONNECT proxy, a SOCKS5 proxy, a TLS capture server and the
certificates it needs. Waits are hang guards, never timing assertions.
"""

from __future__ import annotations

import contextlib
import json
import select
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sidecar_dev.capture import CaptureServer
from sidecar_dev.driver import SidecarDied, SidecarProcess
from sidecar_dev.harness import GUARD_S, OFFLINE_HOST, TEST_KEY

# ---- a flood nobody reads ------------------------------------------------------------------------


def unread_sidecar(folder: Path) -> SidecarProcess:
    """An offline sidecar whose answers stay in the pipe until `read_line` asks for each."""
    return SidecarProcess(folder, OFFLINE_HOST, "--max-queue", "1000000", api_key=TEST_KEY,
                          read_ahead=False)


def flood_lines(count: int, events_per_call: int) -> list[bytes]:
    """`count` request lines with ids 0..: pings, or `ph_send_batch` calls of that many
    invalid (empty) events each."""
    if not events_per_call:
        return [b'{"jsonrpc":"2.0","id":%d,"method":"ping"}\n' % n for n in range(count)]
    params = {"batch": [{}] * events_per_call}
    return [json.dumps({"jsonrpc": "2.0", "id": n, "method": "ph_send_batch",
                        "params": params}).encode() + b"\n" for n in range(count)]


class Flood(threading.Thread):
    """Writes every line to a sidecar from its own thread; the write blocks once the sidecar
    stops reading (as it does when nobody reads its answers). Started on creation."""

    def __init__(self, sidecar: SidecarProcess, lines: Sequence[bytes]) -> None:
        super().__init__(daemon=True)
        self._sidecar = sidecar
        self._lines = lines
        self.written = 0
        """Lines written so far (the one being written is not counted)."""
        self.failed: list[SidecarDied] = []
        self.start()

    def run(self) -> None:
        """Write the lines, counting each; a dead sidecar ends the flood in `failed`."""
        try:
            for line in self._lines:
                self._sidecar.send_raw(line)
                self.written += 1
        except SidecarDied as exc:
            self.failed.append(exc)

    def wait_blocked(self) -> int:
        """Wait until writing has stalled for a second (or finished); returns lines written."""
        last, deadline = -1, time.monotonic() + GUARD_S
        while self.is_alive() and time.monotonic() < deadline:
            time.sleep(1.0)
            if self.written == last:
                break
            last = self.written
        return self.written


# ---- small loopback peers ------------------------------------------------------------------------


class _LoopbackListener:
    """A listener on 127.0.0.1 whose accept loop hands each connection to `_handle`.

    Subclasses set their own state before calling `super().__init__()`, which starts serving.
    `_handle` runs on the accept thread; peers that talk at length start a thread of their own.
    """

    def __init__(self, backlog: int = 16) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(backlog)
        self._sock.settimeout(0.1)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (127.0.0.1)."""
        return int(self._sock.getsockname()[1])

    @property
    def url(self) -> str:
        """The base URL to give as --host (or as HTTPS_PROXY)."""
        return f"http://127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._handle(conn)

    def _handle(self, conn: socket.socket) -> None:
        raise NotImplementedError

    def _in_thread(self, work: Callable[[socket.socket], None], conn: socket.socket) -> None:
        threading.Thread(target=work, args=(conn,), daemon=True).start()

    def close(self) -> None:
        """Stop accepting (connections in their own threads end when their peers close)."""
        self._stop.set()
        self._thread.join(5)
        self._sock.close()


class HangUpListener(_LoopbackListener):
    """Listens on loopback, counts each accepted connection (with its accept time), closes it.

    To a client this is a server that is "up" at the TCP level but never answers: every
    request fails at once. Accept times are the listener's own `time.monotonic()`.
    """

    def __init__(self) -> None:
        self.accepted: list[float] = []
        super().__init__(backlog=64)

    def accept_times(self) -> list[float]:
        """Accept times so far."""
        with self._lock:
            return list(self.accepted)

    def _handle(self, conn: socket.socket) -> None:
        with self._lock:
            self.accepted.append(time.monotonic())
        conn.close()


class EndlessAnswer(_LoopbackListener):
    """Answers every request `200 OK` with a chunked body that never ends, counting requests and
    the body bytes it managed to send (until the client hangs up)."""

    def __init__(self) -> None:
        self.requests = 0
        self.body_bytes_sent = 0
        super().__init__()

    def _handle(self, conn: socket.socket) -> None:
        self._in_thread(self._answer, conn)

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, body = data.split(b"\r\n\r\n", 1)
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            while len(body) < length:
                body += conn.recv(65536)
            with self._lock:
                self.requests += 1
            conn.sendall(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            piece = b"10000\r\n" + b"x" * 0x10000 + b"\r\n"
            try:
                while not self._stop.is_set():
                    conn.sendall(piece)
                    with self._lock:
                        self.body_bytes_sent += 0x10000
            except OSError:
                return


class _TunnelProxy(_LoopbackListener):
    """A proxy that opens one tunnel a connection: the subclass reads the client's request in
    `_open` (recording its target through `_record`) and names the answers that say the tunnel
    is up or could not be made; bytes are then relayed both ways until either side closes."""

    ESTABLISHED: bytes
    REFUSED: bytes

    def __init__(self) -> None:
        self.targets: list[str] = []
        super().__init__()

    def seen(self) -> list[str]:
        """Targets asked for so far, e.g. ['127.0.0.1:4443']."""
        with self._lock:
            return list(self.targets)

    def _record(self, target: str) -> None:
        with self._lock:
            self.targets.append(target)

    def _open(self, conn: socket.socket) -> tuple[str, int] | None:
        """Read the request; the host and port to tunnel to, or None when turned away."""
        raise NotImplementedError

    def _handle(self, conn: socket.socket) -> None:
        self._in_thread(self._tunnel, conn)

    def _tunnel(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                target = self._open(conn)
            except (OSError, ValueError):
                return
            if target is None:
                return
            try:
                upstream = socket.create_connection(target, timeout=5)
            except OSError:
                conn.sendall(self.REFUSED)
                return
            with upstream:
                conn.sendall(self.ESTABLISHED)
                conn.settimeout(None)
                _relay(conn, upstream, self._stop)


class ConnectProxy(_TunnelProxy):
    """A tiny HTTP proxy for CONNECT tunnels (what httpx uses for https:// through a proxy).

    Records each CONNECT target (and any other request as `METHOD target`, refused).
    """

    ESTABLISHED = b"HTTP/1.1 200 Connection established\r\n\r\n"
    REFUSED = b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n"

    def _open(self, conn: socket.socket) -> tuple[str, int] | None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = conn.recv(4096)
            if not chunk:
                return None
            head += chunk
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        method, target, _ = request_line.split(" ", 2)
        self._record(target if method == "CONNECT" else f"{method} {target}")
        if method != "CONNECT":
            conn.sendall(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            return None
        host, _, port = target.rpartition(":")
        return host.strip("[]"), int(port)


class Socks5Proxy(_TunnelProxy):
    """A tiny SOCKS5 proxy (RFC 1928): CONNECT only, with no authentication or, when
    `credentials` are given, user name and password (RFC 1929) required.

    Records each CONNECT target as `host:port` (a name as given, or an IPv4 address) and the
    credentials each client offered.
    """

    ESTABLISHED = b"\x05\x00\x00\x01" + bytes(6)  # succeeded
    REFUSED = b"\x05\x05\x00\x01" + bytes(6)  # connection refused

    def __init__(self, credentials: tuple[str, str] | None = None) -> None:
        self.credentials = credentials
        self.offered: list[tuple[str, str]] = []
        super().__init__()

    def _open(self, conn: socket.socket) -> tuple[str, int] | None:
        """The method choice, the sub-negotiation if any, and the request."""
        version, count = _read_exact(conn, 2)
        if version != 5:
            raise ValueError("not SOCKS5")
        methods = _read_exact(conn, count)
        wanted = 0x02 if self.credentials else 0x00
        if wanted not in methods:
            conn.sendall(b"\x05\xff")
            return None
        conn.sendall(bytes([5, wanted]))
        if self.credentials:
            _, user_length = _read_exact(conn, 2)
            user = _read_exact(conn, user_length).decode()
            password = _read_exact(conn, _read_exact(conn, 1)[0]).decode()
            with self._lock:
                self.offered.append((user, password))
            accepted = (user, password) == self.credentials
            conn.sendall(b"\x01\x00" if accepted else b"\x01\x01")
            if not accepted:
                return None
        _, command, _, address_type = _read_exact(conn, 4)
        if address_type == 1:
            host = socket.inet_ntoa(_read_exact(conn, 4))
        elif address_type == 3:
            host = _read_exact(conn, _read_exact(conn, 1)[0]).decode("idna")
        else:
            raise ValueError(f"address type {address_type} not served")
        port = int.from_bytes(_read_exact(conn, 2), "big")
        self._record(f"{host}:{port}")
        if command != 1:
            conn.sendall(b"\x05\x07\x00\x01" + bytes(6))  # command not supported
            return None
        return host, port


def _read_exact(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise ValueError("peer closed mid-message")
        data += chunk
    return data


def _relay(a: socket.socket, b: socket.socket, stop: threading.Event) -> None:
    peers = {a: b, b: a}
    while not stop.is_set():
        readable, _, _ = select.select(list(peers), [], [], 0.2)
        for sock in readable:
            try:
                data = sock.recv(65536)
            except OSError:
                return
            if not data:
                return
            peers[sock].sendall(data)


# ---- TLS ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A private CA, a server certificate it signed for 127.0.0.1/localhost, and a self-signed
    certificate no CA vouches for; PEM files in one folder."""

    ca_cert: Path
    server_cert: Path
    server_key: Path
    self_signed_cert: Path
    self_signed_key: Path
    wrong_name_cert: Path
    wrong_name_key: Path


def have_openssl() -> bool:
    """Whether the openssl command line tool is on PATH."""
    return shutil.which("openssl") is not None


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_tls_files(folder: Path) -> TlsFiles:
    """Generate the certificates with the openssl CLI (EC P-256 keys: fast)."""
    folder.mkdir(parents=True, exist_ok=True)
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
             "-subj", "/CN=fm test CA", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", cwd=folder)

    def signed(name: str, san: str) -> None:
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={name}", cwd=folder)
        (folder / f"{name}.ext").write_text(
            f"subjectAltName={san}\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
        )
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=folder)

    signed("server", "IP:127.0.0.1,DNS:localhost")
    signed("wrongname", "DNS:capture.example.invalid")
    _openssl("req", "-x509", *ec, "-keyout", "self.key", "-out", "self.pem", "-days", "2",
             "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
             cwd=folder)
    return TlsFiles(
        ca_cert=folder / "ca.pem",
        server_cert=folder / "server.pem",
        server_key=folder / "server.key",
        self_signed_cert=folder / "self.pem",
        self_signed_key=folder / "self.key",
        wrong_name_cert=folder / "wrongname.pem",
        wrong_name_key=folder / "wrongname.key",
    )


@contextlib.contextmanager
def tls_capture(cert: Path, key: Path, **kwargs: Any) -> Iterator[CaptureServer]:
    """The fake capture server behind TLS with this certificate (https://127.0.0.1:port).

    Every connection is TLS; a client that refuses the certificate ends its own connection,
    which the server skips.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = CaptureServer(ssl_context=context, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.close()


def https_url(server: CaptureServer) -> str:
    """The TLS server's base URL."""
    return f"https://127.0.0.1:{server.port}"
