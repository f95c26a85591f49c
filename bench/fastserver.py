"""A fast loopback stand-in for PostHog's /batch/: answers 200 {"status":1} and counts.

`sidecar_dev.capture` is the faithful fake (validation, scripted faults) but runs a thread
per connection; a benchmark of delivery needs a server that costs far less than the client, so
the figure is the client's. This one is a single asyncio process with HTTP/1.1 keep-alive and
the least work that still counts honestly: each request body is gunzipped when it is gzip (by
header or magic bytes) and its events are counted (see `Counters.record`).

It runs as its own process (`CaptureCounter` starts it), so it never competes for the GIL with
the benchmark or with the PostHog SDK under test. The parent drives it with lines on its stdin:

    stats            -> {"events", "requests", "body_bytes", "wire_bytes", "json_bytes", ...}
    reset            -> zero the counters
    wait N TIMEOUT   -> answers once N events have arrived (or the timeout passed), with the
                        CLOCK_MONOTONIC time of the request that made the count reach N

Arrival time is when a request's body has been read completely, before it is decompressed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import psutil

from sidecar_dev.harness import stop_child

RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n"
    b'{"status":1}'
)
OTHER = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
REFUSE = b"HTTP/1.1 411 Length Required\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
GZIP_MAGIC = b"\x1f\x8b"


class Counters:
    """What arrived since the last reset."""

    def __init__(self) -> None:
        self.waiters: list[tuple[int, asyncio.Future[float]]] = []
        self.reset()

    def reset(self) -> None:
        """Forget everything that arrived."""
        self.events = 0
        self.requests = 0
        self.body_bytes = 0
        self.wire_bytes = 0
        self.json_bytes = 0
        self.gzip_requests = 0
        self.first_at: float | None = None
        self.first_events = 0
        self.last_at: float | None = None
        self.bad = 0
        self.verified = 0
        self.mismatches = 0

    def record(self, body: bytes, gzip: bool, arrived: float) -> None:
        """Count one POST body."""
        self.body_bytes += len(body)
        self.requests += 1
        try:
            if gzip or body.startswith(GZIP_MAGIC):
                body = zlib.decompress(body, 16 + zlib.MAX_WBITS)
                self.gzip_requests += 1
            self.json_bytes += len(body)
        except zlib.error:
            self.bad += 1
            return
        # Every event of both clients carries a top-level "uuid" (and the benchmark's events
        # have no other), so counting the key is counting events, at a twentieth of the cost
        # of json.loads. The first request after a reset and every 64th are parsed in full to
        # check that; a disagreement is counted in `mismatches`.
        count = body.count(b'"uuid":')
        if self.requests == 1 or self.requests % 64 == 0:
            self.verified += 1
            if count != _count_parsed(body):
                self.mismatches += 1
        self.events += count
        if self.first_at is None:
            self.first_at = arrived
            self.first_events = count
        self.last_at = arrived
        if self.waiters:
            still = []
            for n, future in self.waiters:
                if self.events >= n:
                    if not future.done():
                        future.set_result(arrived)
                else:
                    still.append((n, future))
            self.waiters = still

    def snapshot(self) -> dict[str, Any]:
        """The counters as JSON-able values."""
        return {
            "events": self.events,
            "requests": self.requests,
            "body_bytes": self.body_bytes,
            "wire_bytes": self.wire_bytes,
            "json_bytes": self.json_bytes,
            "gzip_requests": self.gzip_requests,
            "first_at": self.first_at,
            "first_events": self.first_events,
            "last_at": self.last_at,
            "bad": self.bad,
            "verified": self.verified,
            "mismatches": self.mismatches,
        }


def _count_parsed(body: bytes) -> int:
    try:
        document = json.loads(body)
    except ValueError:
        return -1
    if isinstance(document, dict):
        batch = document.get("batch")
        return len(batch) if isinstance(batch, list) else 1
    return len(document) if isinstance(document, list) else 0


class HttpCounter(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: Content-Length bodies only, answers in order."""

    def __init__(self, counters: Counters) -> None:
        self.counters = counters
        self.buffer = bytearray()
        self.need: int | None = None
        self.is_post = False
        self.gzip = False
        self.close_after = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.counters.wire_bytes += len(data)
        self.buffer += data
        assert self.transport is not None
        while True:
            if self.need is None:
                end = self.buffer.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(self.buffer[:end]).decode("latin-1")
                del self.buffer[: end + 4]
                request_line, *header_lines = head.split("\r\n")
                headers = {}
                for line in header_lines:
                    name, _, value = line.partition(":")
                    headers[name.strip().lower()] = value.strip().lower()
                if "chunked" in headers.get("transfer-encoding", ""):
                    self.transport.write(REFUSE)
                    self.transport.close()
                    return
                self.need = int(headers.get("content-length", "0"))
                self.is_post = request_line.startswith("POST ")
                self.gzip = "gzip" in headers.get("content-encoding", "")
                self.close_after = headers.get("connection") == "close" or request_line.endswith(
                    "HTTP/1.0"
                )
            if len(self.buffer) < self.need:
                return
            arrived = time.monotonic()
            body = bytes(self.buffer[: self.need])
            del self.buffer[: self.need]
            self.need = None
            if self.is_post:
                self.counters.record(body, self.gzip, arrived)
                self.transport.write(RESPONSE)
            else:
                self.transport.write(OTHER)
            if self.close_after:
                self.transport.close()
                return


