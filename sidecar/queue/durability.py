"""What an acknowledgement survives, and the SQLite settings that give it."""

from __future__ import annotations

import enum
import sys


class Durability(enum.StrEnum):
    """How far a committed (and so answered) write is guaranteed to survive."""

    FULL = "full"
    """The write-ahead log reaches the drive at every commit: a power cut or an OS crash loses
    no answered write."""

    NORMAL = "normal"
    """The log reaches the drive at checkpoints only: a killed process loses nothing, a power
    cut may lose the writes since the last checkpoint (in practice the OS writes them back
    within about 30 s)."""


def connection_pragmas(durability: Durability, platform: str = sys.platform) -> list[str]:
    """The PRAGMA statements that give `durability` to a WAL-mode connection on `platform`.

    On macOS `fsync` leaves data in the drive's own cache, which a power cut empties; only
    `F_FULLFSYNC` (SQLite's `fullfsync`) asks the drive to write it out, so FULL uses it there
    for commits and checkpoints alike.
    """
    if durability is Durability.NORMAL:
        return ["PRAGMA synchronous = NORMAL"]
    pragmas = ["PRAGMA synchronous = FULL"]
    if platform == "darwin":
        pragmas += ["PRAGMA fullfsync = ON", "PRAGMA checkpoint_fullfsync = ON"]
    return pragmas
