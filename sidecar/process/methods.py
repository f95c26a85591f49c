"""The six JSON-RPC methods of the contract. Each takes the `Services` as its context."""

from __future__ import annotations

import contextvars
import inspect
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

import trio
from jsonrpcserver import InvalidParams, JsonRpcError, Result, Success
from jsonrpcserver.methods import Methods

from sidecar import __version__
from sidecar.delivery.sender import Sender
from sidecar.process.config import Config
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import StorageUnavailable, Store
from sidecar.wire.events import normalize_batch
from sidecar.wire.rpc import ERROR_STORAGE_UNAVAILABLE

log = logging.getLogger(__name__)
T = TypeVar("T")

MAX_BATCH_EVENTS = 10_000
MAX_API_KEY_CHARS = 256
DEFAULT_FLUSH_TIMEOUT_S = 10.0
MAX_FLUSH_TIMEOUT_S = 3600.0
# Methods that may wait; a line calling one runs beside later lines instead of before them.
SLOW_METHODS = frozenset({"ph_flush"})
# Set by the stdio server on a line that overlaps the lines before it: their completion.
EARLIER_LINES_DONE: contextvars.ContextVar[trio.Event | None] = contextvars.ContextVar(
    "EARLIER_LINES_DONE", default=None
)


@dataclass(frozen=True, slots=True)
class Services:
    """What the methods work with; built once by the app."""

    config: Config
    store: AsyncStore
    sender: Sender
    stopping: trio.Event
    remember_secret: Callable[[str], None]


async def _stored(ctx: Services, operation: Callable[[Store], T]) -> T:
    """Run a store operation; a disk or file that will not take it answers -32001.

    On a line that overlaps the ones before it, the operation waits until they are done, so
    the queue sees lines in the order they came.
    """
    earlier = EARLIER_LINES_DONE.get()
    if earlier is not None:
        await earlier.wait()
    try:
        return await ctx.store.run(operation)
    except StorageUnavailable as exc:
        raise JsonRpcError(ERROR_STORAGE_UNAVAILABLE, "Storage unavailable", str(exc)) from exc


async def ph_send_batch(ctx: Services, *, batch: object, api_key: object = None) -> Result:
    """Validate, store and acknowledge a batch of events; the answer follows the commit."""
    if not isinstance(batch, list):
        return InvalidParams("'batch' must be a list of events")
    if len(batch) > MAX_BATCH_EVENTS:
        return InvalidParams(f"'batch' holds {len(batch)} events; at most {MAX_BATCH_EVENTS}")
    if api_key is not None and (not isinstance(api_key, str) or not api_key.strip()):
        return InvalidParams("'api_key' must be a non-empty string")
    if isinstance(api_key, str) and len(api_key) > MAX_API_KEY_CHARS:
        # PostHog refuses keys over 64 bytes; an unbounded one is kept in every row and log mask.
        return InvalidParams(f"'api_key' is longer than {MAX_API_KEY_CHARS} characters")
    key = api_key if isinstance(api_key, str) else ctx.config.api_key
    if key is None:
        return InvalidParams("no 'api_key' in the call and none given with --api-key")
    ctx.remember_secret(key)
    bodies, invalid = normalize_batch(batch, now=datetime.now(UTC), lib_version=__version__)
    rejected = [{"index": index, "error": reason} for index, reason in invalid]
    max_queue = ctx.config.max_queue
    if bodies:
        result = await _stored(ctx, lambda store: store.enqueue(key, bodies, max_queue=max_queue))
        accepted, queued = result.accepted, result.queued
        if result.dropped_overflow:
            log.warning("queue full: dropped the %d oldest events", result.dropped_overflow)
    else:
        accepted, queued = 0, await _stored(ctx, lambda store: store.depth())
    if accepted:
        ctx.sender.wake()
    return Success({"accepted": accepted, "rejected": rejected, "queued": queued})


async def ph_flush(ctx: Services, *, timeout: object = DEFAULT_FLUSH_TIMEOUT_S) -> Result:  # noqa: ASYNC109
    """Deliver what can be delivered before `timeout` seconds pass."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float):
        return InvalidParams("'timeout' must be a number of seconds")
    # Compared, not converted: math.isfinite(10**400) would raise. NaN fails both comparisons.
    if not 0 <= timeout <= MAX_FLUSH_TIMEOUT_S:
        return InvalidParams(f"'timeout' must be between 0 and {MAX_FLUSH_TIMEOUT_S:g} seconds")
    delivered = await ctx.sender.flush_until(trio.current_time() + timeout, ctx.stopping)
    queued = await _stored(ctx, lambda store: store.depth())
    return Success({"delivered": delivered, "queued": queued})


async def ph_status(ctx: Services) -> Result:
    """Queue depth, counters and delivery state."""
    status = await _stored(ctx, lambda store: store.status())
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
    }
    return Success(answer)


async def ph_set_opt_out(ctx: Services, *, opt_out: object) -> Result:
    """Persist the user's choice; opting out purges the queue."""
    if not isinstance(opt_out, bool):
        return InvalidParams("'opt_out' must be true or false")
    purged = await _stored(ctx, lambda store: store.set_opt_out(opt_out))
    log.info("opted %s; purged %d events", "out" if opt_out else "in", purged)
    return Success({"opted_out": opt_out, "purged": purged})


async def ping(ctx: Services) -> Result:
    """Liveness and version."""
    return Success({"version": __version__})


async def shutdown(ctx: Services) -> Result:
    """Answer, then exit cleanly; queued events stay on disk."""
    ctx.stopping.set()
    return Success({"ok": True})


METHODS: Methods = {
    "ph_send_batch": ph_send_batch,
    "ph_flush": ph_flush,
    "ph_status": ph_status,
    "ph_set_opt_out": ph_set_opt_out,
    "ping": ping,
    "shutdown": shutdown,
}

# jsonrpcserver checks params with `inspect.signature(method).bind(...)` on every call, and
# building a signature took more time than binding it. `inspect.signature` returns a
# function's `__signature__` when one is set, so each method carries its own, built once.
for _method in METHODS.values():
    _method.__signature__ = inspect.signature(_method)  # type: ignore[attr-defined]
