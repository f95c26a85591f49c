"""Event profiles for the benchmarks: which events an app hands to `ph_send_batch`.

`small`: the ~340-byte `$pageview`s of the test suites (`sidecar_dev.harness.pageviews`).

`posthog-js`: events as posthog-js 1.449 builds them in a Tauri webview and as the client's
`sidecarBeforeSend` bridge hands them on (`toBatchEvent`: `distinct_id` copied to the top level,
`timestamp` as `toISOString()`, every property kept, `$set` / `$set_once` at the top level,
`properties.token` the api key). The property names, their order and their value shapes are
those posthog-js gave its `before_send` in happy-dom under the user agents and origins of
Tauri's three webviews (WebView2 on Windows at `http://tauri.localhost`, WKWebView on macOS and
WebKitGTK on Linux at `tauri://localhost`); `$browser_type` is `browser` as in a real webview.
An app's own super properties (`posthog.register`) ride on every event, as they do in apps.

The stream is a sequence of sessions of one device each: `$pageview`s, `$autocapture` clicks
with their `$elements_chain`, app events, `$pageleave`s, now and then a `$exception`, and an
`$identify` (with `$set` and posthog-js's `$set_once` of initial campaign properties) in some
sessions, after which the events carry `$user_id` and `$is_identified`. Mix by count, about:
36% `$pageview`, 36% `$autocapture`, 14% app events, 11% `$pageleave`, 2% `$exception`, 2%
`$identify`; 56 properties and 2.3 KB serialized on average (1.8-3.6 KB; `$identify` 3.4 KB).

Both are deterministic for a seed, so runs (and the SDK worker, which rebuilds them in its own
process) see the same events.
"""

from __future__ import annotations

import datetime as dt
import random
import string
import uuid
from collections.abc import Callable
from typing import Any

from sidecar_dev.harness import TEST_KEY, pageviews

PROFILES = ("small", "posthog-js")
POSTHOG_JS_VERSION = "1.449.2"
_EPOCH = dt.datetime(2026, 11, 26, 10, 0, tzinfo=dt.UTC)

# (user agent, $os, $os_version, $browser, $browser_version, origin): what posthog-js derives
# from each webview's user agent.
_WEBVIEWS = (
    ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
     "Chrome/{v}.0.0.0 Safari/537.36 Edg/{v}.0.0.0", "Windows", "10", "Microsoft Edge", None,
     "http://tauri.localhost"),
    ("Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko)",
     "Mac OS X", "10.15.7", "Safari", None, "tauri://localhost"),
    ("Mozilla/5.0 (X11; Ubuntu; Linux x86_64) AppleWebKit/605.1.15 (KHTML, like Gecko) "
     "Version/17.0 Safari/605.1.15", "Linux", None, "Safari", 17, "tauri://localhost"),
)
_SCREENS = ((1920, 1080), (2560, 1440), (1440, 900), (1536, 864), (3024, 1964), (1366, 768))
_ZONES = (("Europe/Berlin", -60), ("America/New_York", 300), ("Europe/London", 0),
          ("Asia/Tokyo", -540), ("America/Los_Angeles", 480), ("Europe/Paris", -60))