async def serve() -> None:
    """Listen on a free loopback port, print it, then obey the control lines on stdin."""
    loop = asyncio.get_running_loop()
    counters = Counters()
    server = await loop.create_server(
        lambda: HttpCounter(counters), "127.0.0.1", 0, backlog=128, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]
    print(f"PORT {port}", flush=True)
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    async with server:
        while line := (await reader.readline()).decode().strip():
            command, *args = line.split()
            answer: dict[str, Any]
            if command == "reset":
                counters.reset()
                answer = counters.snapshot()
            elif command == "stats":
                answer = counters.snapshot()
            elif command == "wait":
                target, timeout = int(args[0]), float(args[1])
                answer = {"reached": True, "at": None}
                if counters.events >= target:
                    answer["at"] = counters.last_at
                else:
                    future: asyncio.Future[float] = loop.create_future()
                    counters.waiters.append((target, future))
                    try:
                        answer["at"] = await asyncio.wait_for(future, timeout)
                    except TimeoutError:
                        answer["reached"] = False
                answer.update(counters.snapshot())
            else:
                answer = {"error": f"unknown command {command!r}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()


class CaptureCounter:
    """Starts the server process and talks to it. Thread-safe: one command at a time."""

    def __init__(self) -> None:
        self.process = subprocess.Popen(
            [sys.executable, __file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None
        first = self.process.stdout.readline().split()
        if len(first) != 2 or first[0] != "PORT":
            raise RuntimeError(f"fast capture server did not start: {first!r}")
        self.port = int(first[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._lock = threading.Lock()
        self.ps = psutil.Process(self.process.pid)

    def _ask(self, line: str) -> dict[str, Any]:
        assert self.process.stdin is not None
        assert self.process.stdout is not None
        with self._lock:
            self.process.stdin.write(line + "\n")
            self.process.stdin.flush()
            answer: dict[str, Any] = json.loads(self.process.stdout.readline())
        return answer

    def stats(self) -> dict[str, Any]:
        """Counters since the last reset."""
        return self._ask("stats")

    def reset(self) -> dict[str, Any]:
        """Zero the counters."""
        return self._ask("reset")

    def wait(self, events: int, timeout: float) -> dict[str, Any]:
        """Block until `events` have arrived since the reset; `reached` says whether they did."""
        return self._ask(f"wait {events} {timeout}")

    def cpu_seconds(self) -> float:
        """CPU time the server process used so far."""
        times = self.ps.cpu_times()
        return times.user + times.system

    def close(self) -> None:
        """Stop the server process."""
        stop_child(self.process, timeout=10)

    def __enter__(self) -> CaptureCounter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def post_request(port: int, body: bytes, *, gzip: bool = True) -> bytes:
    """The bytes of one keep-alive POST /batch/ as an HTTP client would send them."""
    head = (
        f"POST /batch/ HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/json\r\n"
        f"{'Content-Encoding: gzip' + chr(13) + chr(10) if gzip else ''}"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


def blast(port: int, request: bytes, count: int) -> float:
    """Send `request` `count` times on one connection, each after the last answer; seconds taken.

    A client that costs next to nothing (pre-built bytes, raw socket), so the rate it reaches is
    what the server can absorb from one connection sending one request at a time, as the sidecar
    and the SDK (one consumer thread) do.
    """
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        started = time.monotonic()
        for _ in range(count):
            sock.sendall(request)
            received = b""
            while not received.endswith(b'{"status":1}'):
                chunk = sock.recv(4096)
                if not chunk:
                    raise RuntimeError("server closed the connection")
                received += chunk
        return time.monotonic() - started


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve())
