"""Development tools for telemetry-sidecar: the local capture server, drivers and the demo.

Installed beside ``sidecar`` for tests, benchmarks and app developers; never part of the frozen
binary, which holds only what ``sidecar/__main__.py`` imports.
"""
