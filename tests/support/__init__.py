"""Test-only helpers the benchmarks do not need (the shared machinery is `sidecar_dev`)."""
