"""A trio waiting helper shared by the app, the sender and the parent watch."""

from __future__ import annotations

import trio


async def cancel_when_set(event: trio.Event, scope: trio.CancelScope) -> None:
    """Cancel `scope` once `event` is set: run it beside a wait to end that wait early."""
    await event.wait()
    scope.cancel()
