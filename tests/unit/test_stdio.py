"""The stdio streams: the thread-driven stream used on Windows, tested here on a real pipe."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import trio

from sidecar.process.stdio import ThreadFdStream, open_fd_stream

PING = b'{"jsonrpc":"2.0","method":"ping","id":1}\n'


def _file_with(path: Path, content: bytes) -> int:
    path.write_bytes(content)
    return os.open(path, os.O_RDONLY)


async def test_thread_stream_reads_what_a_pipe_carries_then_eof() -> None:
    """The thread reader returns the pipe's bytes in order and b"" at end of file."""
    read_fd, write_fd = os.pipe()
    stream = ThreadFdStream(read_fd)
    os.write(write_fd, b"line one\nline two\n")
    os.close(write_fd)
    received = b""
    while chunk := await stream.receive_some(5):
        received += chunk
    assert received == b"line one\nline two\n"
    await stream.aclose()


async def test_thread_stream_writes_everything_even_past_the_pipe_buffer() -> None:
    """A write larger than the pipe's buffer completes while a reader drains the other end."""
    read_fd, write_fd = os.pipe()
    writer = ThreadFdStream(write_fd)
    reader = ThreadFdStream(read_fd)
    payload = bytes(range(256)) * 4096  # 1 MiB, far past a 64 KiB pipe buffer
    received = bytearray()

    async def drain() -> None:
        while chunk := await reader.receive_some(65536):
            received.extend(chunk)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        await writer.send_all(payload)
        await writer.aclose()
    assert bytes(received) == payload
    await reader.aclose()


async def test_thread_stream_read_can_be_cancelled() -> None:
    """A read blocked on an idle pipe gives way to cancellation, so shutdown is not held up."""
    read_fd, write_fd = os.pipe()
    stream = ThreadFdStream(read_fd)
    with trio.move_on_after(0.2) as scope:
        await stream.receive_some()
    assert scope.cancelled_caught
    os.close(write_fd)


async def test_closed_thread_stream_refuses_use() -> None:
    """After aclose, reads and writes raise ClosedResourceError instead of touching a stale fd."""
    read_fd, write_fd = os.pipe()
    stream = ThreadFdStream(read_fd)
    await stream.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await stream.receive_some()
    os.close(write_fd)


@pytest.mark.skipif(os.name == "nt", reason="FdStream is POSIX only")
async def test_regular_file_uses_thread_stream_and_pipe_uses_fdstream(tmp_path: Path) -> None:
    """stdin redirected from a file cannot be polled, so it falls back to the thread stream."""
    file_stream = open_fd_stream(_file_with(tmp_path / "input.jsonl", PING))
    assert isinstance(file_stream, ThreadFdStream)
    assert await file_stream.receive_some() == PING
    await file_stream.aclose()
    read_fd, write_fd = os.pipe()
    pipe_stream = open_fd_stream(read_fd)
    assert isinstance(pipe_stream, trio.lowlevel.FdStream)
    await pipe_stream.aclose()
    os.close(write_fd)
