"""Tauri's Rust side for the WebKit page: the shell plugin's IPC over loopback HTTP.

A real Tauri app answers `window.__TAURI_INTERNALS__.invoke` in Rust. In the WebKit test the page
(`page/tauri-ipc.ts`) posts each invoke to this bridge instead, and the bridge does what
`tauri-plugin-shell` 2 does with it, on real processes:

* `POST /ipc` `{"cmd", "args"}`, the args serialised as Tauri serialises them (a `Channel` is the
  string `__CHANNEL__:<id>`), answers `{"ok": result}` or `{"error": message}`; the page resolves
  or rejects the invoke with it, as Tauri does.
  - `plugin:shell|spawn` `{program, args, options: {sidecar, cwd, env}, onEvent}` accepts only the
    one `externalBin` entry with `options.sidecar` true (`sidecar <program> not allowed`
    otherwise), starts the real sidecar command with the given arguments and answers its pid.
  - `plugin:shell|stdin_write` `{pid, buffer}` writes the string's UTF-8 bytes (or the byte
    array) and adds nothing; an unknown pid is ignored, as in Rust.
  - `plugin:shell|kill` `{cmd: "killChild", pid}` forgets the child and SIGKILLs it.
* `GET /channel` is a server-sent event stream of Channel messages for the page to hand to
  `__TAURI_INTERNALS__.runCallback(id, …)`: `{index, message}` with `message` one of
  `{event: "Stdout"|"Stderr", payload: line}` and `{event: "Terminated", payload: {code,
  signal}}`, then `{end: true, index}`, as `Channel` in `@tauri-apps/api/core` expects.
  Stdout and stderr are cut as `tauri::utils::io::read_line` cuts them (through the first `\\n`
  of the bytes one read returned, else its first `\\r`, the terminator kept; the rest at end of
  stream); `Terminated` comes after both streams ended.
* `GET /` serves the page, `GET /bundle.js` its script.
* Every other request is posthog-js talking to its own `api_host` (this origin): it is recorded
  and answered `{"status":1}`, so a test sees exactly what posthog-js sent by itself.

Each child runs in its own process group so :meth:`ShellBridge.crash` can kill a one-file
bootloader together with the program it unpacked; the plugin's own `kill` hits the direct child
only, as Tauri's does.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import json
import os
import queue
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

EXTERNAL_BIN = "binaries/telemetry-sidecar"
"""The only `bundle.externalBin` entry the emulated app allows (the client's default program)."""

_CHANNEL_PREFIX = "__CHANNEL__:"
_READ_CHUNK = 64 * 1024
_END = object()


class ShellError(Exception):
    """An invoke the plugin refuses; its text is what the page's promise rejects with."""


@dataclass(frozen=True, slots=True)
class OwnRequest:
    """A request posthog-js made to its `api_host` by itself."""

    method: str
    path: str
    query: str
    events: tuple[dict[str, Any], ...]
    """The events the body carried (empty when it held none or could not be decoded)."""


class RustLineCutter:
    """`tauri::utils::io::read_line`, applied to each chunk one read returned."""

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._held = bytearray()

    def push(self, chunk: bytes) -> None:
        """Emit every line this chunk completes; hold the rest."""
        rest = chunk
        while rest:
            end = rest.find(b"\n")
            if end == -1:
                end = rest.find(b"\r")
            if end == -1:
                self._held += rest
                return
            self._held += rest[: end + 1]
            self._emit(self._held.decode("utf-8", errors="replace"))
            self._held = bytearray()
            rest = rest[end + 1 :]

    def end(self) -> None:
        """Emit what is held at end of stream."""
        if self._held:
            self._emit(self._held.decode("utf-8", errors="replace"))
        self._held = bytearray()


@dataclass(slots=True)
class _Channel:
    """One `Channel`: numbers its messages in send order, as the Rust `Channel` does."""

    channel_id: int
    outbox: queue.Queue[object]
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Invariant: the index the next message gets; `ended` once `{end: true}` went out.
    index: int = 0
    ended: bool = False

    def send(self, message: object) -> None:
        """Queue one message for the page, numbered."""
        with self.lock:
            if self.ended:
                return
            data = {"index": self.index, "message": message}
            self.outbox.put({"id": self.channel_id, "data": data})
            self.index += 1

    def end(self) -> None:
        """Queue the channel's end marker."""
        with self.lock:
            if self.ended:
                return
            self.ended = True
            self.outbox.put({"id": self.channel_id, "data": {"end": True, "index": self.index}})


@dataclass(slots=True)
class _Child:
    process: subprocess.Popen[bytes]
    channel: _Channel
    stdin_lock: threading.Lock = field(default_factory=threading.Lock)


def channel_id_of(on_event: object) -> int:
    """The channel id of a spawn's `onEvent` in its IPC form `__CHANNEL__:<id>`."""
    if isinstance(on_event, str) and on_event.startswith(_CHANNEL_PREFIX):
        return int(on_event[len(_CHANNEL_PREFIX) :])
    raise ShellError(f"spawn without an onEvent channel: {on_event!r}")


def decode_own_body(body: bytes, query: str) -> tuple[dict[str, Any], ...]:
    """The events in a request body posthog-js sent (gzip, base64 form data or plain JSON)."""
    if not body:
        return ()
    data = body
    if data.startswith(b"\x1f\x8b"):
        data = gzip.decompress(data)
    elif "base64" in parse_qs(query).get("compression", []):
        form = parse_qs(data.decode("ascii"))
        data = base64.b64decode(form["data"][0])
    document = json.loads(data)
    if isinstance(document, dict) and isinstance(document.get("batch"), list):
        document = document["batch"]
    if isinstance(document, dict):
        document = [document]
    return tuple(e for e in document if isinstance(e, dict))


class ShellBridge:
    """The Rust side of the emulated Tauri app, on 127.0.0.1 (see the module docstring).

    `command` is the real command line that stands for the sidecar binary; `env` the children's
    environment (the spawn options' `env` is merged over it); `page` the HTML served at `/` and
    `bundle` the script served at `/bundle.js`.
    """

    def __init__(
        self, *, command: Sequence[str], env: Mapping[str, str], page: str, bundle: Path
    ) -> None:
        if not command:
            raise ValueError("the sidecar command is empty")
        self._command = list(command)
        self._env = dict(env)
        self._page = page.encode("utf-8")
        self._bundle = bundle
        self._outbox: queue.Queue[object] = queue.Queue()
        self._cond = threading.Condition()
        # Invariant: a pid is here while its process is the live child the page may address.
        self._children: dict[int, _Child] = {}
        self._everything: list[subprocess.Popen[bytes]] = []
        self._spawned: list[int] = []
        self._own: list[OwnRequest] = []
        self._errors: list[BaseException] = []
        self._threads: list[threading.Thread] = []
        self._httpd = _BridgeServer(("127.0.0.1", 0), self)
        self._serve = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ShellBridge:
        """Start serving; returns self."""
        self._serve.start()
        return self

    @property
    def url(self) -> str:
        """The page's origin, e.g. `http://127.0.0.1:41234`."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def close(self) -> None:
        """Kill every child and its group, stop serving, and raise if a handler failed."""
        with self._cond:
            processes = list(self._everything)
            self._children.clear()
        for process in processes:
            _kill_group(process.pid)
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            process.wait(timeout=10)
        self._outbox.put(_END)
        self._httpd.shutdown()
        self._httpd.server_close()
        for thread in self._threads:
            thread.join(timeout=10)
        with self._cond:
            errors = list(self._errors)
        if errors:
            raise RuntimeError(f"the shell bridge failed: {errors[0]!r}") from errors[0]

    # -- what the test sees and does --------------------------------------------------------------

    @property
    def spawned(self) -> list[int]:
        """The pids of every child spawned so far, in order."""
        with self._cond:
            return list(self._spawned)

    @property
    def own_requests(self) -> list[OwnRequest]:
        """Every request posthog-js sent to its own `api_host`, in arrival order."""
        with self._cond:
            return list(self._own)

    def wait_for_spawns(self, n: int, timeout: float) -> list[int]:
        """Block until `n` children were spawned; TimeoutError after `timeout` seconds."""
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._spawned) >= n, timeout):
                raise TimeoutError(f"waited {timeout}s for {n} spawns; got {self._spawned}")
            return list(self._spawned)

    def wait_for_own_events(self, n: int, timeout: float) -> list[dict[str, Any]]:
        """Block until posthog-js sent `n` events by itself; TimeoutError after `timeout`."""

        def events() -> list[dict[str, Any]]:
            return [e for r in self._own for e in r.events]

        with self._cond:
            if not self._cond.wait_for(lambda: len(events()) >= n, timeout):
                raise TimeoutError(
                    f"waited {timeout}s for {n} events sent by posthog-js; got {events()}"
                )
            return events()

    def crash(self, pid: int) -> None:
        """SIGKILL a child's whole process group, as a crash would end it."""
        _kill_group(pid)

    # -- the plugin -------------------------------------------------------------------------------

    def invoke(self, cmd: str, args: Mapping[str, Any]) -> Any:
        """Run one IPC command; ShellError carries the refusal text."""
        if cmd == "plugin:shell|spawn":
            return self._spawn(args)
        if cmd == "plugin:shell|stdin_write":
            return self._stdin_write(args)
        if cmd == "plugin:shell|kill":
            return self._kill(args)
        raise ShellError(f"command {cmd} not found")

    def _spawn(self, args: Mapping[str, Any]) -> int:
        program = str(args.get("program"))
        options = args.get("options") or {}
        argv = [str(a) for a in args.get("args") or []]
        if options.get("sidecar") is not True or program.removesuffix(".exe") != EXTERNAL_BIN:
            # Rust: Error::SidecarNotAllowed / ProgramNotAllowed, serialised as a string.
            raise ShellError(f"sidecar {program} not allowed")
        channel = _Channel(channel_id_of(args.get("onEvent")), self._outbox)
        env = {} if options.get("env") is None and "env" in options else dict(self._env)
        env.update(options.get("env") or {})
        try:
            process = subprocess.Popen(
                [*self._command, *argv],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=options.get("cwd"),
                env=env,
                bufsize=0,
                start_new_session=True,
            )
        except OSError as error:
            raise ShellError(str(error)) from error
        child = _Child(process, channel)
        with self._cond:
            self._everything.append(process)
            self._children[process.pid] = child
            self._spawned.append(process.pid)
            self._cond.notify_all()
        readers = [
            self._thread(self._pump, process.stdout, "Stdout", channel),
            self._thread(self._pump, process.stderr, "Stderr", channel),
        ]
        self._thread(self._reap, child, readers)
        return process.pid

    def _stdin_write(self, args: Mapping[str, Any]) -> None:
        with self._cond:
            child = self._children.get(int(args.get("pid", -1)))
        if child is None or child.process.stdin is None:
            return None
        buffer = args.get("buffer")
        data = buffer.encode("utf-8") if isinstance(buffer, str) else bytes(buffer or [])
        with child.stdin_lock:
            try:
                child.process.stdin.write(data)
            except OSError as error:
                raise ShellError(str(error)) from error
        return None

    def _kill(self, args: Mapping[str, Any]) -> None:
        with self._cond:
            child = self._children.pop(int(args.get("pid", -1)), None)
        if child is not None:
            with contextlib.suppress(ProcessLookupError):
                child.process.kill()

    # -- threads ----------------------------------------------------------------------------------

    def _thread(self, target: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except BaseException as exc:
                with self._cond:
                    self._errors.append(exc)
                raise

        thread = threading.Thread(target=run, daemon=True)
        with self._cond:
            self._threads.append(thread)
        thread.start()
        return thread

    @staticmethod
    def _pump(stream: Any, kind: str, channel: _Channel) -> None:
        cutter = RustLineCutter(lambda line: channel.send({"event": kind, "payload": line}))
        fd = stream.fileno()
        while chunk := os.read(fd, _READ_CHUNK):
            cutter.push(chunk)
        cutter.end()
        stream.close()

    def _reap(self, child: _Child, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        code = child.process.wait()
        with self._cond:
            if self._children.get(child.process.pid) is child:
                del self._children[child.process.pid]
        if child.process.stdin is not None:
            with contextlib.suppress(OSError):
                child.process.stdin.close()
        payload = {"code": code, "signal": None} if code >= 0 else {"code": None, "signal": -code}
        child.channel.send({"event": "Terminated", "payload": payload})
        child.channel.end()

    # -- HTTP -------------------------------------------------------------------------------------

    def _record_own(self, request: OwnRequest) -> None:
        with self._cond:
            self._own.append(request)
            self._cond.notify_all()

    def _record_error(self, exc: BaseException) -> None:
        with self._cond:
            self._errors.append(exc)


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


class _BridgeServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], owner: ShellBridge) -> None:
        self.owner = owner
        super().__init__(address, _Handler)


class _Handler(BaseHTTPRequestHandler):
    server: _BridgeServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reports what matters."""

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path == "/":
            self._reply(200, self.server.owner._page, "text/html; charset=utf-8")
        elif path == "/bundle.js":
            script = self.server.owner._bundle.read_bytes()
            self._reply(200, script, "text/javascript; charset=utf-8")
        elif path == "/channel":
            self._stream_channel()
        elif path == "/favicon.ico":
            self._reply(404, b"", None)
        else:
            self._own_request(b"")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length)
        if urlsplit(self.path).path == "/ipc":
            self._ipc(body)
        else:
            self._own_request(body)

    def do_OPTIONS(self) -> None:
        self._reply(204, b"", None)

    def _ipc(self, body: bytes) -> None:
        owner = self.server.owner
        request = json.loads(body)
        try:
            answer = {"ok": owner.invoke(str(request["cmd"]), request.get("args") or {})}
        except ShellError as refused:
            answer = {"error": str(refused)}
        except Exception as exc:
            owner._record_error(exc)
            answer = {"error": f"bridge failure: {exc!r}"}
        self._reply(200, json.dumps(answer).encode("utf-8"), "application/json")

    def _own_request(self, body: bytes) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        try:
            events = decode_own_body(body, parts.query)
        except Exception as exc:
            owner._record_error(exc)
            events = ()
        owner._record_own(OwnRequest(self.command, parts.path, parts.query, events))
        self._reply(200, b'{"status":1}', "application/json")

    def _stream_channel(self) -> None:
        outbox = self.server.owner._outbox
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.close_connection = True
        while (item := outbox.get()) is not _END:
            try:
                self.wfile.write(b"data: " + json.dumps(item).encode("utf-8") + b"\n\n")
                self.wfile.flush()
            except OSError:
                # The page went away: keep the message for the next stream.
                outbox.put(item)
                return
        outbox.put(_END)

    def _reply(self, status: int, body: bytes, content_type: str | None) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
