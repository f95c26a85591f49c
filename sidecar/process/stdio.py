"""The protocol's byte streams: stdin in, a private handle on the real stdout out.

`claim_stdout` keeps a duplicate of fd 1 for the protocol and points fd 1 at stderr, so a stray
print from any library lands in the log instead of corrupting the wire. Where trio can wait on
the descriptors (POSIX pipes, sockets and ttys) they are used directly; elsewhere (Windows, or
stdin redirected from a regular file) a worker thread does the blocking reads and writes.
"""

from __future__ import annotations

import os
import stat
import sys

import trio

READ_CHUNK = 64 * 1024


def claim_stdout() -> int:
    """Return a private fd for the protocol stream and send everything else on fd 1 to stderr."""
    sys.stdout.flush()
    protocol_fd = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    if sys.platform == "win32":
        import msvcrt  # noqa: PLC0415 - Windows only

        # Binary mode, so "\n" is not turned into "\r\n" behind our back.
        msvcrt.setmode(protocol_fd, os.O_BINARY)
        msvcrt.setmode(0, os.O_BINARY)
    return protocol_fd


class ThreadFdStream(trio.abc.Stream):
    """A blocking file descriptor driven from trio through worker threads.

    Reads may be abandoned on cancellation (the thread stays blocked in `read` until the
    process exits); writes always complete, so a response line is never cut in half.
    """

    def __init__(self, fd: int) -> None:
        """Wrap `fd` (the stream owns it from now on)."""
        self._fd = fd
        self._closed = False
        self._write_lock = trio.Lock()

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        """The next chunk, or b"" at end of file."""
        if self._closed:
            raise trio.ClosedResourceError
        return await trio.to_thread.run_sync(
            os.read, self._fd, max_bytes or READ_CHUNK, abandon_on_cancel=True
        )

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        """Write everything, retrying short writes."""
        if self._closed:
            raise trio.ClosedResourceError
        async with self._write_lock:
            await trio.to_thread.run_sync(_write_all, self._fd, bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        """Writes happen in a thread, so there is nothing to wait for."""
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        """Close the descriptor (once)."""
        if not self._closed:
            self._closed = True
            os.close(self._fd)
        await trio.lowlevel.checkpoint()


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _pollable(fd: int) -> bool:
    if sys.platform == "win32":
        return False
    mode = os.fstat(fd).st_mode
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode)


def open_fd_stream(fd: int) -> trio.abc.Stream:
    """A trio stream that owns `fd`, of the best kind this platform and file allow."""
    if sys.platform != "win32" and _pollable(fd):
        return trio.lowlevel.FdStream(fd)
    return ThreadFdStream(fd)
