"""Fixtures shared by every suite: the fake capture server, a data folder, spawned sidecars that
are always reaped, an offline capture port.

This folder is on `sys.path` because this file is here, so tests import `support.*`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sidecar_dev.capture import CaptureServer
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import free_port, reaping

SpawnSidecar = Callable[..., SidecarProcess]


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A started fake PostHog capture server on 127.0.0.1; closed (and checked) after the test."""
    with CaptureServer() as server:
        yield server


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A folder for `telemetry.db` that does not exist yet (the sidecar creates it)."""
    return tmp_path / "data"


@pytest.fixture
def spawn_sidecar(data_dir: Path) -> Iterator[SpawnSidecar]:
    """Start real sidecar processes: `spawn_sidecar(host, *args, api_key=..., folder=...)`.

    Every process started is reaped when the test ends, so a failing test leaks nothing.
    """
    with reaping() as started:

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


@pytest.fixture
def offline_port() -> int:
    """A closed loopback port: a capture host there refuses connections, as when offline."""
    return free_port()
