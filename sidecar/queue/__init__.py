"""The queue: the SQLite store (plain synchronous code) and its thin trio wrapper."""
