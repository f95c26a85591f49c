"""The app's nursery and shutdown cascade, in process, over trio memory streams."""

from __future__ import annotations

import gzip
import json
import sqlite3
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from sidecar import __version__
from sidecar.process import app
from sidecar.process.config import Config
from sidecar.wire import rpc

KEY = "phc_test_key_1"
GUARD_S = 10  # hang guard only


def _config(tmp_path: Path, **overrides: Any) -> Config:
    return Config(data_dir=tmp_path, host="http://127.0.0.1:1", api_key=KEY, **overrides)


def _line(method: str, request_id: int, **params: Any) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method, "id": request_id}
    if params:
        message["params"] = params
    return json.dumps(message).encode() + b"\n"


class Wire:
    """The app's stdin and stdout as memory streams, with a line reader for stdout."""

    def __init__(self) -> None:
        self.to_app, self.app_stdin = trio.testing.memory_stream_one_way_pair()
        self.app_stdout, self.from_app = trio.testing.memory_stream_one_way_pair()
        self._buffer = b""

    async def read_line(self) -> bytes:
        while b"\n" not in self._buffer:
            chunk = await self.from_app.receive_some()
            if not chunk:
                raise EOFError(self._buffer)
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line

    async def read_message(self) -> Any:
        return json.loads(await self.read_line())

    async def read_rest(self) -> bytes:
        while chunk := await self.from_app.receive_some():
            self._buffer += chunk
        rest, self._buffer = self._buffer, b""
        return rest


def _accepting_transport(
    received: list[dict[str, Any]], arrived: trio.Event | None = None
) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        received.append(json.loads(gzip.decompress(request.content)))
        if arrived is not None:
            arrived.set()
        return httpx.Response(200, json={"status": 1})

    return httpx.MockTransport(handler)


def _offline_transport() -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("offline", request=request)

    return httpx.MockTransport(handler)


async def _run(config: Config, wire: Wire, transport: httpx.MockTransport) -> None:
    await app.run(
        config, wire.app_stdin, wire.app_stdout, transport=transport, handle_signals=False
    )
    await wire.app_stdout.aclose()


async def test_every_line_is_answered_before_exit_on_eof(tmp_path: Path) -> None:
    """Lines written just before EOF are all answered, in order, and then the app returns."""
    wire = Wire()
    received: list[dict[str, Any]] = []
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, _accepting_transport(received))
            batch = [{"event": "e", "distinct_id": "u"}]
            await wire.to_app.send_all(
                _line("ping", 1) + _line("ph_send_batch", 2, batch=batch) + _line("ping", 3)
            )
            await wire.to_app.aclose()
            rest = await wire.read_rest()
    answers = [json.loads(line) for line in rest.splitlines()]
    assert [a["id"] for a in answers] == [1, 2, 3]
    assert answers[1]["result"]["accepted"] == 1


async def test_shutdown_answers_then_returns_with_stdin_still_open(tmp_path: Path) -> None:
    """`shutdown` is answered, and the app exits without waiting for stdin to close."""
    wire = Wire()
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, _offline_transport())
            await wire.to_app.send_all(_line("shutdown", 7) + _line("ping", 8))
            rest = await wire.read_rest()
    answers = [json.loads(line) for line in rest.splitlines()]
    assert answers == [{"jsonrpc": "2.0", "result": {"ok": True}, "id": 7}]


async def test_flush_in_flight_is_answered_when_stdin_closes(tmp_path: Path) -> None:
    """A long ph_flush (offline) returns early with its figures when the app's stdin closes."""
    wire = Wire()
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, _offline_transport())
            batch = [{"event": "e", "distinct_id": "u"}]
            await wire.to_app.send_all(_line("ph_send_batch", 1, batch=batch))
            assert (await wire.read_message())["result"]["queued"] == 1
            await wire.to_app.send_all(_line("ph_flush", 2, timeout=3600) + _line("ping", 3))
            assert (await wire.read_message())["id"] == 3  # the flush does not block the ping
            await wire.to_app.aclose()
            flush = await wire.read_message()
    assert flush == {"jsonrpc": "2.0", "result": {"delivered": 0, "queued": 1}, "id": 2}


async def test_new_events_reach_the_server_without_a_flush(tmp_path: Path) -> None:
    """An accepted batch wakes the sender: the server receives it with no flush call."""
    wire = Wire()
    received: list[dict[str, Any]] = []
    arrived = trio.Event()
    transport = _accepting_transport(received, arrived)
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, transport)
            batch = [{"event": "woken", "distinct_id": "u"}]
            await wire.to_app.send_all(_line("ph_send_batch", 1, batch=batch))
            await wire.read_message()
            await arrived.wait()
            await wire.to_app.aclose()
            await wire.read_rest()
    assert [e["event"] for e in received[0]["batch"]] == ["woken"]
    assert received[0]["api_key"] == KEY


