"""Suite 3: hostile input on stdin, in-process (hypothesis, many examples) and against the real
process (random bytes, invalid UTF-8, huge and deep lines, huge numbers, NaN/Infinity, wrong
types in every field of every method, junk batches, duplicate ids, a flood nobody reads).

The oracle (`hostile_oracle.py`) works out what each line is owed from JSON-RPC 2.0 and the
contract alone. Besides matching it line by line, every answer must be ASCII JSON, no request
may ever get -32603 (that would be a bug of ours, not bad input), the process must stay up with
bounded memory, and events queued before the fuzz must still be there and be delivered.
"""

from __future__ import annotations

import json
import os
import random
import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from fm_support import Flood, flood_lines, unread_sidecar
from hostile_corpus import (
    LONG,
    LONGER,
    Case,
    dumps,
    line_body,
    long_number_cases,
    random_lines,
    special_lines,
    surrogate_cases,
    wrong_types_everywhere,
)
from hostile_oracle import NOTHING, check_answer, expected_for_body, expected_for_line, loads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sidecar import __version__
from sidecar.process.config import Config
from sidecar.process.methods import METHODS, Services
from sidecar.queue.astore import AsyncStore
from sidecar.wire.framing import LineDecoder, OversizedLine
from sidecar.wire.rpc import Dispatcher, Lane, parse_line
from sidecar_dev.capture import CaptureServer
from sidecar_dev.driver import SidecarProcess
from sidecar_dev.harness import (
    GUARD_S,
    TEST_KEY,
    RefusingPort,
    numbered,
    proc_status_kib,
    wait_drained,
)

EXAMPLES = int(os.environ.get("HOSTILE_EXAMPLES", "300"))
RANDOM_LINES = int(os.environ.get("HOSTILE_RANDOM_LINES", "1500"))

# ---- framing: random bytes, random chunking -------------------------------------------------


def reference_frames(stream: bytes, limit: int) -> list[bytes | OversizedLine]:
    """What LineDecoder must produce, from str.split: the spec of the framing."""
    pieces = stream.split(b"\n")
    frames: list[bytes | OversizedLine] = []
    for piece in pieces[:-1] + ([pieces[-1]] if pieces[-1] else []):
        if len(piece) > limit:
            frames.append(OversizedLine(len(piece)))
            continue
        line = piece[:-1] if piece.endswith(b"\r") else piece
        if line.strip(b" \t\r"):
            frames.append(line)
    return frames


@settings(max_examples=EXAMPLES * 3, deadline=None)
@given(
    stream=st.binary(max_size=400)
    | st.lists(st.sampled_from([b"\n", b"\r", b" ", b"\t", b"a", b"\xff", b"{}"]), max_size=200)
    .map(b"".join),
    limit=st.integers(1, 40),
    data=st.data(),
)
def test_line_decoder_matches_split_on_random_bytes(stream: bytes, limit: int, data) -> None:
    """Random bytes cut at random places give exactly the reference lines, and the decoder never
    holds more than the limit."""
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = LineDecoder(limit)
    frames: list[bytes | OversizedLine] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[start:cut])
        assert len(decoder._buffer) <= limit
        start = cut
    frames += decoder.finish()
    assert frames == reference_frames(stream, limit)


# ---- parse_line + Dispatcher in-process --------------------------------------------------------


class StubSender:
    """Stands in for the sender: nothing is ever delivered, and a flush returns at once."""

    def wake(self) -> None:
        """New events: nothing to do here."""

    async def flush_until(self, deadline: float, stopping: trio.Event) -> int:
        """Nothing can be delivered."""
        await trio.lowlevel.checkpoint()
        return 0

    def next_attempt_in(self) -> float | None:
        """Never waiting."""
        return None


