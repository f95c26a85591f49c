"""The WebKit suite's machinery: the engine, a headless X display, the page bundle, the driver.

WebKitGTK is the engine of Tauri's Linux webview. Debian packages it as `webkit2gtk-driver`
(`WebKitWebDriver`) and `libwebkit2gtk-4.1-0`, whose `MiniBrowser` runs pages under automation
when started with `--automation`; `xvfb` gives it a display without a screen. Selenium drives it.

The project's own test machinery is imported here and nowhere else in this suite, so a move of
the capture fake or the process driver is one line to follow.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.webdriver.webkitgtk.options import Options
from selenium.webdriver.webkitgtk.service import Service
from webkit_bridge import ShellBridge

from sidecar_dev.capture import CaptureServer, DropConnection
from sidecar_dev.driver import sidecar_command, sidecar_environment
from sidecar_dev.harness import FAST_RETRIES, wait_until

__all__ = [
    "CLIENT_DIR",
    "FAST_RETRIES",
    "PAGE_DIR",
    "ROOT",
    "TOKEN",
    "CaptureServer",
    "DropConnection",
    "Page",
    "PageError",
    "WebKitTools",
    "WebKitUnavailableError",
    "build_bundle",
    "find_webkit",
    "page_call",
    "page_html",
    "sidecar_command",
    "sidecar_environment",
    "start_driver",
    "wait_until",
    "xvfb_display",
]

ROOT = Path(__file__).resolve().parents[2]
CLIENT_DIR = ROOT / "clients" / "tauri"
PAGE_DIR = Path(__file__).resolve().parent / "page"
PAGE_ENTRY = PAGE_DIR / "app.ts"
TOKEN = "phc_webkit_test"
"""The project token of the page: the sidecar's `--api-key` and posthog-js's token."""
INSTALL_HINT = "apt-get install webkit2gtk-driver xvfb (make test installs them when missing)"


class WebKitUnavailableError(RuntimeError):
    """A piece the suite needs is not installed; the message says which and how to get it."""


class PageError(RuntimeError):
    """A call into the page rejected; the message carries the page's error and stack."""


@dataclass(frozen=True, slots=True)
class WebKitTools:
    """Where the engine's programs are."""

    driver: str
    """`WebKitWebDriver`."""
    browser: str
    """`MiniBrowser`, run with `--automation`."""
    xvfb: str
    """`Xvfb`."""


def find_webkit() -> WebKitTools:
    """Locate WebKitWebDriver, MiniBrowser and Xvfb, or raise WebKitUnavailableError."""
    driver = shutil.which("WebKitWebDriver")
    xvfb = shutil.which("Xvfb")
    browser = os.environ.get("WEBKIT_MINIBROWSER") or next(
        iter(sorted(glob.glob("/usr/lib/*/webkit2gtk-4.1/MiniBrowser"))), None
    )
    missing = [
        name
        for name, path in (("WebKitWebDriver", driver), ("MiniBrowser", browser), ("Xvfb", xvfb))
        if path is None
    ]
    if driver is None or browser is None or xvfb is None:
        raise WebKitUnavailableError(f"missing {', '.join(missing)}: {INSTALL_HINT}")
    return WebKitTools(driver=driver, browser=browser, xvfb=xvfb)


