"""The wire: stdin bytes to lines, lines to JSON-RPC requests, event validation. Pure, no I/O."""
