"""Shared helpers for the process-level tests."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

# Short backoffs so process tests finish quickly; the delivery rules themselves are
# checked with trio's mock clock in the unit tests.
FAST_RETRIES = ("--backoff-base", "0.05", "--backoff-max", "0.2")


def event(name: str = "test event", distinct_id: str = "user-1", **extra: Any) -> dict[str, Any]:
    """A small valid PostHog event."""
    return {"event": name, "distinct_id": distinct_id, "properties": {"n": 1}, **extra}


def numbered(count: int, start: int = 0) -> list[dict[str, Any]]:
    """Events whose `properties.n` numbers them, to check order and loss."""
    return [
        {"event": "numbered", "distinct_id": "user-1", "properties": {"n": i}}
        for i in range(start, start + count)
    ]


def n_values(events: Sequence[dict[str, Any]]) -> list[int]:
    """The `properties.n` of each event."""
    return [e["properties"]["n"] for e in events]
