"""A Python driver for the sidecar process over real pipes, as a Tauri app uses it.

The demo, the test suites and the benchmarks all talk to the sidecar through this. The
environment variable `SIDECAR_COMMAND` replaces `python -m sidecar`, so the same code runs
against a frozen binary.
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
import threading
from pathlib import Path
from typing import Any

import psutil

# Guards against a hung process, not timing limits: generous on a loaded 2-core machine.
READ_TIMEOUT_S = 30.0
EXIT_TIMEOUT_S = 15.0


def sidecar_command() -> list[str]:
    """The command that starts the sidecar under test."""
    override = os.environ.get("SIDECAR_COMMAND")
    return shlex.split(override) if override else [sys.executable, "-m", "sidecar"]


class SidecarProcess:
    """One running sidecar: write request lines, read response lines, collect stderr."""

    def __init__(
        self,
        data_dir: Path,
        host: str,
        *args: str,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
    ) -> None:
        command = [*sidecar_command(), "--data-dir", str(data_dir), "--host", host, *args]
        if api_key is not None:
            command += ["--api-key", api_key]
        environment = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
        environment["NO_PROXY"] = "127.0.0.1,localhost"
        environment.update(env or {})
        self.process = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment,
        )
        self._lines: queue.Queue[bytes] = queue.Queue()
        self._stderr: list[bytes] = []
        self._ids = itertools.count(1)
        self._unclaimed: dict[object, dict[str, Any]] = {}
        self.raw_stdout: list[bytes] = []
        self._threads = [
            threading.Thread(target=self._pump_stdout, daemon=True),
            threading.Thread(target=self._pump_stderr, daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.raw_stdout.append(line)
            self._lines.put(line)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    @property
    def stderr(self) -> str:
        """Everything logged so far."""
        return b"".join(self._stderr).decode("utf-8", "replace")

    @property
    def stdout(self) -> bytes:
        """Everything written to the protocol stream so far."""
        return b"".join(self.raw_stdout)

    # ---- writing ----------------------------------------------------------------------------

    def send_raw(self, data: bytes) -> None:
        """Write bytes to stdin as they are."""
        assert self.process.stdin is not None
        self.process.stdin.write(data)
        self.process.stdin.flush()

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
        """Send a request and return its `result`, failing on an error response."""
        response = self.call(method, params)
        assert "result" in response, response
        result: dict[str, Any] = response["result"]
        return result

    def close_stdin(self) -> None:
        """End of input, as when the app exits."""
        assert self.process.stdin is not None
        self.process.stdin.close()

    # ---- reading ----------------------------------------------------------------------------

    def read_line(self, timeout: float = READ_TIMEOUT_S) -> bytes:
        """The next raw stdout line."""
        try:
            return self._lines.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(
                f"no response within {timeout}s; stderr:\n{self.stderr}"
            ) from None

    def read_message(self, timeout: float = READ_TIMEOUT_S) -> Any:
        """The next stdout line, decoded."""
        return json.loads(self.read_line(timeout))

    def response_to(self, request_id: object, timeout: float = READ_TIMEOUT_S) -> dict[str, Any]:
        """Wait for the response with this id, keeping others for later calls."""
        while request_id not in self._unclaimed:
            message = self.read_message(timeout)
            for item in message if isinstance(message, list) else [message]:
                self._unclaimed[item.get("id")] = item
        return self._unclaimed.pop(request_id)

    def wait(self, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Wait for exit and return the exit code."""
        code = self.process.wait(timeout)
        for thread in self._threads:
            thread.join(timeout)
        return code

    def stop(self) -> int:
        """Close stdin and wait for a clean exit."""
        if self.process.stdin and not self.process.stdin.closed:
            self.close_stdin()
        return self.wait()

    def kill(self) -> None:
        """SIGKILL the whole process tree, as a crash would.

        A frozen one-file binary is a bootloader with the program as its child; killing only
        the bootloader now makes the program stop cleanly, which is not a crash.
        """
        try:
            below = psutil.Process(self.process.pid).children(recursive=True)
        except psutil.Error:
            below = []
        for child in below:
            with contextlib.suppress(psutil.Error):
                child.kill()
        self.process.kill()
        self.process.wait(EXIT_TIMEOUT_S)
        psutil.wait_procs(below, timeout=EXIT_TIMEOUT_S)