class InProcess:
    """parse_line + the real methods on a real store, with a stub sender."""

    def __init__(self, folder: Path) -> None:
        self.config = Config(data_dir=folder, host="http://127.0.0.1:9", api_key=TEST_KEY,
                             max_queue=10**9)
        self.secrets: list[str] = []

    async def __aenter__(self) -> InProcess:
        self.store = AsyncStore(self.config.db_path)
        await self.store.open()
        services = Services(self.config, self.store, StubSender(), trio.Event(),  # type: ignore[arg-type]
                            self.secrets.append)
        self.dispatcher = Dispatcher(METHODS, services)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.store.aclose()

    async def depth(self) -> int:
        """The queue depth."""
        return int(await self.store.run(lambda s: s.depth()))

    async def answer(self, line: bytes) -> bytes | None:
        """What the sidecar writes for one line (None: nothing)."""
        parsed = parse_line(line)
        if isinstance(parsed, bytes):
            return parsed
        return await self.dispatcher.respond(parsed)


def check_line_answer(line: bytes, out: bytes | None) -> Any:
    """The answer to `line` is exactly what the oracle says; returns it decoded."""
    expected = expected_for_line(line)
    if expected is NOTHING or expected.kind == "none":
        assert out is None, (line[:200], out)
        return None
    assert out is not None, line[:200]
    assert out.endswith(b"\n") and out.count(b"\n") == 1, out[:200]
    assert out.isascii(), out[:200]
    decoded = loads(out)
    check_answer(expected, decoded)
    return decoded


def check_case(case: Case, out: bytes | None) -> None:
    """The answer to a case's line is what the oracle says, and exactly what the case owes."""
    answer = check_line_answer(case.line.rstrip(b"\n"), out)
    assert isinstance(answer, dict), (case.label, answer)
    assert type(answer["id"]) is type(case.id) and answer["id"] == case.id, case.label
    if case.code is None:
        assert "result" in answer, (case.label, answer)
        if case.accepted is not None:
            assert answer["result"]["accepted"] == case.accepted, (case.label, answer)
            indexes = [r["index"] for r in answer["result"]["rejected"]]
            assert indexes == list(case.rejected), (case.label, answer)
    else:
        assert answer["error"]["code"] == case.code, (case.label, answer)
        if case.names is not None:
            assert case.names in answer["error"]["data"], (case.label, answer)


def exact_cases() -> list[Case]:
    """Issue 13's classes: a lone surrogate in every string parameter and event field, and an
    integer past int()'s text conversion limit in every position."""
    return [*surrogate_cases(), *long_number_cases()]


def accepted_and_purged(decoded: Any) -> tuple[int, int]:
    """Events a response says were accepted, and purged, to account for the queue depth."""
    accepted = purged = 0
    for item in decoded if isinstance(decoded, list) else [decoded]:
        result = item.get("result") if isinstance(item, dict) else None
        if isinstance(result, dict):
            accepted += result.get("accepted", 0) if "rejected" in result else 0
            purged += result.get("purged", 0) if "opted_out" in result else 0
    return accepted, purged


@settings(max_examples=EXAMPLES, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(body=line_body)
async def test_dispatch_answers_json_rpc_junk_as_the_oracle_says(body, tmp_path: Path) -> None:
    """Any JSON-RPC-shaped junk gets exactly the answers it is owed, never -32603, and the queue
    depth moves only by what was accepted."""
    async with InProcess(tmp_path / "data") as sidecar:
        before = await sidecar.depth()
        line = dumps(body).encode()
        decoded = check_line_answer(line, await sidecar.answer(line))
        accepted, purged = accepted_and_purged(decoded) if decoded is not None else (0, 0)
        assert purged == 0
        after = await sidecar.depth()
        # A notification stores without answering: it can only add.
        if decoded is not None and expected_for_body(body).kind == "one":
            assert after == before + accepted
        assert after >= before


@settings(max_examples=EXAMPLES // 2, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(lines=st.lists(st.binary(max_size=80) | line_body.map(lambda b: dumps(b).encode()),
                      max_size=8),
       data=st.data())
