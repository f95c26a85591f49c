"""`make demo`: the real sidecar relaying events to the local capture server, start to finish.

No PostHog account is needed. The demo spawns the sidecar over pipes as a Tauri app would,
sends batches (one with an invalid event), takes the capture server away and brings it back to
show events waiting in the queue, and prints what the server receives. `--sidecar CMD` runs the
same script against another build, such as the frozen binary.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sidecar_dev.capture import CaptureServer, ReceivedRequest, format_event_line
from sidecar_dev.driver import SidecarProcess

DEMO_KEY = "phc_demo_local_key"


def _show(direction: str, message: object) -> None:
    print(f"  {direction} {json.dumps(message)}", flush=True)


def _printing_server(port: int = 0) -> CaptureServer:
    def on_request(request: ReceivedRequest) -> None:
        for event in request.events:
            print(f"  capture ← {format_event_line(event)}", flush=True)

    return CaptureServer(port=port, on_request=on_request).start()


def _call(sidecar: SidecarProcess, method: str, params: dict[str, Any] | None = None) -> Any:
    request: dict[str, Any] = {"method": method}
    if params is not None:
        request["params"] = params
    _show("app →", request)
    response = sidecar.call(method, params)
    _show("app ←", response.get("result", response.get("error")))
    return response.get("result")


def run_demo(data_dir: Path) -> int:
    """Walk through the main job; returns 0 when every event arrived."""
    server = _printing_server()
    port = server.port
    print(f"local capture server on {server.url}", flush=True)
    sidecar = SidecarProcess(
        data_dir, server.url, "--backoff-base", "0.2", "--backoff-max", "1", api_key=DEMO_KEY
    )
    try:
        print("\n1. the app spawns the sidecar and checks it is alive", flush=True)
        _call(sidecar, "ping")

        print("\n2. a batch of three events, one of them invalid", flush=True)
        _call(sidecar, "ph_send_batch", {"batch": [
            {"event": "app opened", "distinct_id": "user-42", "properties": {"os": sys.platform}},
            {"event": "button clicked", "distinct_id": "user-42", "properties": {"id": "save"}},
            {"event": "", "distinct_id": "user-42"},
        ]})
        server.wait_for_events(2, timeout=10)

        print("\n3. the network goes away; events wait in the queue", flush=True)
        server.close()
        _call(sidecar, "ph_send_batch", {"batch": [
            {"event": "offline edit", "distinct_id": "user-42", "properties": {"words": n}}
            for n in (10, 20, 30)
        ]})
        _call(sidecar, "ph_flush", {"timeout": 0.5})
        _call(sidecar, "ph_status")

        print("\n4. the network is back; the app asks for a flush", flush=True)
        server = _printing_server(port)
        _call(sidecar, "ph_flush", {"timeout": 10})
        server.wait_for_events(3, timeout=10)
        status = _call(sidecar, "ph_status")

        print("\n5. the app quits", flush=True)
        _call(sidecar, "shutdown")
        code = sidecar.wait()
        print(f"  sidecar exited with {code}", flush=True)
    finally:
        server.close()
        sidecar.reap()
    ok = code == 0 and status["queued"] == 0 and status["delivered"] == 5
    print("\nall events delivered" if ok else f"\nsomething is off: {status}", flush=True)
    return 0 if ok else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `--sidecar` and `--data-dir`, then run the demo."""
    parser = argparse.ArgumentParser(prog="python -m sidecar_dev.demo", description=__doc__)
    parser.add_argument("--sidecar", help="command that starts the sidecar (default: this Python)")
    parser.add_argument("--data-dir", type=Path, help="queue folder (default: a temporary one)")
    args = parser.parse_args(argv)
    if args.sidecar:
        os.environ["SIDECAR_COMMAND"] = shlex.join(shlex.split(args.sidecar))
    if args.data_dir:
        return run_demo(args.data_dir)
    with tempfile.TemporaryDirectory(prefix="telemetry-sidecar-demo-") as folder:
        return run_demo(Path(folder))


if __name__ == "__main__":
    raise SystemExit(main())
