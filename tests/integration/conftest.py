"""Fixtures for the process-level tests: a fake capture server, a data folder, spawned sidecars."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar.capture_server import CaptureServer
from sidecar.client import SidecarProcess

SpawnSidecar = Callable[..., SidecarProcess]


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A started fake PostHog capture server on 127.0.0.1; closed (and checked) after the test."""
    server = CaptureServer().start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder for `telemetry.db` that does not exist yet (the sidecar creates it)."""
    return tmp_path / "data"


@pytest.fixture
def spawn_sidecar(data_dir: Path) -> Iterator[SpawnSidecar]:
    """Start real sidecar processes: `spawn_sidecar(host, *args, api_key=..., data_dir=...)`.

    Any process still running when the test ends is killed, so a failing test leaks nothing.
    """
    started: list[SidecarProcess] = []

    def spawn(
        host: str,
        *args: str,
        api_key: str | None = None,
        env: dict[str, str] | None = None,
        folder: Path | None = None,
    ) -> SidecarProcess:
        process = SidecarProcess(folder or data_dir, host, *args, api_key=api_key, env=env)
        started.append(process)
        return process

    yield spawn
    for process in started:
        if process.process.poll() is None:
            process.kill()


def free_port() -> int:
    """A loopback port nothing listens on right now (for an offline capture host)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline_port() -> int:
    """A closed loopback port: a capture host there refuses connections, as when offline."""
    return free_port()
