"""``python -m sidecar_dev.capture``: the same as the ``telemetry-capture`` command."""

from sidecar_dev.capture.cli import main

raise SystemExit(main())
