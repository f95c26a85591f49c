"""The six JSON-RPC methods of the contract, and the table (`METHODS`) that gives each its lane.

Each handler takes a `Call` whose context is the app's `Services`; a call that touches the
queue first awaits its turn (`Call.turn`), so the queue sees the lines in the order they came.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import trio

from sidecar import __version__
from sidecar.delivery.sender import Sender
from sidecar.process.config import Config
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import StorageUnavailable, Store
from sidecar.wire.events import is_unicode_text, normalize_batch
from sidecar.wire.rpc import (
    ERROR_STORAGE_UNAVAILABLE,
    Call,
    CallError,
    Lane,
    Method,
    Result,
    invalid_params,
    success,
)
from sidecar.wire.stdjson import LongInt

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH_EVENTS = 10_000
MAX_API_KEY_CHARS = 256
DEFAULT_FLUSH_TIMEOUT_S = 10.0
MAX_FLUSH_TIMEOUT_S = 3600.0


@dataclass(frozen=True, slots=True)
class Services:
    """What the methods work with; built once by the app."""

    config: Config
    store: AsyncStore
    sender: Sender
    stopping: trio.Event
    remember_secret: Callable[[str], None]


async def _stored(call: Call[Services], operation: Callable[[Store], T]) -> T:
    """Run a store operation in the call's turn; a disk or file that will not take it answers
    -32001."""
    await call.turn.wait()
    try:
        return await call.context.store.run(operation)
    except StorageUnavailable as exc:
        raise _storage_error(exc) from exc
    finally:
        call.turn.take_place()


def _storage_error(exc: StorageUnavailable) -> CallError:
    """-32001: the disk or file will not take the write; nothing of the call was stored."""
    return CallError(ERROR_STORAGE_UNAVAILABLE, "Storage unavailable", str(exc))


async def ph_send_batch(call: Call[Services], *, batch: object, api_key: object = None) -> Result:
    """Validate, store and acknowledge a batch of events; the answer follows the commit."""
    ctx = call.context
    if not isinstance(batch, list):
        return invalid_params("'batch' must be a list of events")
    if len(batch) > MAX_BATCH_EVENTS:
        return invalid_params(f"'batch' holds {len(batch)} events; at most {MAX_BATCH_EVENTS}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        return invalid_params("'api_key' must be a non-empty string")
    if isinstance(api_key, str) and len(api_key) > MAX_API_KEY_CHARS:
        # PostHog refuses keys over 64 bytes; an unbounded one is kept in every row and log mask.
        return invalid_params(f"'api_key' is longer than {MAX_API_KEY_CHARS} characters")
    if isinstance(api_key, str) and not is_unicode_text(api_key):
        # The key is written to the queue and to capture as UTF-8, which has no such character.
        return invalid_params("'api_key' holds a lone surrogate, which is not Unicode text")
    key = api_key if isinstance(api_key, str) else ctx.config.api_key
    if key is None:
        return invalid_params("no 'api_key' in the call and none given with --api-key")
    ctx.remember_secret(key)
    bodies, invalid = normalize_batch(batch, now=datetime.now(UTC), lib_version=__version__)
    rejected = [{"index": index, "error": reason} for index, reason in invalid]
    max_queue = ctx.config.max_queue
    if bodies:
        await call.turn.wait()
        try:
            result = await ctx.store.enqueue(
                key, bodies, max_queue=max_queue, joined=call.turn.take_place
            )
        except StorageUnavailable as exc:
            raise _storage_error(exc) from exc
        accepted, queued = result.accepted, result.queued
        if result.dropped_overflow:
            log.warning("queue full: dropped the %d oldest events", result.dropped_overflow)
    else:
        accepted, queued = 0, await _stored(call, lambda store: store.depth())
    if accepted:
        ctx.sender.wake()
    return success({"accepted": accepted, "rejected": rejected, "queued": queued})


async def ph_flush(
    call: Call[Services],
    *,
    timeout: object = DEFAULT_FLUSH_TIMEOUT_S,  # noqa: ASYNC109 - the contract's param name
) -> Result:
    """Deliver what can be delivered before `timeout` seconds pass."""
    ctx = call.context
    if isinstance(timeout, LongInt):  # a JSON integer too long to convert: far out of range
        return invalid_params(f"'timeout' must be between 0 and {MAX_FLUSH_TIMEOUT_S:g} seconds")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return invalid_params("'timeout' must be a number of seconds")
    # Compared, not converted: math.isfinite(10**400) would raise. NaN fails both comparisons.
    if not 0 <= timeout <= MAX_FLUSH_TIMEOUT_S:
        return invalid_params(f"'timeout' must be between 0 and {MAX_FLUSH_TIMEOUT_S:g} seconds")
    delivered = await ctx.sender.flush_until(trio.current_time() + timeout, ctx.stopping)
    queued = await _stored(call, lambda store: store.depth())
    return success({"delivered": delivered, "queued": queued})


async def ph_status(call: Call[Services]) -> Result:
    """Queue depth, counters and delivery state."""
    ctx = call.context
    status = await _stored(call, lambda store: store.status())
    oldest_age = None
    if status.oldest_created_at is not None:
        oldest_age = round(max(0.0, time.time() - status.oldest_created_at), 3)
    next_attempt = ctx.sender.next_attempt_in() if status.queued else None
    answer: dict[str, Any] = {
        "version": __version__,
        "queued": status.queued,
        "oldest_event_age_s": oldest_age,
        "delivered": status.delivered,
        "dropped": status.dropped,
        "last_error": status.last_error,
        "next_attempt_in_s": None if next_attempt is None else round(next_attempt, 3),
        "host": ctx.config.host,
        "opted_out": status.opted_out,
        "quarantined_db": None if ctx.store.quarantined is None else str(ctx.store.quarantined),
        "durability": ctx.store.durability.value,
    }
    return success(answer)


async def ph_set_opt_out(call: Call[Services], *, opt_out: object) -> Result:
    """Persist the user's choice; opting out purges the queue."""
    if not isinstance(opt_out, bool):
        return invalid_params("'opt_out' must be true or false")
    purged = await _stored(call, lambda store: store.set_opt_out(opt_out))
    log.info("opted %s; purged %d events", "out" if opt_out else "in", purged)
    return success({"opted_out": opt_out, "purged": purged})


async def ping(call: Call[Services]) -> Result:
    """Liveness and version."""
    return success({"version": __version__})


async def shutdown(call: Call[Services]) -> Result:
    """Answer, then exit cleanly; queued events stay on disk."""
    call.context.stopping.set()
    return success({"ok": True})


# The method table: each method's handler and its line's lane (see `rpc.Lane`).
METHODS: Mapping[str, Method] = {
    # Validates its events beside the lines before it, then writes and answers in its turn.
    "ph_send_batch": Method(ph_send_batch, Lane.OVERLAPPING),
    # May wait up to its timeout: later lines must not wait behind it.
    "ph_flush": Method(ph_flush, Lane.BESIDE),
    "ph_status": Method(ph_status, Lane.IN_ORDER),
    "ph_set_opt_out": Method(ph_set_opt_out, Lane.IN_ORDER),
    "ping": Method(ping, Lane.IN_ORDER),
    "shutdown": Method(shutdown, Lane.IN_ORDER),
}
