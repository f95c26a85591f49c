"""The test machinery every suite and the benchmarks share, one of each.

Events to send (small ones for tests, realistic page views for figures), the fast-retry options,
a free loopback port, a bounded `wait_until`, and the one way leftover processes end (`reaping`,
which `reap`s each `SidecarProcess`; `stop_child` for helper processes that are not sidecars).
Waits here are hang guards for things seen from outside a process, never timing assertions.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from sidecar_dev.driver import SidecarProcess

# Hang guard for any single wait on a process or a server.
GUARD_S = 60.0
# Short backoffs so a process retries at once when the server comes back; the delivery rules
# themselves are checked with trio's mock clock in the unit tests.
FAST_BACKOFF_BASE_S = 0.05
FAST_BACKOFF_MAX_S = 0.2
FAST_RETRIES = (
    "--backoff-base", str(FAST_BACKOFF_BASE_S), "--backoff-max", str(FAST_BACKOFF_MAX_S)
)
# The project key the suites and the benchmarks spawn sidecars with.
TEST_KEY = "phc_test_key_0123456789abcdef"
# Nothing listens on the discard port (binding it needs root): connecting fails at once, so a
# sidecar pointed there is offline and its sender backs off without competing for the CPU.
OFFLINE_HOST = "http://127.0.0.1:9"


class WaitTimeout(Exception):
    """A `wait_until` condition did not come true within its guard."""


def wait_until(
    predicate: Callable[[], object],
    what: str,
    timeout: float = GUARD_S,
    *,
    step: float = 0.02,
    explain: Callable[[], str] | None = None,
) -> None:
    """Poll `predicate` until it is true; after `timeout`, raise `WaitTimeout` naming `what`
    (and what `explain` returns then, such as a process's stderr)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            detail = f"\n{explain()}" if explain is not None else ""
            raise WaitTimeout(f"gave up after {timeout} s waiting for {what}{detail}")
        time.sleep(step)


def wait_drained(sidecar: SidecarProcess, timeout: float = GUARD_S) -> dict[str, Any]:
    """Poll `ph_status` until the queue is empty; returns that status."""
    status: dict[str, Any] = {}

    def drained() -> bool:
        status.update(sidecar.result("ph_status"))
        queued: int = status["queued"]
        return queued == 0

    wait_until(drained, "an empty queue", timeout)
    return status


def free_port() -> int:
    """A loopback port nothing listens on right now (a capture host there is offline)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RefusingPort:
    """A loopback port bound but never listening: connections to it are refused while it is
    held, and no other process can take it meanwhile; `close` frees it for a server."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        """Let the port go (closing twice is harmless)."""
        self._sock.close()

    def __enter__(self) -> RefusingPort:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def proc_status_kib(pid: int, field: str) -> int | None:
    """A `VmRSS`/`VmHWM`-style field of /proc/<pid>/status in KiB; None without procfs or under
    SIDECAR_COMMAND (the pid may be a wrapper's, such as a one-file binary's bootloader)."""
    path = Path(f"/proc/{pid}/status")
    if "SIDECAR_COMMAND" in os.environ or not path.exists():
        return None
    for line in path.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return None


# ---- ending processes ----------------------------------------------------------------------------


@contextlib.contextmanager
def reaping() -> Iterator[list[SidecarProcess]]:
    """A list to put started sidecars in; each is reaped on the way out, passed or failed."""
    started: list[SidecarProcess] = []
    try:
        yield started
    finally:
        for sidecar in started:
            sidecar.reap()


def stop_child(process: subprocess.Popen[Any], timeout: float = 30.0) -> int:
    """End a helper process that stops at the end of its stdin: close it, wait, kill if hung."""
    with contextlib.suppress(OSError):
        if process.stdin is not None:
            process.stdin.close()
    try:
        return process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        return process.wait(timeout)


# ---- events --------------------------------------------------------------------------------------


def event(name: str = "test event", distinct_id: str = "user-1", **extra: Any) -> dict[str, Any]:
    """A small valid PostHog event; `extra` adds or replaces top-level fields."""
    return {"event": name, "distinct_id": distinct_id, "properties": {"n": 1}, **extra}


def event_uuid(n: int) -> str:
    """The uuid `numbered_event(n, with_uuid=True)` carries (see `number_of`)."""
    return f"00000000-0000-4000-8000-{n:012x}"


def number_of(uuid_text: str) -> int:
    """The event number inside a uuid made by `event_uuid`."""
    return int(uuid_text[-12:], 16)


def numbered_event(
    n: int, *, with_uuid: bool = False, padding: int = 0, **properties: Any
) -> dict[str, Any]:
    """Event number `n`: `properties.n` is `n`, plus `properties`.

    `with_uuid` gives it the uuid `event_uuid(n)` (else the sidecar assigns one); `padding`
    adds a `pad` property of that many bytes.
    """
    body: dict[str, Any] = {"event": "numbered", "distinct_id": "user-1"}
    if with_uuid:
        body["uuid"] = event_uuid(n)
    body["properties"] = {"n": n, **properties}
    if padding:
        body["properties"]["pad"] = "x" * padding
    return body


def numbered(
    count: int, start: int = 0, *, with_uuids: bool = False, padding: int = 0,
    **properties: Any,
) -> list[dict[str, Any]]:
    """Events numbered `start`.. (see `numbered_event`), to check order and loss."""
    return [
        numbered_event(n, with_uuid=with_uuids, padding=padding, **properties)
        for n in range(start, start + count)
    ]


def n_values(events: Sequence[dict[str, Any]]) -> list[int]:
    """The `properties.n` of each event."""
    return [e["properties"]["n"] for e in events]


_PATHS = (
    "/",
    "/projects",
    "/projects/{p}/settings",
    "/projects/{p}/insights/{i}",
    "/billing",
    "/docs/getting-started",
    "/projects/{p}/dashboards/{i}",
)
_BROWSERS = (
    ("Chrome", "Mac OS X"),
    ("Firefox", "Windows"),
    ("Safari", "Mac OS X"),
    ("Chrome", "Linux"),
    ("Edge", "Windows"),
)
_EPOCH = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)


def pageview(index: int, rng: random.Random) -> dict[str, Any]:
    """A $pageview as the Tauri client sends it (uuid and timestamp set at capture), ~340 bytes.

    Properties vary a little from event to event (path, browser, ids), so gzip sees realistic
    text rather than one repeated line.
    """
    project = rng.randrange(1, 999)
    path = rng.choice(_PATHS).format(p=project, i=rng.randrange(1, 99999))
    browser, os_name = rng.choice(_BROWSERS)
    when = _EPOCH + dt.timedelta(milliseconds=index * 37)
    return {
        "event": "$pageview",
        "distinct_id": f"user-{rng.randrange(100000):06d}",
        "timestamp": when.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "properties": {
            "$current_url": f"https://app.example.com{path}",
            "$pathname": path,
            "$browser": browser,
            "$os": os_name,
            "$session_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            "plan": rng.choice(("free", "pro", "team")),
        },
    }


def pageviews(count: int, seed: int = 1, start: int = 0) -> list[dict[str, Any]]:
    """`count` page views, the same ones for the same seed (the SDK worker rebuilds them so)."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not a secret
    return [pageview(start + i, rng) for i in range(count)]
