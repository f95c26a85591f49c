"""The process: options, the top-level nursery, stdio, the JSON-RPC methods, the parent watch."""
