"""The one driver of the real sidecar process over real pipes, as a Tauri app uses it.

The demo, the test suites and the benchmarks all talk to the sidecar through `SidecarProcess`.
The environment variable `SIDECAR_COMMAND` replaces `python -m sidecar`, so the same code runs
against a frozen binary.

What the driver does per line is kept small, because the benchmarks share the machine with the
process they measure: one reader thread moves each stdout line, with the time it was read, onto
a queue (nothing is decoded until a caller asks), and stderr goes straight to a file the process
writes itself, so no thread of ours reads it. `send_raw` and `read_timed_line` are the raw path the
benchmarks use; `call`, `result` and `response_to` decode for the tests.

Everything that goes wrong on the driver's side of the pipes raises a `DriverError`, never an
`AssertionError`, so a caller can tell "the sidecar died" from "the sidecar answered wrongly".
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

import psutil

# Hang guards, not timing limits: generous on a loaded 2-core machine.
READ_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0
# How much of stderr an error message carries.
STDERR_TAIL_CHARS = 4000


class DriverError(Exception):
    """The driven process did not do what the driver waited for; the message has its stderr."""


class SidecarDied(DriverError):
    """The process exited (or closed its end of a pipe) while the driver needed it."""


class AnswerTimeout(DriverError):
    """No answer line within the timeout while the process was still running."""


class StillRunning(DriverError):
    """The process did not exit within the timeout."""


class ProtocolViolation(DriverError):
    """A stdout line that is not a JSON-RPC response (not JSON, or no `id`)."""


class ErrorAnswer(DriverError):
    """An error response where a `result` was expected; `response` is the whole object."""

    def __init__(self, method: str, response: dict[str, Any]) -> None:
        super().__init__(f"{method} answered with an error: {response!r}")
        self.response = response


def sidecar_command() -> list[str]:
    """The command that starts the sidecar: SIDECAR_COMMAND, else `python -m sidecar`."""
    override = os.environ.get("SIDECAR_COMMAND")
    return shlex.split(override) if override else [sys.executable, "-m", "sidecar"]


def sidecar_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """This process's environment without POSTHOG_* settings, loopback exempt from proxies."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    environment["NO_PROXY"] = "127.0.0.1,localhost"
    environment.update(env or {})
    return environment


_EOF = b""  # what the reader queues when stdout closes (a line read is never empty)