async def test_random_byte_stream_gets_one_answer_per_owed_line(lines, data, tmp_path: Path
                                                                ) -> None:
    """Random bytes and junk requests, framed by LineDecoder from random chunks: every frame gets
    exactly what it is owed."""
    stream = b"\n".join(line.replace(b"\n", b"") for line in lines) + b"\n"
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    decoder = LineDecoder()
    frames: list[bytes | OversizedLine] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = cut
    frames += decoder.finish()
    assert frames == reference_frames(stream, 16 * 1024 * 1024)
    async with InProcess(tmp_path / "data") as sidecar:
        for frame in frames:
            assert isinstance(frame, bytes)
            check_line_answer(frame, await sidecar.answer(frame))


async def test_lone_surrogates_and_long_integers_get_exactly_what_they_are_owed_in_process(
    tmp_path: Path,
) -> None:
    """A lone surrogate in any string parameter is -32602 naming it (api_key included) or
    rejects its event alone; an integer past the conversion limit anywhere is answered by the
    request's id: a result where a number may be, -32602 naming the param where not, -32600 in
    the envelope. The queue grows by exactly what is accepted."""
    async with InProcess(tmp_path / "data") as sidecar:
        for case in exact_cases():
            before = await sidecar.depth()
            check_case(case, await sidecar.answer(case.line.rstrip(b"\n")))
            assert await sidecar.depth() - before == (case.accepted or 0), case.label


async def test_special_lines_in_process(tmp_path: Path) -> None:
    """Deep nesting, 1e999999, 10**4000, 5000-digit numbers, NaN, junk batches, duplicate ids
    and every wrong type in every field: each line gets what it is owed, never -32603."""
    async with InProcess(tmp_path / "data") as sidecar:
        blob = b"".join([*special_lines(), *wrong_types_everywhere()])
        count = 0
        for line in blob.split(b"\n"):
            if line.strip():
                check_line_answer(line, await sidecar.answer(line))
                count += 1
        assert count > 1200


# ---- the real process --------------------------------------------------------------------------


def hostile_corpus(seed: int = 4) -> list[bytes]:
    """Every hostile line, one per element, each ending in a newline."""
    blob = b"".join([
        *special_lines(),
        *wrong_types_everywhere(),
        *random_lines(random.Random(seed), RANDOM_LINES),
        *(case.line for case in exact_cases()),
    ])
    return [line + b"\n" for line in blob.split(b"\n")[:-1]]


def _is_flush(line: bytes) -> bool:
    try:
        body = loads(line)
    except (ValueError, RecursionError):
        return False
    items = body if isinstance(body, list) else [body]
    return any(isinstance(i, dict) and isinstance(i.get("method"), str)
               and i["method"] in METHODS and METHODS[i["method"]].lane is Lane.BESIDE
               for i in items)


