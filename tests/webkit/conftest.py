"""Fixtures of the WebKit suite: one X display, page bundle and browser session for the run;
a shell bridge and a freshly loaded page for each test (with tests/conftest.py's capture fake
and data folder).

Without WebKitGTK or Xvfb the suite is skipped with the command that installs them, except under
CI (`CI` set), where a missing engine fails the run rather than hide behind a skip.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from webkit_bridge import ShellBridge
from webkit_harness import (
    FAST_RETRIES,
    TOKEN,
    CaptureServer,
    Page,
    WebKitTools,
    WebKitUnavailableError,
    build_bundle,
    find_webkit,
    page_html,
    sidecar_command,
    sidecar_environment,
    start_driver,
    xvfb_display,
)

_TIMES = pytest.StashKey[dict[str, float]]()


def _unavailable(missing: Exception) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"the WebKit suite cannot run under CI: {missing}")
    pytest.skip(str(missing))


@pytest.fixture(scope="session")
def webkit_tools() -> WebKitTools:
    """WebKitWebDriver, MiniBrowser and Xvfb; else a skip (a CI failure) saying how to get them."""
    try:
        return find_webkit()
    except WebKitUnavailableError as missing:
        _unavailable(missing)
        raise


@pytest.fixture(scope="session")
def page_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The page script, bundled once for the run."""
    try:
        return build_bundle(tmp_path_factory.mktemp("webkit-page"))
    except WebKitUnavailableError as missing:
        _unavailable(missing)
        raise


@pytest.fixture(scope="session")
def browser(
    webkit_tools: WebKitTools, page_bundle: Path, pytestconfig: pytest.Config
) -> Iterator[webdriver.WebKitGTK]:
    """One WebKitGTK session (MiniBrowser on a private Xvfb display) shared by the suite."""
    times = pytestconfig.stash.setdefault(_TIMES, {})
    times["suite_start"] = time.monotonic()
    with xvfb_display(webkit_tools.xvfb) as display:
        started = time.monotonic()
        driver = start_driver(webkit_tools, display)
        times["session_start_s"] = time.monotonic() - started
        try:
            yield driver
        finally:
            driver.quit()
            times["suite_s"] = time.monotonic() - times["suite_start"]


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """Print the WebKit run's wall time and its browser session's start time."""
    times = config.stash.get(_TIMES, {})
    if "suite_s" in times:
        terminalreporter.write_line(
            f"WebKit suite: {times['suite_s']:.1f} s wall time, "
            f"browser session started in {times['session_start_s']:.2f} s"
        )


@pytest.fixture
def bridge(capture: CaptureServer, data_dir: Path, page_bundle: Path) -> Iterator[ShellBridge]:
    """The emulated app's Rust side, serving a page configured for this test's capture fake."""
    config = {
        "captureHost": capture.url,
        "dataDir": str(data_dir),
        "token": TOKEN,
        "sidecarArgs": list(FAST_RETRIES),
    }
    shell = ShellBridge(
        command=sidecar_command(),
        env=sidecar_environment(),
        page=page_html(config),
        bundle=page_bundle,
    ).start()
    try:
        yield shell
    finally:
        shell.close()


@pytest.fixture
def page(
    request: pytest.FixtureRequest,
    browser: webdriver.WebKitGTK,
    bridge: ShellBridge,
    capture: CaptureServer,
    data_dir: Path,
) -> Iterator[Page]:
    """The test page, freshly loaded from this test's bridge (a new origin for every test).

    What the page logged (the sidecar's stderr, the client's and the posthog-js bridge's
    reports) is attached to the test's report, so a failure shows it.
    """
    browser.get(bridge.url + "/")
    loaded = Page(browser, bridge, capture, data_dir)
    loaded.wait_for(
        "the page script", 30, lambda p: p.driver.execute_script("return !!window.webkitPage")
    )
    try:
        yield loaded
    finally:
        logs = browser.execute_script("return window.webkitPage ? window.webkitPage.logs() : []")
        request.node.add_report_section("teardown", "page log", "\n".join(logs))
        browser.get("about:blank")