_LANGUAGES = ("en-US", "de-DE", "fr-FR", "en-GB", "ja-JP", "es-ES")
_PAGES = (
    ("/", "Home - Acme Desktop"),
    ("/projects", "Projects - Acme Desktop"),
    ("/projects/{p}/board", "Board - Acme Desktop"),
    ("/projects/{p}/board?tab=overview", "Board - Acme Desktop"),
    ("/projects/{p}/settings", "Project settings - Acme Desktop"),
    ("/settings/account", "Account - Acme Desktop"),
    ("/search?q=release+notes", "Search - Acme Desktop"),
)
_BUTTONS = (
    ("button", "btn btn-primary", "save-board", "Save board"),
    ("button", "btn btn-secondary", "cancel-edit", "Cancel"),
    ("a", "nav-link active", "nav-settings", "Settings"),
    ("button", "icon-button toolbar__item", "add-card", "Add card"),
    ("a", "card__title", "open-card", "Quarterly planning"),
    ("button", "btn btn-ghost btn-sm", "filter-open", "Filters"),
)
_APP_EVENTS: tuple[tuple[str, Callable[[random.Random], dict[str, Any]]], ...] = (
    ("board_saved", lambda r: {"board_id": r.randrange(1, 999), "cards": r.randrange(1, 80)}),
    ("card_moved", lambda r: {"from_column": r.choice(("todo", "doing")), "to_column": "done"}),
    ("export_finished", lambda r: {"format": r.choice(("pdf", "csv")),
                                   "duration_ms": r.randrange(80, 9000)}),
    ("search_performed", lambda r: {"query_length": r.randrange(1, 40),
                                    "results": r.randrange(0, 300)}),
)
_CAMPAIGN_KEYS = (
    "utm_source", "utm_medium", "utm_campaign", "utm_content", "utm_term", "gad_source",
    "mc_cid", "gclid", "gclsrc", "dclid", "gbraid", "wbraid", "fbclid", "msclkid", "twclid",
    "li_fat_id", "igshid", "ttclid", "rdt_cid", "epik", "qclid", "sccid", "oppref", "bfcid",
    "irclid", "_kx",
)
_BASE36 = string.digits + string.ascii_lowercase


def _uuid7(ms: int, rng: random.Random) -> str:
    """A UUIDv7 as posthog-js makes them: 48 bits of milliseconds, then random bits."""
    value = (ms & (2**48 - 1)) << 80 | 0x7 << 76 | rng.getrandbits(12) << 64
    value |= 0b10 << 62 | rng.getrandbits(62)
    return str(uuid.UUID(int=value))


def _iso(moment: dt.datetime) -> str:
    """`Date.prototype.toISOString()`: UTC, milliseconds, `Z`."""
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _element(tag: str, classes: str, attributes: dict[str, str]) -> str:
    """One element of an `$elements_chain`, as posthog-js's getElementsChainString writes it:
    tag, sorted classes, then its attributes sorted by name."""
    dotted = "".join(f".{c}" for c in sorted(classes.split()))
    pairs = "".join(f'{key}="{value}"' for key, value in sorted(attributes.items()))
    return f"{tag}{dotted}:{pairs}"


def _elements_chain(rng: random.Random, tag: str, classes: str, attr: str, text: str) -> str:
    """An `$elements_chain` from the clicked element up to the app's root element."""
    nth = str(rng.randrange(1, 6))
    target = {"attr__class": classes, "attr__data-attr": attr, "nth-child": nth,
              "nth-of-type": nth, "text": text}
    if tag == "a":
        target |= {"attr__href": "/settings", "href": "/settings"}
    else:
        target["attr__type"] = "button"
    parents = [
        _element("div", "toolbar", {"attr__class": "toolbar", "nth-child": str(rng.randrange(1, 4)),
                                    "nth-of-type": "1"}),
        _element("section", "board__column", {
            "attr__class": "board__column", "attr__data-column": str(rng.randrange(9)),
            "nth-child": str(rng.randrange(1, 6)), "nth-of-type": str(rng.randrange(1, 6))}),
        _element("main", "", {"attr__id": "content", "attr_id": "content", "nth-child": "2",
                              "nth-of-type": "1"}),
        _element("div", "app", {"attr__class": "app", "attr__id": "root", "attr_id": "root",
                                "nth-child": "1", "nth-of-type": "1"}),
    ]
    return ";".join([_element(tag, classes, target), *parents[rng.randrange(0, 2):]])