def test_real_process_survives_the_hostile_corpus(tmp_path: Path) -> None:
    """The real process answers every hostile line as owed (one line at a time, then all at
    once), never -32603, keeps bounded memory, and delivers the events queued before."""
    corpus = hostile_corpus()
    holder = RefusingPort()
    with SidecarProcess(tmp_path / "data", holder.url,
                        "--max-queue", "1000000", "--log-level", "debug", api_key=TEST_KEY) as proc:
        seeded = numbered(5, scenario="seed")
        assert proc.result("ph_send_batch", {"batch": seeded})["accepted"] == 5
        base_kib = proc_status_kib(proc.process.pid, "VmHWM")

        accepted = 0
        owed = 0
        # Pass 1: one line at a time, each answer checked against its own line.
        for line in corpus:
            expected = expected_for_line(line[:-1])
            proc.send_raw(line)
            if expected.kind == "none":
                continue
            owed += 1
            decoded = loads(proc.read_line())
            check_answer(expected, decoded)
            accepted += accepted_and_purged(decoded)[0]
        # Nothing more was written than owed: the next line out answers this ping.
        assert proc.call("ping")["result"] == {"version": __version__}

        # Pass 2: the whole corpus (less ph_flush, whose answers may overtake) in one stream.
        stream = [line for line in corpus if not _is_flush(line)]
        writer = threading.Thread(target=proc.send_raw, args=(b"".join(stream),), daemon=True)
        writer.start()
        for line in stream:
            expected = expected_for_line(line[:-1])
            if expected.kind != "none":
                decoded = loads(proc.read_line())
                check_answer(expected, decoded)
                accepted += accepted_and_purged(decoded)[0]
        writer.join(GUARD_S)
        assert not writer.is_alive()
        assert proc.call("ping")["result"] == {"version": __version__}

        status = proc.result("ph_status")
        assert status["queued"] == 5 + accepted
        assert proc.process.poll() is None
        peak_kib = proc_status_kib(proc.process.pid, "VmHWM")
        if base_kib is not None and peak_kib is not None:
            assert (peak_kib - base_kib) * 1024 < 256 * 2**20, (base_kib, peak_kib)
        assert "Traceback" not in proc.stderr, proc.stderr[-3000:]

        # The host comes up: the events queued before the fuzz are delivered.
        holder.close()
        with CaptureServer(port=holder.port) as server:
            proc.result("ph_flush", {"timeout": GUARD_S})
            wait_drained(proc)
            delivered = {(e["properties"].get("scenario"), e["properties"].get("n"))
                         for e in server.events}
        assert {("seed", i) for i in range(5)} <= delivered
        assert proc.stop() == 0, proc.stderr[-3000:]
    print(f"hostile corpus: {len(corpus)} lines, {owed} answers owed, {accepted} events "
          f"accepted; peak RSS +{((peak_kib or 0) - (base_kib or 0)) // 1024} MiB")


def test_lone_surrogates_and_long_integers_in_the_real_process(tmp_path: Path) -> None:
    """Over real pipes, each line of issue 13's classes gets exactly what it is owed, and the
    events holding integers past the conversion limit reach capture with the same digits."""
    values = {LONG: 10 ** (len(LONG.text) - 1), LONGER: -(10 ** (len(LONGER.text) - 1) - 1)}
    assert LONG.text == "1" + "0" * (len(LONG.text) - 1) and set(LONGER.text[1:]) == {"9"}
    with CaptureServer() as server, SidecarProcess(
        tmp_path / "data", server.url, "--max-queue", "1000000", api_key=TEST_KEY
    ) as proc:
        accepted = 0
        for case in exact_cases():
            proc.send_raw(case.line)
            check_case(case, proc.read_line())
            accepted += case.accepted or 0
        proc.result("ph_flush", {"timeout": GUARD_S})
        wait_drained(proc)
        events = server.events
        assert proc.stop() == 0, proc.stderr[-3000:]
    assert len(events) == accepted
    properties = [e["properties"]["n"] for e in events if "n" in e["properties"]]
    assert properties == [values[LONG], values[LONGER]]
    distinct_ids = {e["distinct_id"] for e in events}
    assert {LONG.text, LONGER.text} <= distinct_ids