async def test_stdout_gone_stops_the_app(tmp_path: Path) -> None:
    """When the app stops reading (stdout closed), the sidecar stops instead of spinning."""
    wire = Wire()
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                app.run,
                _config(tmp_path),
                wire.app_stdin,
                wire.app_stdout,
            )
            await wire.from_app.aclose()
            await wire.to_app.send_all(_line("ping", 1))
    # Reaching here means app.run returned on its own.


async def test_writer_sends_lines_queued_before_the_channel_closed() -> None:
    """Lines still queued when the last sender closes are all written, and the writer ends."""
    send_out, receive_out = trio.open_memory_channel[bytes](8)
    app_stdout, from_app = trio.testing.memory_stream_one_way_pair()
    for n in range(3):
        send_out.send_nowait(b'{"id":%d}\n' % n)
    await send_out.aclose()  # closed before the writer ever runs
    done = trio.Event()
    with trio.fail_after(GUARD_S):
        await app.write_lines(app_stdout, receive_out, trio.Event(), done)
        await app_stdout.aclose()
        written = b""
        while chunk := await from_app.receive_some():
            written += chunk
    assert written == b'{"id":0}\n{"id":1}\n{"id":2}\n'
    assert done.is_set()


async def test_overlapping_send_batch_lines_keep_the_queue_and_answers_in_line_order(
    tmp_path: Path,
) -> None:
    """ph_send_batch lines overlap each other, but the queue holds their events in line order
    and the answers leave in line order, bad lines and their errors included; a status line
    after them counts every event before it."""
    wire = Wire()
    lines: list[bytes] = []
    expected_ids: list[int | None] = []
    for i in range(120):
        if i % 10 == 3:
            lines.append(b'{"jsonrpc": "2.0", "method": "ph_send_batch", "id": oops}\n')
            expected_ids.append(None)
        elif i % 10 == 7:
            lines.append(_line("ph_send_batch", i, batch="not a list"))
            expected_ids.append(i)
        else:
            lines.append(_line("ph_send_batch", i, batch=[{"event": f"e{i}", "distinct_id": "u"}]))
            expected_ids.append(i)
    lines.append(_line("ph_status", 1000))
    expected_ids.append(1000)
    config = _config(tmp_path, max_queue=10_000)
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, config, wire, _offline_transport())
            await wire.to_app.send_all(b"".join(lines))
            answers = [await wire.read_message() for _ in expected_ids]
            await wire.to_app.aclose()
            await wire.read_rest()

    assert [a["id"] for a in answers] == expected_ids
    stored = [i for i in range(120) if i % 10 not in (3, 7)]
    assert answers[-1]["result"]["queued"] == len(stored)
    with sqlite3.connect(config.db_path) as db:
        names = [json.loads(body)["event"] for (body,) in
                 db.execute("SELECT body FROM ph_event_queue ORDER BY id")]
    assert names == [f"e{i}" for i in stored]


