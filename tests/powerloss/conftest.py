"""Fixtures of the power-loss suite: a mounted `lazyfs.py`, and `crashkit` on `sys.path` (the
reliability suites' driver of the sidecar process)."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "reliability"))

from lazymount import LazyMount, fuse_missing, lazy_mount


@pytest.fixture(scope="session")
def fuse() -> None:
    """Skip where FUSE cannot mount; in CI (CI set) fail instead, so the suite never goes quiet."""
    reason = fuse_missing()
    if reason is None:
        return
    if os.environ.get("CI"):
        pytest.fail(f"the power-loss suite needs FUSE in CI: {reason}")
    pytest.skip(reason)


@pytest.fixture
def mount(fuse: None, tmp_path: Path) -> Iterator[LazyMount]:
    """`lazyfs.py` mounted on `tmp_path/mnt` over `tmp_path/mnt.backing`, unmounted after."""
    with lazy_mount(tmp_path) as mounted:
        yield mounted
