"""The process: one top-level nursery owning the stdio server, the sender and the startup drain.

Shutdown is a cascade. A stop (stdin EOF, SIGTERM/SIGINT, `shutdown`, or stdout gone) ends
reading; calls in flight get a short grace; the sender starts no new request and the one on the
wire gets a second to be answered while the writer sends what is owed; then the sender is
cancelled (its leases are handed back) and the database is checkpointed and closed.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from sidecar import __version__
from sidecar.delivery.sender import Sender
from sidecar.process.config import Config
from sidecar.process.methods import METHODS, Services
from sidecar.process.parent import watch_parent
from sidecar.process.stdio import READ_CHUNK
from sidecar.process.unpacked import tidy_unpack_folders
from sidecar.process.waits import cancel_when_set
from sidecar.queue.astore import AsyncStore
from sidecar.queue.store import StorageUnavailable
from sidecar.wire.framing import Frame, LineDecoder
from sidecar.wire.rpc import Dispatcher, Lane, Parsed, Turn, parse_line

if TYPE_CHECKING:
    import httpx

log = logging.getLogger(__name__)


def _make_transport(
    url: str, transport: httpx.AsyncBaseTransport | None
) -> httpx.AsyncBaseTransport:
    if transport is not None:
        return transport
    from sidecar.delivery import httpclient  # noqa: PLC0415 - httpx loads on the first send, not at start

    return httpclient.make_transport(url)


# Responses waiting for the writer; the reader stops reading while this is full.
OUTBOUND_BUFFER = 256
# The writer joins waiting responses into one write up to about this many bytes.
WRITE_COALESCE_BYTES = 1024 * 1024
# `BESIDE` lines (ph_flush) a client may have open before reading pauses. Each is a task
# parked on the sender's state, so the bound is about a runaway client, not cost.
MAX_BESIDE_LINES = 256
# `OVERLAPPING` lines (ph_send_batch) in progress at once (see `serve_lines`); the reader
# waits beyond.
MAX_OVERLAPPING_LINES = 8
# Shutdown budget (the contract allows 2 s): calls in flight, then the last responses and
# the request on the wire, then handing back leases.
IN_FLIGHT_GRACE_S = 0.5
FINAL_GRACE_S = 1.0


async def run(
    config: Config,
    stdin: trio.abc.ReceiveStream,
    stdout: trio.abc.SendStream,
    *,
    remember_secret: Callable[[str], None] = lambda secret: None,
    transport: httpx.AsyncBaseTransport | None = None,
    handle_signals: bool = True,
) -> None:
    """Serve until a stop, then shut down in order. Returns when everything is closed."""
    store = AsyncStore(config.db_path, config.durability)
    await store.open()
    if config.api_key:
        remember_secret(config.api_key)
    stopping = trio.Event()
    sender = Sender(config, store, lambda: _make_transport(config.host, transport))
    try:
        services = Services(config, store, sender, stopping, remember_secret)
        dispatcher = Dispatcher(METHODS, services)
        send_out, receive_out = trio.open_memory_channel[bytes](OUTBOUND_BUFFER)
        async with trio.open_nursery() as nursery:
            writer_done = trio.Event()
            nursery.start_soon(write_lines, stdout, receive_out, stopping, writer_done)
            nursery.start_soon(sender.run)
            await nursery.start(startup_drain, store, sender)
            if handle_signals:
                nursery.start_soon(watch_signals, stopping)
                # Process-level like the signals (on Linux a dead parent arrives as SIGTERM).
                nursery.start_soon(watch_parent, stopping)
                nursery.start_soon(tidy_unpack_folders)
            log.info("telemetry-sidecar %s ready; capture host %s", __version__, config.host)
            await serve_lines(stdin, dispatcher, send_out, stopping)
            with trio.move_on_after(FINAL_GRACE_S):
                await sender.finish_in_flight()
                await writer_done.wait()
            nursery.cancel_scope.cancel()
    finally:
        with trio.CancelScope(shield=True):
            await sender.aclose()
            await store.aclose()
    log.info("stopped")


async def serve_lines(
    stdin: trio.abc.ReceiveStream,
    dispatcher: Dispatcher[Services],
    send_out: trio.MemorySendChannel[bytes],
    stopping: trio.Event,
) -> None:
    """Read request lines until EOF or a stop, answer each, then close the outbound channel.

    Each line is ordered by its lane (`rpc.Lane`, from the method table). Lines are answered in
    the order they came, one after the other, with two exceptions. A `BESIDE` line
    (`ph_flush`) runs beside the lines after it. And consecutive `OVERLAPPING` lines
    (`ph_send_batch`) overlap: each validates its events while the ones before it are being
    written to the queue, then waits its turn (the `Turn` its call is handed) to write, and
    answers after the lines before it. Lines whose writes wait together go into the queue in
    one transaction and one sync (`AsyncStore.enqueue`). The queue and the answers keep the
    order of the lines, while JSON work and SQLite work run at once.
    """
    decoder = LineDecoder()
    async with send_out, trio.open_nursery() as calls:
        lines = _LineHandler(dispatcher, send_out, calls)
        with trio.CancelScope() as reading:
            calls.start_soon(cancel_when_set, stopping, reading)
            while not stopping.is_set():
                chunk = await stdin.receive_some(READ_CHUNK)
                frames = decoder.feed(chunk) if chunk else decoder.finish()
                for frame in frames:
                    await lines.handle(frame)
                    if stopping.is_set():
                        break
                if not chunk:
                    log.info("stdin closed; stopping")
                    break
        stopping.set()
        calls.cancel_scope.deadline = trio.current_time() + IN_FLIGHT_GRACE_S


class _LineHandler:
    """Answers lines in order (see `serve_lines`); calls run in `calls`, a nursery."""

    def __init__(
        self,
        dispatcher: Dispatcher[Services],
        send_out: trio.MemorySendChannel[bytes],
        calls: trio.Nursery,
    ) -> None:
        self._dispatcher = dispatcher
        self._send_out = send_out
        self._calls = calls
        self._beside = trio.Semaphore(MAX_BESIDE_LINES)
        self._overlapping = trio.Semaphore(MAX_OVERLAPPING_LINES)
        # Invariant: set once every line read so far is answered (or will never be).
        self._earlier_done = trio.Event()
        self._earlier_done.set()  # no line before the first
        # Invariant: set once every line read so far has its writes in the queue's order;
        # set no later than `_earlier_done`.
        self._earlier_placed = self._earlier_done

    async def handle(self, frame: Frame) -> None:
        """Answer one line, or start answering it; returns when the next line may be read."""
        parsed = parse_line(frame)
        if not isinstance(parsed, Parsed):  # the error line owed instead, sent in order
            await self._earlier_done.wait()
            await self._send_out.send(parsed)
            return
        lane = self._dispatcher.lane(parsed)
        if lane is Lane.OVERLAPPING:
            await self._overlapping.acquire()
            turn = Turn(self._earlier_placed, placed := trio.Event())
            done = trio.Event()
            self._calls.start_soon(self._answer_in_turn, parsed, turn, self._earlier_done, done)
            self._earlier_placed, self._earlier_done = placed, done
            return
        await self._earlier_done.wait()
        self._earlier_placed = self._earlier_done
        if lane is Lane.BESIDE:
            await self._beside.acquire()
            self._calls.start_soon(self._answer_later, parsed, self._send_out.clone())
        else:
            response = await self._dispatcher.respond(parsed)
            if response is not None:
                await self._send_out.send(response)

    async def _answer_in_turn(
        self, parsed: Parsed, turn: Turn, earlier: trio.Event, done: trio.Event
    ) -> None:
        try:
            response = await self._dispatcher.respond(parsed, turn)
            turn.take_place()  # a call that wrote nothing holds no place
            await earlier.wait()
            if response is not None:
                await self._send_out.send(response)
        finally:
            turn.take_place()
            done.set()
            self._overlapping.release()

    async def _answer_later(self, parsed: Parsed, out: trio.MemorySendChannel[bytes]) -> None:
        async with out:
            try:
                response = await self._dispatcher.respond(parsed)
                if response is not None:
                    await out.send(response)
            finally:
                self._beside.release()


async def write_lines(
    stdout: trio.abc.SendStream,
    receive_out: trio.MemoryReceiveChannel[bytes],
    stopping: trio.Event,
    done: trio.Event,
) -> None:
    """The only writer of the protocol stream: one write per wake-up, whole lines only."""
    broken = False
    async with receive_out:
        async for line in receive_out:
            if broken:
                continue
            pending = [line]
            size = len(line)
            # Coalesce small answers, but never copy a backlog of big ones into one buffer.
            while size < WRITE_COALESCE_BYTES:
                try:
                    pending.append(receive_out.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break  # EndOfChannel: the last senders closed; write what we hold first
                size += len(pending[-1])
            try:
                await stdout.send_all(b"".join(pending))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
                log.warning("stdout is gone (%s); stopping", type(exc).__name__)
                broken = True
                stopping.set()
    done.set()


async def startup_drain(
    store: AsyncStore,
    sender: Sender,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Take back the leases of dead processes and start delivering an earlier run's backlog.

    Reports started once the backlog is measured, so the count is the earlier run's alone.
    """
    try:
        backlog = await store.run(lambda s: s.depth())
    except StorageUnavailable as exc:
        log.warning("startup drain skipped: %s", exc)
        task_status.started()
        return
    task_status.started()
    try:
        freed = await store.run(lambda s: s.recover_leases())
    except StorageUnavailable as exc:
        log.warning("could not take back old leases: %s", exc)
        freed = 0
    if freed:
        log.info("took back %d events leased by a process that is gone", freed)
    if backlog:
        log.info("%d events queued by an earlier run; delivering", backlog)
    if freed or backlog:
        sender.wake()


async def watch_signals(stopping: trio.Event) -> None:
    """Turn SIGTERM and SIGINT into a clean stop."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            log.info("received %s; stopping", signal.Signals(signum).name)
            stopping.set()
            return