async def test_a_line_that_reaches_the_queue_late_still_goes_before_the_next(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Overlapping lines write to the queue in line order even when a later line gets to its
    write first: here each line is held back longer than the one after it."""
    count = 30
    respond = rpc.Dispatcher.respond

    async def later_lines_first(
        self: rpc.Dispatcher[Any], parsed: rpc.Parsed, turn: rpc.Turn = rpc.IN_TURN
    ) -> bytes | None:
        if isinstance(parsed.body, dict) and isinstance(parsed.body.get("id"), int):
            await trio.sleep((count - parsed.body["id"]) * 0.001)
        return await respond(self, parsed, turn)

    monkeypatch.setattr(rpc.Dispatcher, "respond", later_lines_first)
    wire = Wire()
    config = _config(tmp_path)
    lines = [_line("ph_send_batch", i, batch=[{"event": f"e{i}", "distinct_id": "u"}])
             for i in range(count)]
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, config, wire, _offline_transport())
            await wire.to_app.send_all(b"".join(lines))
            answers = [await wire.read_message() for _ in range(count)]
            await wire.to_app.aclose()
            await wire.read_rest()

    assert [a["id"] for a in answers] == list(range(count))
    with sqlite3.connect(config.db_path) as db:
        names = [json.loads(body)["event"] for (body,) in
                 db.execute("SELECT body FROM ph_event_queue ORDER BY id")]
    assert names == [f"e{i}" for i in range(count)]


async def test_a_batch_line_with_a_flush_runs_beside_the_lines_after_it(tmp_path: Path) -> None:
    """A JSON-RPC batch line holding a ph_flush does not hold up the next line (offline, the
    flush waits its whole timeout): the ping after it is answered first."""
    wire = Wire()
    flush = {"jsonrpc": "2.0", "method": "ph_flush", "params": {"timeout": 3600}, "id": 2}
    status = {"jsonrpc": "2.0", "method": "ph_status", "id": 1}
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, _offline_transport())
            batch = [{"event": "e", "distinct_id": "u"}]
            await wire.to_app.send_all(_line("ph_send_batch", 0, batch=batch))
            assert (await wire.read_message())["result"]["queued"] == 1
            await wire.to_app.send_all(
                json.dumps([status, flush]).encode() + b"\n" + _line("ping", 3)
            )
            assert (await wire.read_message())["id"] == 3
            await wire.to_app.aclose()
            answers = await wire.read_message()
    assert [a["id"] for a in answers] == [1, 2]


@pytest.mark.parametrize("api_key", ["\\ud800", "phc_\\ud800x", "\\udc00", "\\udfff"])
async def test_a_lone_surrogate_in_api_key_is_invalid_params_and_stores_nothing(
    tmp_path: Path, api_key: str
) -> None:
    """An api_key holding a lone surrogate (a JSON escape) is -32602 naming api_key, not
    -32603, with an empty batch too; nothing is stored and the next call works."""
    wire = Wire()
    event = '{"event":"e","distinct_id":"d"}'
    lines = [
        f'{{"jsonrpc":"2.0","id":1,"method":"ph_send_batch","params":{{"batch":[{event}],'
        f'"api_key":"{api_key}"}}}}\n',
        f'{{"jsonrpc":"2.0","id":2,"method":"ph_send_batch","params":{{"batch":[],'
        f'"api_key":"{api_key}"}}}}\n',
    ]
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, _offline_transport())
            await wire.to_app.send_all("".join(lines).encode("ascii") + _line("ph_status", 3))
            answers = [await wire.read_message() for _ in range(3)]
            await wire.to_app.aclose()
            await wire.read_rest()
    for answer in answers[:2]:
        assert answer["error"]["code"] == -32602, answer
        assert "api_key" in answer["error"]["data"]
    assert answers[2]["result"]["queued"] == 0


LONG = "9" * (sys.get_int_max_str_digits() + 1)  # past what int() takes from text


async def test_integers_past_the_conversion_limit_are_answered_by_id_and_reach_capture(
    tmp_path: Path,
) -> None:
    """A request holding an integer too long for int() is answered by its id: an event property
    goes to capture as the same digits, a long id is echoed, a long timeout is -32602."""
    wire = Wire()
    bodies: list[bytes] = []
    arrived = trio.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        bodies.append(gzip.decompress(request.content))
        arrived.set()
        return httpx.Response(200, json={"status": 1})

    properties = f'{{"n":-{LONG},"deep":[{{"m":{LONG}}}]}}'
    event = f'{{"event":"long","distinct_id":{LONG},"properties":{properties}}}'
    lines = [
        f'{{"jsonrpc":"2.0","id":1,"method":"ph_send_batch","params":{{"batch":[{event}]}}}}',
        f'{{"jsonrpc":"2.0","id":{LONG},"method":"ping"}}',
        f'{{"jsonrpc":"2.0","id":3,"method":"ph_flush","params":{{"timeout":{LONG}}}}}',
        f'{{"jsonrpc":"2.0","id":4,"method":"ph_set_opt_out","params":{{"opt_out":-{LONG}}}}}',
        f'{{"jsonrpc":"2.0","id":5,"method":"ph_send_batch","params":{{"batch":[],"api_key":{LONG}}}}}',
    ]
    with trio.fail_after(GUARD_S):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_run, _config(tmp_path), wire, httpx.MockTransport(handler))
            await wire.to_app.send_all("\n".join(lines).encode() + b"\n")
            sent = json.loads(await wire.read_line())
            ping = await wire.read_line()
            # The flush runs beside the lines after it, so its answer may come after theirs.
            errors = sorted([json.loads(await wire.read_line()) for _ in range(3)],
                            key=lambda answer: int(answer["id"]))
            await arrived.wait()
            await wire.to_app.aclose()
            await wire.read_rest()
    assert sent == {"jsonrpc": "2.0", "result": {"accepted": 1, "rejected": [], "queued": 1},
                    "id": 1}
    assert ping == b'{"jsonrpc":"2.0","result":{"version":"%s"},"id":%s}' % (
        __version__.encode(), LONG.encode())
    assert [(e["id"], e["error"]["code"]) for e in errors] == [(3, -32602), (4, -32602),
                                                              (5, -32602)]
    assert [e["error"]["data"].split("'")[1] for e in errors] == ["timeout", "opt_out", "api_key"]
    body = bodies[0].decode()
    assert f'"distinct_id":"{LONG}"' in body
    assert f'"properties":{{"n":-{LONG},"deep":[{{"m":{LONG}}}],' in body
