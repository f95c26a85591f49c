"""Entry point: parse options, set up logging and the protocol streams, run the app."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

import trio

from sidecar.process import app
from sidecar.process.config import APP_NAME, ConfigError, parse_config
from sidecar.process.logs import SecretMasker, configure_logging
from sidecar.process.parent import OnefileBundle
from sidecar.process.stdio import claim_stdout, open_fd_stream


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sidecar; returns the exit code (2 for a bad option, before touching any data)."""
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"{APP_NAME}: error: {exc}", file=sys.stderr)
        return 2
    masker = SecretMasker()
    configure_logging(config.log_level, masker)
    protocol_fd = claim_stdout()
    stdin = open_fd_stream(os.dup(0))
    stdout = open_fd_stream(protocol_fd)

    async def serve() -> None:
        async with stdin, stdout:
            await app.run(config, stdin, stdout, remember_secret=masker.remember)

    bundle = OnefileBundle.current()
    trio.run(serve)
    if bundle is not None:
        bundle.remove_if_orphaned()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