@contextlib.contextmanager
def xvfb_display(xvfb: str, timeout: float = 30.0) -> Iterator[str]:
    """Run an Xvfb server on a free display number; yields the `DISPLAY` value (`:N`)."""
    read_end, write_end = os.pipe()
    process = subprocess.Popen(
        [xvfb, "-displayfd", str(write_end), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
        pass_fds=(write_end,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    os.close(write_end)
    try:
        # Xvfb writes the display number it took, then a newline, once it accepts clients.
        number = b""
        deadline = time.monotonic() + timeout
        while not number.endswith(b"\n"):
            left = deadline - time.monotonic()
            ready, _, _ = select.select([read_end], [], [], max(0.0, left))
            chunk = os.read(read_end, 16) if ready else b""
            if not chunk:
                stderr = b""
                if process.poll() is not None and process.stderr is not None:
                    stderr = process.stderr.read()
                raise WebKitUnavailableError(
                    f"Xvfb gave no display within {timeout}s: {stderr.decode(errors='replace')}"
                )
            number += chunk
        yield f":{number.decode().strip()}"
    finally:
        os.close(read_end)
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        if process.stderr is not None:
            process.stderr.close()


def build_bundle(out_dir: Path) -> Path:
    """Bundle `page/app.ts` with the client's TypeScript source and posthog-js, with esbuild.

    Packages resolve from `clients/tauri/node_modules` (`npm ci --prefix clients/tauri`).
    """
    esbuild = CLIENT_DIR / "node_modules" / ".bin" / "esbuild"
    if not esbuild.exists():
        raise WebKitUnavailableError(f"no {esbuild}: run `npm ci --prefix clients/tauri`")
    out = out_dir / "bundle.js"
    env = {**os.environ, "NODE_PATH": str(CLIENT_DIR / "node_modules")}
    done = subprocess.run(
        [
            str(esbuild),
            str(PAGE_ENTRY),
            "--bundle",
            "--format=iife",
            "--target=es2022",
            "--sourcemap=inline",
            "--log-level=warning",
            f"--outfile={out}",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"esbuild failed ({done.returncode}):\n{done.stderr}")
    return out


def start_driver(tools: WebKitTools, display: str) -> webdriver.WebKitGTK:
    """Start a WebKitWebDriver session with MiniBrowser on `display`."""
    options = Options()
    options.binary_location = tools.browser
    options.add_argument("--automation")
    env = {**os.environ, "DISPLAY": display}
    env.pop("WAYLAND_DISPLAY", None)
    service = Service(executable_path=tools.driver, env=env)
    driver = webdriver.WebKitGTK(options=options, service=service)
    driver.set_script_timeout(60)
    driver.set_page_load_timeout(30)
    return driver


_CALL = """
const [name, args, done] = [arguments[0], arguments[1], arguments[arguments.length - 1]];
Promise.resolve()
  .then(() => window.webkitPage[name](...args))
  .then(
    (value) => done({ ok: value === undefined ? null : value }),
    (error) => done({ error: String(error && error.stack ? `${error}\\n${error.stack}` : error) }),
  );
"""


def page_call(driver: webdriver.WebKitGTK, name: str, *args: Any) -> Any:
    """Await `window.webkitPage[name](...args)` in the page; its value, or PageError."""
    answer: Mapping[str, Any] = driver.execute_async_script(_CALL, name, list(args))
    if "error" in answer:
        raise PageError(f"webkitPage.{name} failed in the page: {answer['error']}")
    return answer["ok"]


def page_html(config: Mapping[str, Any]) -> str:
    """The test page: its configuration as `window.__WEBKIT_CONFIG__`, then the bundle."""
    # `</` cannot end the script element early once escaped.
    data = json.dumps(dict(config)).replace("</", "<\\/")
    return (
        "<!doctype html><html><head><meta charset='utf-8'>"
        "<title>telemetry-sidecar WebKit test</title>"
        f"<script>window.__WEBKIT_CONFIG__ = {data};</script>"
        "<script src='/bundle.js'></script></head><body></body></html>"
    )


@dataclass(frozen=True, slots=True)
class Page:
    """The loaded test page and the world around it."""

    driver: webdriver.WebKitGTK
    bridge: ShellBridge
    capture: CaptureServer
    data_dir: Path

    def call(self, name: str, *args: Any) -> Any:
        """Await `window.webkitPage[name](...args)`; its value, or PageError."""
        return page_call(self.driver, name, *args)

    def wait_for(self, what: str, timeout: float, condition: Callable[[Page], Any]) -> Any:
        """Poll `condition(page)` until it returns something truthy, and return that; after
        `timeout` seconds raise `WaitTimeout` naming `what`, with the page's log."""
        found: list[Any] = []

        def holds() -> bool:
            value = condition(self)
            if value:
                found.append(value)
            return bool(value)

        wait_until(holds, what, timeout, explain=self.explain)
        return found[-1]

    def explain(self) -> str:
        """What the capture fake answered and what the page logged, for a failure message."""
        answers = ", ".join(
            f"{r.status if r.status is not None else r.outcome.value} ({len(r.events)} events)"
            for r in self.capture.requests
        )
        return "\n".join([f"capture requests: [{answers}]", *self.call("logs")])
