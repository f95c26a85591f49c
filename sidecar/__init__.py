"""telemetry-sidecar: a Tauri sidecar that relays PostHog events through a durable SQLite queue."""

__version__ = "0.1.0"
