"""The WebKit page's TypeScript type-checks against the client's source and posthog-js's types."""

from __future__ import annotations

import subprocess

import pytest
from webkit_harness import CLIENT_DIR, PAGE_DIR


def test_page_typechecks() -> None:
    """`tsc` finds no error in the page, so it calls the client and posthog-js as they are typed."""
    tsc = CLIENT_DIR / "node_modules" / ".bin" / "tsc"
    if not tsc.exists():
        pytest.skip(f"no {tsc}: run `npm ci --prefix clients/tauri`")
    done = subprocess.run(
        [str(tsc), "-p", str(PAGE_DIR / "tsconfig.json")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
