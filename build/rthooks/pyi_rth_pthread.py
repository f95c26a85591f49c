"""Runtime hook: `ctypes.util.find_library("pthread")` answers without running ldconfig.

trio looks up `pthread_setname_np` (to name its worker threads) when it is imported, through
`ctypes.util.find_library("pthread")`. On Linux that function forks and runs `/sbin/ldconfig -p`
and parses its listing of every library on the system: a subprocess at every start. With glibc the
answer is always `libpthread.so.0` (from glibc 2.34 a stub whose functions live in libc, and the
dynamic loader finds it by that name), so it is given without asking. Every other name, and every
other C library (musl has no libpthread, and no `CS_GNU_LIBC_VERSION`), goes to the original
function. Should the name ever fail to load, trio catches that and leaves its threads unnamed.
"""

import os
import sys


def _glibc() -> bool:
    """The process runs on glibc."""
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


def _install() -> None:
    """Wrap `ctypes.util.find_library` so that "pthread" is answered on glibc."""
    import ctypes.util  # noqa: PLC0415 - the hook's only import of weight, and only on glibc

    original = ctypes.util.find_library

    def find_library(name: str) -> str | None:
        """`libpthread.so.0` for "pthread"; anything else as ctypes finds it."""
        if name == "pthread":
            return "libpthread.so.0"
        return original(name)

    ctypes.util.find_library = find_library


if sys.platform.startswith("linux") and _glibc():
    _install()