class _Session:
    """One device's session in one webview: the properties posthog-js repeats on each event."""

    def __init__(self, rng: random.Random, start: dt.datetime) -> None:
        self.rng = rng
        agent, os_name, os_version, browser, version, origin = rng.choice(_WEBVIEWS)
        webview_version = rng.choice((129, 130, 131))
        self.origin = origin
        self.started = start
        self.device_id = _uuid7(int(start.timestamp() * 1000) - rng.randrange(10**9), rng)
        self.user_id = f"user-{rng.randrange(10**6):06d}"
        self.identified = rng.random() < 0.5  # an earlier session already identified them
        self.pageview_id: str | None = None
        self.pageview_at = start
        self.path = "/"
        self.title = ""
        self.groups = {"company": f"company-{rng.randrange(5000)}"} if rng.random() < 0.3 else None
        width, height = rng.choice(_SCREENS)
        zone, offset = rng.choice(_ZONES)
        language = rng.choice(_LANGUAGES)
        first_path = rng.choice(_PAGES)[0].format(p=rng.randrange(1, 999))
        entry = f"{origin}{first_path}"
        self.entry_path = first_path.split("?")[0]
        self.head: dict[str, Any] = {
            "$os": os_name, "$os_version": os_version, "$browser": browser,
            "$device_type": "Desktop", "$timezone": zone, "$timezone_offset": offset,
        }
        self.agent = {
            "$raw_user_agent": agent.format(v=webview_version),
            "$browser_version": webview_version if browser == "Microsoft Edge" else version,
            "$browser_language": language, "$browser_language_prefix": language[:2],
            "$screen_height": height, "$screen_width": width,
            "$viewport_height": height - rng.choice((0, 28, 64)),
            "$viewport_width": width - rng.choice((0, 0, 16)),
            "$lib": "web", "$lib_version": POSTHOG_JS_VERSION,
        }
        self.init = {
            "$sdk_dist_channel": "npm",
            "$initialization_time": _iso(start - dt.timedelta(milliseconds=rng.randrange(50, 900))),
            "$configured_session_timeout_ms": 1800000,
            "$sdk_debug_extensions_init_method": "synchronous",
            "$sdk_debug_extensions_init_time_ms": rng.randrange(1, 9),
        }
        self.session = {
            "$config_defaults": "unset",
            "$session_id": _uuid7(int(start.timestamp() * 1000), rng),
            "$window_id": _uuid7(int(start.timestamp() * 1000), rng),
            "$session_entry_referrer": "$direct",
            "$session_entry_referring_domain": "$direct",
            "$session_entry_url": entry,
            "$session_entry_host": origin.split("//")[1],
            "$session_entry_pathname": self.entry_path,
            "$recording_status": "disabled",
            "$sdk_debug_retry_queue_size": 0,
        }
        self.app = {"app_version": f"2.{rng.randrange(3, 9)}.{rng.randrange(20)}",
                    "app_channel": rng.choice(("stable", "stable", "beta")),
                    "tauri_platform": os_name.split()[0].lower()}
        self.tokens = 100.0

    def properties(self, at: dt.datetime, extra: dict[str, Any]) -> dict[str, Any]:
        """Every property posthog-js adds to an event at `at`, around the event's own `extra`."""
        rng = self.rng
        distinct_id = self.user_id if self.identified else self.device_id
        props: dict[str, Any] = dict(self.head)
        props["$current_url"] = f"{self.origin}{self.path}"
        props["$host"] = self.origin.split("//")[1]
        props["$pathname"] = self.path.split("?")[0]
        props.update(self.agent)
        props["$insert_id"] = "".join(rng.choice(_BASE36) for _ in range(16))
        props["$time"] = round(at.timestamp(), 3)
        props.update(self.init)
        props["distinct_id"] = distinct_id
        props["$device_id"] = self.device_id
        props["$referrer"] = "$direct"
        props["$referring_domain"] = "$direct"
        if self.identified:
            props["$user_id"] = self.user_id
        props.update(extra)
        if self.groups:
            props["$groups"] = dict(self.groups)
        props["token"] = TEST_KEY
        props.update(self.session)
        if self.pageview_id:
            props["$pageview_id"] = self.pageview_id
        props.update(self.app)
        props["$browser_type"] = "browser"
        props["$is_identified"] = self.identified
        props["$process_person_profile"] = self.identified
        self.tokens = max(0.0, min(100.0, self.tokens - 1 + rng.random() * 1.2))
        props["$lib_rate_limit_remaining_tokens"] = round(self.tokens, 2)
        return props