class SidecarProcess:
    """One running sidecar: write request lines, read response lines, look at stderr.

    `read_ahead=False` reads stdout only as far as `read_line` asks, one line per call, so
    answers nobody asked for stay in the pipe and the process blocks on a full stdout, as it
    would with an app that stopped reading (for floods). Usable as a context manager that
    `reap`s the process on the way out.
    """

    def __init__(
        self,
        data_dir: Path,
        host: str,
        *args: str,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        command: Sequence[str] | None = None,
        read_ahead: bool = True,
    ) -> None:
        self.command = [*(command or sidecar_command()), "--data-dir", str(data_dir),
                        "--host", host, *args]
        if api_key is not None:
            self.command += ["--api-key", api_key]
        handle, name = tempfile.mkstemp(prefix="sidecar-stderr-")
        os.close(handle)
        self._stderr_path = Path(name)
        self._stderr_kept: str | None = None
        """What the stderr file held when `reap` removed it."""
        self.spawned_at = time.monotonic()
        # Opened for appending: the child's writes land at the end whatever we read meanwhile.
        try:
            with self._stderr_path.open("ab") as stderr:
                self.process = subprocess.Popen(
                    self.command,
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=stderr,
                    env=sidecar_environment(env),
                )
        except BaseException:
            self._stderr_path.unlink()
            raise
        stdin, stdout = self.process.stdin, self.process.stdout
        if stdin is None or stdout is None:  # never: both are pipes; this tells the type checker
            raise DriverError("the process was started without pipes")
        self._stdin: IO[bytes] = stdin
        self._stdout: IO[bytes] = stdout
        self.raw_stdout: list[bytes] = []
        """Every stdout line read so far, in order (the reader appends; callers only look)."""
        self._lines: queue.Queue[tuple[float, bytes]] = queue.Queue()
        self._ids = itertools.count(1)
        self._unclaimed: dict[object, dict[str, Any]] = {}
        self._read_ahead = read_ahead
        self._wanted = threading.Semaphore(0)
        """With `read_ahead=False`: released once for each line the reader may read."""
        self._asked = False
        """With `read_ahead=False`: a line was asked for and the reader has not queued it yet."""
        self._asked_lock = threading.Lock()
        self._reader = threading.Thread(target=self._read_stdout, daemon=True)
        self._reader.start()

    def __enter__(self) -> SidecarProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.reap()

    # ---- the process ------------------------------------------------------------------------

    @property
    def pid(self) -> int:
        """The process id (for a one-file binary: the bootloader's)."""
        return self.process.pid

    @property
    def running(self) -> bool:
        """Whether the process has not exited yet."""
        return self.process.poll() is None

    @property
    def stderr(self) -> str:
        """Everything the process logged so far (all of it, once reaped)."""
        if self._stderr_kept is not None:
            return self._stderr_kept
        return self._stderr_path.read_bytes().decode("utf-8", "replace")

    @property
    def stdout(self) -> bytes:
        """Everything read from the protocol stream so far."""
        return b"".join(self.raw_stdout)

    def tree(self) -> list[psutil.Process]:
        """The process and every process under it (a one-file binary runs its program in a
        child); empty once it is gone."""
        try:
            root = psutil.Process(self.process.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def _failure(self, what: str) -> str:
        code = self.process.poll()
        state = "still running" if code is None else f"exit code {code}"
        return f"{what} ({state}); stderr:\n{self.stderr[-STDERR_TAIL_CHARS:]}"

    # ---- writing ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes to stdin as they are (blocks while the pipe is full)."""
        try:
            self._stdin.write(data)
            self._stdin.flush()
        except (OSError, ValueError) as exc:  # a closed pipe, or stdin closed by us
            raise SidecarDied(self._failure(f"stdin refused a write: {exc!r}")) from exc

    def send(self, message: object) -> None:
        """Write one JSON line."""
        self.send_raw(json.dumps(message).encode() + b"\n")

    def request(self, method: str, params: dict[str, Any] | None = None) -> int:
        """Send a request and return its id without waiting."""
        request_id = next(self._ids)
        message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
        if params is not None:
            message["params"] = params
        self.send(message)
        return request_id

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and wait for its response object."""
        return self.response_to(self.request(method, params))

    def result(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Send a request and return its `result`; an error response raises `ErrorAnswer`."""
        response = self.call(method, params)
        if "result" not in response:
            raise ErrorAnswer(method, response)
        result: dict[str, Any] = response["result"]
        return result

    def ask(self, line: bytes, timeout: float = READ_TIMEOUT_S) -> bytes:
        """Write one raw line and return the next stdout line (while no other answer is owed)."""
        self.send_raw(line)
        return self.read_line(timeout)

    def close_stdin(self) -> None:
        """End of input, as when the app exits (nothing happens if it is closed already)."""
        with contextlib.suppress(OSError):
            self._stdin.close()

    # ---- reading ----------------------------------------------------------------------------

    def _read_stdout(self) -> None:
        while True:
            if not self._read_ahead:
                self._wanted.acquire()
            line = self._stdout.readline()
            with self._asked_lock:
                if line:
                    self.raw_stdout.append(line)
                self._lines.put((time.monotonic(), line))
                self._asked = False
            if not line:
                return

    def read_timed_line(self, timeout: float = READ_TIMEOUT_S) -> tuple[float, bytes]:
        """The next raw stdout line and the `time.monotonic()` at which the reader got it."""
        if not self._read_ahead:
            with self._asked_lock:
                if not self._asked and self._lines.empty():
                    self._asked = True
                    self._wanted.release()
        try:
            read_at, line = self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AnswerTimeout(self._failure(f"no answer line within {timeout} s")) from None
        if line == _EOF:
            self._lines.put((read_at, line))  # every later read sees the end too
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(EXIT_TIMEOUT_S)
            raise SidecarDied(self._failure("stdout closed before an answer"))
        return read_at, line

    def read_line(self, timeout: float = READ_TIMEOUT_S) -> bytes:
        """The next raw stdout line."""
        return self.read_timed_line(timeout)[1]

    def read_message(self, timeout: float = READ_TIMEOUT_S) -> Any:
        """The next stdout line, decoded: a response object or a batch's list of them."""
        line = self.read_line(timeout)
        try:
            return json.loads(line)
        except ValueError:
            raise ProtocolViolation(
                self._failure(f"stdout line is not JSON: {line[:300]!r}")
            ) from None

    def response_to(self, request_id: object, timeout: float = READ_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the response with this id, keeping others for later calls."""
        while request_id not in self._unclaimed:
            message = self.read_message(timeout)
            for item in message if isinstance(message, list) else [message]:
                if not isinstance(item, dict) or "id" not in item:
                    raise ProtocolViolation(self._failure(f"not a response: {item!r}"))
                self._unclaimed[item["id"]] = item
        return self._unclaimed.pop(request_id)

    # ---- ending -----------------------------------------------------------------------------

    def wait(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Wait for the exit and return the exit code (the reader has read all stdout then)."""
        try:
            code = self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise StillRunning(self._failure(f"no exit within {timeout} s")) from None
        if self._read_ahead:
            self._reader.join(timeout)
        return code

    def stop(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Close stdin and wait for a clean exit; returns the exit code."""
        self.close_stdin()
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL the whole process tree at once, as a crash would, and reap it.

        A frozen one-file binary is a bootloader with the program as its child; killing only
        the bootloader makes the program stop cleanly, which is not a crash.
        """
        victims = self.tree()
        for victim in reversed(victims):  # the program first, then the bootloader
            with contextlib.suppress(psutil.Error):
                victim.kill()
        self.process.kill()
        self.process.wait(EXIT_TIMEOUT_S)
        psutil.wait_procs(victims, timeout=EXIT_TIMEOUT_S)
        if self._read_ahead:
            self._reader.join(EXIT_TIMEOUT_S)  # `raw_stdout` then holds all the process wrote

    def reap(self) -> None:
        """Kill the process tree if it still runs, close the pipes and remove the stderr file.

        The one way leftover processes end: after a test (passed or failed), a benchmark or
        the demo. Safe to call more than once.
        """
        if self.running:
            self.kill()
        self.close_stdin()
        if not self._read_ahead:
            self._read_ahead = True  # let the reader run to the end of stdout and finish
            self._wanted.release()
        if self._stderr_kept is None:
            self._stderr_kept = self.stderr
            with contextlib.suppress(OSError):
                self._stderr_path.unlink()
