"""The TypeScript client in WebKitGTK: the real plugin-shell JS API, through the emulated Tauri
IPC, spawns the real sidecar and its events reach the capture fake."""

from __future__ import annotations

from webkit_harness import TOKEN, Page


def test_client_spawns_the_sidecar_and_delivers_from_webkit(page: Page) -> None:
    """`TelemetrySidecar` started in WebKit spawns one sidecar whose events reach capture."""
    started = page.call("startSidecar")
    assert started["webdriver"] is True
    assert "AppleWebKit" in started["userAgent"]
    assert page.bridge.spawned == [started["pid"]]
    assert page.call("capturePlain", "webkit smoke", {"n": 1}) == 1
    (received,) = page.capture.wait_for_events(1, timeout=15)
    assert received["event"] == "webkit smoke"
    assert received["properties"]["n"] == 1
    (request,) = page.capture.requests
    assert request.payload["api_key"] == TOKEN
