"""posthog-js through the sidecar in WebKitGTK, the engine of Tauri's Linux webview.

The real posthog-js, initialised in the page with `connectPostHog`, builds the events; the page
records what the sidecar hook was handed and what it gave back. The Rust side of the app is the
loopback shell bridge, which runs the real sidecar (the frozen binary under `SIDECAR_COMMAND`)
against the capture fake. Every wait is bounded and fails saying what it waited for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from webkit_harness import TOKEN, DropConnection, Page

SCENARIO_EVENTS = {
    "signed up",
    "$identify",
    "$create_alias",
    "$groupidentify",
    "$pageview",
    "$exception",
}


def instant(timestamp: str) -> datetime:
    """An RFC 3339 timestamp as an aware datetime, to compare instants whatever the notation."""
    return datetime.fromisoformat(timestamp)


def taken_by_sidecar(page: Page) -> list[dict[str, Any]]:
    """Events the sidecar hook was handed and did not give back to posthog-js."""
    returned = {e["uuid"] for e in page.call("returned")}
    return [e for e in page.call("seen") if e["uuid"] not in returned]


def arrivals(events: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """How many times each uuid reached the capture fake."""
    return Counter(str(e["uuid"]) for e in events)


def wait_until_delivered(page: Page, uuids: Iterable[str], timeout: float) -> list[dict[str, Any]]:
    """Block until every one of `uuids` reached the capture fake; return all its events."""
    wanted = set(uuids)

    def delivered(p: Page) -> list[dict[str, Any]] | None:
        events = p.capture.events
        return events if wanted <= set(arrivals(events)) else None

    events: list[dict[str, Any]] = page.wait_for(
        f"{len(wanted)} events at the capture fake", timeout, delivered
    )
    return events


def wait_until_queued(page: Page, count: int, timeout: float) -> dict[str, Any]:
    """Block until the sidecar reports `count` events in its disk queue; return its status."""
    status: dict[str, Any] = page.wait_for(
        f"{count} events queued on disk",
        timeout,
        lambda p: answer if (answer := p.call("status"))["queued"] == count else None,
    )
    return status


def test_each_posthog_event_arrives_once_as_before_send_saw_it(page: Page) -> None:
    """capture, identify, alias, group, $pageview and captureException reach capture once each,
    with the uuid, event, distinct_id, timestamp (to the ms) and properties the hook was handed."""
    page.call("startPostHog")
    page.call("scenario")
    page.wait_for(
        "posthog-js to build every scenario event",
        15,
        lambda p: {e["event"] for e in p.call("seen")} >= SCENARIO_EVENTS,
    )
    taken = taken_by_sidecar(page)
    received = wait_until_delivered(page, (e["uuid"] for e in taken), timeout=20)

    assert page.call("returned") == []
    seen = page.call("seen")
    assert arrivals(received) == Counter(e["uuid"] for e in seen)
    assert {e["event"] for e in seen} >= SCENARIO_EVENTS
    by_uuid = {e["uuid"]: e for e in received}
    for handed in seen:
        got = by_uuid[handed["uuid"]]
        assert got["event"] == handed["event"]
        assert got["distinct_id"] == str(handed["properties"]["distinct_id"])
        assert instant(got["timestamp"]) == instant(handed["timestamp"])
        assert got["properties"] == handed["properties"]
        for person in ("$set", "$set_once"):
            assert got.get(person) == handed.get(person), (handed["event"], person)
    identify = next(e for e in received if e["event"] == "$identify")
    assert identify["distinct_id"] == "user-42"
    assert identify["$set"] == {"email": "user42@example.com"}
    assert identify["$set_once"]["first_seen"] == "2026-12-03"
    exception = next(e for e in received if e["event"] == "$exception")
    assert exception["properties"]["$exception_list"][0]["value"] == "boom in WebKit"
    assert all(e["properties"]["$lib"] == "web" for e in received)
    assert {r.payload["api_key"] for r in page.capture.requests} == {TOKEN}
    # posthog-js sent nothing by itself: no /flags, no remote config, no events.
    assert page.bridge.own_requests == []


def test_offline_crash_and_restart_then_online_delivers_everything(page: Page) -> None:
    """Events queued offline, the sidecar killed (its whole process group) and restarted, events
    captured while it was down: once online again every event reaches capture exactly once."""
    first_pid = page.call("startPostHog")["pid"]
    page.capture.set_default(DropConnection())
    offline = page.call("capture", [f"offline {i}" for i in range(5)])
    page.call("flushWebview")
    wait_until_queued(page, len(taken_by_sidecar(page)), timeout=15)
    # The sidecar tried to deliver them and found no network.
    page.capture.wait_for_requests(1, timeout=15)
    assert page.capture.events == []

    page.call("captureOnRestart", [f"restart {i}" for i in range(3)])
    page.bridge.crash(first_pid)
    during_restart = page.call("restartCaptured")
    spawned = page.bridge.wait_for_spawns(2, timeout=20)
    assert spawned[0] == first_pid
    page.wait_for("the client to run the new process", 15, lambda p: p.call("pid") == spawned[1])
    taken = taken_by_sidecar(page)
    assert {e["uuid"] for e in taken} >= {*offline, *during_restart}
    wait_until_queued(page, len(taken), timeout=15)
    assert page.capture.events == []

    page.capture.set_default(None)
    # What the killed process held comes back through the new one within a second of its end
    # (the hand-over contract); the guard only bounds a hang.
    received = wait_until_delivered(page, (e["uuid"] for e in taken), timeout=20)
    assert arrivals(received) == Counter(e["uuid"] for e in taken)
    assert page.call("returned") == []


def test_opt_out_purges_the_disk_queue(page: Page) -> None:
    """posthog-js's opt_out_capturing() reaches the sidecar and purges the events it held on
    disk; after opting back in, only new events are delivered."""
    page.call("startPostHog")
    page.capture.set_default(DropConnection())
    page.call("capture", [f"before opt-out {i}" for i in range(4)])
    page.call("flushWebview")
    held = taken_by_sidecar(page)
    wait_until_queued(page, len(held), timeout=15)

    page.call("optOut")
    status = page.wait_for(
        "the sidecar to be opted out",
        15,
        lambda p: status if (status := p.call("status"))["opted_out"] else None,
    )
    assert status["queued"] == 0
    assert status["dropped"]["opt_out"] == len(held)

    page.capture.set_default(None)
    page.call("optIn")
    (marker,) = page.call("capture", ["after opt-in"])
    page.call("flushWebview")
    received = wait_until_delivered(page, [marker], timeout=20)
    assert not {e["uuid"] for e in held} & set(arrivals(received))
    assert page.call("status")["opted_out"] is False


def test_snapshot_is_left_to_posthog_js(page: Page) -> None:
    """A session-replay `$snapshot` is given back to posthog-js unchanged, which sends it to its
    own endpoint; it never reaches the sidecar."""
    page.call("startPostHog")
    snapshot = page.call("snapshot")
    (marker,) = page.call("capture", ["after snapshot"])
    page.call("flushWebview")

    sent_by_posthog = page.bridge.wait_for_own_events(1, timeout=20)
    assert [e["uuid"] for e in sent_by_posthog] == [snapshot]
    assert sent_by_posthog[0]["event"] == "$snapshot"
    assert {r.path for r in page.bridge.own_requests} == {"/s/"}
    handed = next(e for e in page.call("seen") if e["uuid"] == snapshot)
    assert page.call("returned") == [handed]

    received = wait_until_delivered(page, [marker], timeout=20)
    assert snapshot not in arrivals(received)


def test_without_a_sidecar_posthog_js_sends_the_events_itself(page: Page) -> None:
    """A sidecar that cannot be started (not bundled): the hook gives every event back to
    posthog-js unchanged, posthog-js sends each once to its own host, and the switch is
    reported once."""
    started = page.call("startPostHog", "binaries/not-bundled")
    assert "not allowed" in str(started["startError"])
    page.call("capture", ["while stopped 1", "while stopped 2"])
    page.call("scenario")
    seen = page.call("seen")
    wanted = {e["uuid"] for e in seen}

    def sent_by_posthog(p: Page) -> list[dict[str, Any]] | None:
        events = [e for r in p.bridge.own_requests for e in r.events]
        return events if wanted <= {e["uuid"] for e in events} else None

    sent: list[dict[str, Any]] = page.wait_for(
        f"posthog-js to send {len(wanted)} events itself", 20, sent_by_posthog
    )
    assert Counter(e["uuid"] for e in sent) == Counter(wanted)
    assert page.call("returned") == seen
    assert {e["event"] for e in seen} >= {"while stopped 1", "while stopped 2", *SCENARIO_EVENTS}
    assert page.bridge.spawned == []
    assert page.capture.requests == []
    switches = [
        line
        for line in page.call("logs")
        if line.startswith("posthog bridge: the sidecar is stopped")
    ]
    assert len(switches) == 1, page.call("logs")
