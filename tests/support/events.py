"""One event through the product's batch validation, for tests that check one event at a time."""

from __future__ import annotations

from datetime import datetime

from sidecar.wire.events import EventError, normalize_batch


def normalize_event(raw: object, *, now: datetime, lib_version: str) -> str:
    """`normalize_batch` of one event: its normalised JSON text, or `EventError` with the reason
    the batch answer would give."""
    bodies, rejected = normalize_batch([raw], now=now, lib_version=lib_version)
    if rejected:
        raise EventError(rejected[0][1])
    return bodies[0]