def _event(name: str, at: dt.datetime, session: _Session, extra: dict[str, Any]) -> dict[str, Any]:
    properties = session.properties(at, extra)
    ms = int(at.timestamp() * 1000)
    return {
        "uuid": _uuid7(ms, session.rng),
        "event": name,
        "properties": properties,
        "distinct_id": properties["distinct_id"],
        "timestamp": _iso(at),
    }


def _pageview(session: _Session, at: dt.datetime) -> dict[str, Any]:
    rng = session.rng
    path, title = rng.choice(_PAGES)
    previous = session.pageview_id
    previous_path = session.path.split("?")[0]
    duration = round((at - session.pageview_at).total_seconds(), 3)
    session.path = path.format(p=rng.randrange(1, 999))
    session.title = title
    extra: dict[str, Any] = {}
    if previous:
        scroll = rng.randrange(0, 2400)
        content = rng.randrange(400, 3200)
        extra = {
            "$prev_pageview_id": previous,
            "$prev_pageview_last_scroll": scroll,
            "$prev_pageview_last_scroll_percentage": round(rng.random(), 4),
            "$prev_pageview_max_scroll": scroll + rng.randrange(0, 400),
            "$prev_pageview_max_scroll_percentage": round(rng.random(), 4),
            "$prev_pageview_last_content": content,
            "$prev_pageview_last_content_percentage": round(rng.random(), 4),
            "$prev_pageview_max_content": content + rng.randrange(0, 400),
            "$prev_pageview_max_content_percentage": 1,
            "$prev_pageview_pathname": previous_path,
            "$prev_pageview_duration": duration,
        }
    extra["title"] = title
    event = _event("$pageview", at, session, extra)
    session.pageview_id = event["uuid"]
    event["properties"]["$pageview_id"] = event["uuid"]
    session.pageview_at = at
    return event


def _autocapture(session: _Session, at: dt.datetime) -> dict[str, Any]:
    rng = session.rng
    tag, classes, attr, text = rng.choice(_BUTTONS)
    extra = {"$event_type": "click", "$ce_version": 1,
             "$elements_chain": _elements_chain(rng, tag, classes, attr, text), "$el_text": text}
    return _event("$autocapture", at, session, extra)


def _pageleave(session: _Session, at: dt.datetime) -> dict[str, Any]:
    extra = {"$prev_pageview_id": session.pageview_id,
             "$prev_pageview_pathname": session.path.split("?")[0],
             "$prev_pageview_duration": round((at - session.pageview_at).total_seconds(), 3)}
    return _event("$pageleave", at, session, extra)


def _exception(session: _Session, at: dt.datetime) -> dict[str, Any]:
    rng = session.rng
    bundle = f"{session.origin}/assets/index-{rng.getrandbits(32):08x}.js"
    frames = [{"platform": "web:javascript", "filename": bundle, "function": name,
               "in_app": True, "lineno": 1, "colno": rng.randrange(1000, 400000)}
              for name in ("saveBoard", "onClick", "callCallback", "invokeGuardedCallback")]
    extra = {"$exception_list": [{
        "type": "TypeError", "value": "Cannot read properties of undefined (reading 'id')",
        "mechanism": {"type": "onunhandledrejection", "handled": False, "synthetic": False,
                      "exception_id": 0},
        "stacktrace": {"type": "raw", "frames": frames}}],
        "$exception_level": "error"}
    return _event("$exception", at, session, extra)