# ---- a flood nobody reads ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("label", "count", "events_per_call", "bound_mib"),
    [("pings", 30_000, 0, 16), ("invalid batches of 1,000 events", 1_000, 1_000, 128)],
)
def test_flood_without_reading_stays_bounded_then_all_answered(
    tmp_path: Path, label: str, count: int, events_per_call: int, bound_mib: int
) -> None:
    """Writing without reading stdout: the sidecar stops reading (backpressure) with bounded
    memory, and once stdout is read every request gets its one answer."""
    raw = unread_sidecar(tmp_path / "data")
    try:
        assert b'"version"' in raw.ask(b'{"jsonrpc":"2.0","id":-1,"method":"ping"}\n')
        base = proc_status_kib(raw.process.pid, "VmHWM")
        writer = Flood(raw, flood_lines(count, events_per_call))
        written = writer.wait_blocked()
        assert writer.is_alive(), "the sidecar read everything without being read"
        assert written < count
        blocked = proc_status_kib(raw.process.pid, "VmHWM")
        ids = []
        for _ in range(count):
            answer = json.loads(raw.read_line())
            ids.append(answer["id"])
            assert ("result" in answer) and answer["jsonrpc"] == "2.0", answer
        writer.join(GUARD_S)
        assert not writer.failed and not writer.is_alive()
        assert sorted(ids) == list(range(count))
        assert b'"version"' in raw.ask(b'{"jsonrpc":"2.0","id":-2,"method":"ping"}\n')
        peak = proc_status_kib(raw.process.pid, "VmHWM")
        if base is not None and blocked is not None and peak is not None:
            print(f"{label}: blocked after {written} of {count} lines; VmHWM +"
                  f"{(blocked - base) / 1024:.1f} MiB while blocked, +{(peak - base) / 1024:.1f}"
                  " MiB peak")
            assert (blocked - base) < bound_mib * 1024
            assert (peak - base) < 2 * bound_mib * 1024
    finally:
        raw.reap()


# ---- defects this suite found ------------------------------------------------------------------


def test_jsonrpc_batch_over_the_cap_is_refused_whole(tmp_path: Path) -> None:
    """A 2 MB line holding a JSON-RPC batch of 1,000,000 junk members gets one -32600, with
    memory growing less than 64 MiB; a batch of 32 members still runs."""
    with SidecarProcess(tmp_path / "data", "http://127.0.0.1:9", api_key=TEST_KEY) as proc:
        base = proc_status_kib(proc.process.pid, "VmHWM")
        proc.send_raw(b"[" + b",".join([b"0"] * 1_000_000) + b"]\n")
        answer = json.loads(proc.read_line())
        assert answer["id"] is None and answer["error"]["code"] == -32600, answer
        assert "at most 32" in answer["error"]["data"]
        pings = [{"jsonrpc": "2.0", "method": "ping", "id": i} for i in range(32)]
        proc.send(pings)
        assert [a["id"] for a in json.loads(proc.read_line())] == list(range(32))
        peak = proc_status_kib(proc.process.pid, "VmHWM")
        if base is not None and peak is not None:
            assert (peak - base) < 64 * 1024, (base, peak)
        assert proc.stop() == 0


def test_distinct_api_keys_do_not_grow_memory(tmp_path: Path) -> None:
    """Calls naming ever new api keys leave memory flat: keys over 256 characters get -32602,
    and the log masker keeps only the most recent keys."""
    with SidecarProcess(tmp_path / "data", "http://127.0.0.1:9", api_key=TEST_KEY) as proc:
        assert proc.call("ping")["result"]
        base = proc_status_kib(proc.process.pid, "VmRSS")
        for i in range(400):
            huge = f"phc_{i:08d}" * 8192  # 64 KiB
            answer = proc.call("ph_send_batch", {"batch": [], "api_key": huge})
            assert answer["error"]["code"] == -32602 and "api_key" in answer["error"]["data"]
            longest = (f"phc_{i:08d}" * 22)[:256]
            assert proc.result("ph_send_batch", {"batch": [], "api_key": longest})["accepted"] == 0
        after = proc_status_kib(proc.process.pid, "VmRSS")
        if base is not None and after is not None:
            assert (after - base) < 16 * 1024, (base, after)
        assert proc.stop() == 0


def test_secret_masker_is_bounded_and_masks_the_latest() -> None:
    """The masker keeps at most its bound of keys, the most recently used, and masks them."""
    import logging

    from sidecar.process.logs import MAX_SECRETS, SecretMasker

    masker = SecretMasker()
    keys = [f"phc_key_number_{i:06d}" for i in range(1000)]
    for key in keys:
        masker.remember(key)
    masker.remember(keys[0])  # used again: most recent
    assert len(masker._secrets) == MAX_SECRETS
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%s %s", (keys[0], keys[-1]), None)
    masker.filter(record)
    assert record.getMessage() == "phc_…0000 phc_…0999"
