"""Fixtures for the process-level tests: a fake capture server (the rest is in ../conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sidecar_dev.capture import CaptureServer


@pytest.fixture
def capture() -> Iterator[CaptureServer]:
    """A started fake PostHog capture server on 127.0.0.1; closed (and checked) after the test."""
    server = CaptureServer().start()
    try:
        yield server
    finally:
        server.close()