def _identify(session: _Session, at: dt.datetime) -> dict[str, Any]:
    rng = session.rng
    anonymous = session.device_id
    session.identified = True
    event = _event("$identify", at, session, {"$anon_distinct_id": anonymous})
    entry_url = session.session["$session_entry_url"]
    host = session.origin.split("//")[1]
    set_once: dict[str, Any] = {
        "$initial_referrer": "$direct", "$initial_referring_domain": "$direct",
        "$initial_current_url": entry_url, "$initial_host": host,
        "$initial_pathname": session.entry_path,
    }
    set_once.update({f"$initial_{key}": None for key in _CAMPAIGN_KEYS})
    set_once.update({"$referrer": "$direct", "$referring_domain": "$direct",
                     "$current_url": entry_url, "$host": host,
                     "$pathname": session.entry_path})
    set_once.update(dict.fromkeys(_CAMPAIGN_KEYS))
    set_once.update({"first_seen": _iso(session.started), "signup_source": "desktop"})
    event["$set"] = {"email": f"{session.user_id}@example.com",
                     "plan": rng.choice(("free", "pro", "team")),
                     "app_version": session.app["app_version"]}
    event["$set_once"] = set_once
    return event


def _app_event(session: _Session, at: dt.datetime) -> dict[str, Any]:
    name, make = session.rng.choice(_APP_EVENTS)
    return _event(name, at, session, make(session.rng))


def posthog_js_events(count: int, seed: int = 1) -> list[dict[str, Any]]:
    """`count` events as posthog-js makes them, sessions one after the other; the same per seed."""
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    at = _EPOCH
    while len(events) < count:
        session = _Session(rng, at)
        session_events = [_pageview(session, at)]
        length = rng.randrange(8, 40)
        identify_at = rng.randrange(1, length) if not session.identified and rng.random() < 0.8 \
            else -1
        for index in range(1, length):
            at += dt.timedelta(milliseconds=rng.randrange(200, 20000))
            roll = rng.random()
            if index == identify_at:
                make: Callable[[_Session, dt.datetime], dict[str, Any]] = _identify
            elif roll < 0.33:
                make = _pageview
            elif roll < 0.71:
                make = _autocapture
            elif roll < 0.86:
                make = _app_event
            elif roll < 0.975:
                make = _pageleave
            else:
                make = _exception
            session_events.append(make(session, at))
        events.extend(session_events)
        at += dt.timedelta(seconds=rng.randrange(5, 600))
    return events[:count]


def events(profile: str, count: int, seed: int = 1) -> list[dict[str, Any]]:
    """`count` events of `profile` ("small" or "posthog-js"), the same ones for the same seed."""
    if profile == "small":
        return pageviews(count, seed=seed)
    if profile == "posthog-js":
        return posthog_js_events(count, seed=seed)
    raise ValueError(f"unknown event profile {profile!r}; known: {', '.join(PROFILES)}")


def api_key(profile: str) -> str | None:
    """The `api_key` a `ph_send_batch` line of `profile` carries (posthog-js's token), or None."""
    return TEST_KEY if profile == "posthog-js" else None


def main() -> int:
    """Print what a profile's events are like: count by event name, sizes, properties."""
    import argparse
    import json
    import statistics
    from collections import Counter

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("profile", nargs="?", default="posthog-js", choices=PROFILES)
    parser.add_argument("--events", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    sample = events(args.profile, args.events, args.seed)
    sizes = [len(json.dumps(e, separators=(",", ":"))) for e in sample]
    print(f"{args.profile}: {len(sample):,} events, {statistics.fmean(sizes):,.0f} bytes mean "
          f"({min(sizes):,}-{max(sizes):,}), "
          f"{statistics.fmean(len(e['properties']) for e in sample):.1f} properties mean")
    by_name: dict[str, list[int]] = {}
    for event, size in zip(sample, sizes, strict=True):
        by_name.setdefault(event["event"], []).append(size)
    for name, count in Counter(e["event"] for e in sample).most_common():
        print(f"  {name:<18} {count / len(sample):6.1%}  {statistics.fmean(by_name[name]):7,.0f} B")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
