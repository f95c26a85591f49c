"""The traps of shipping a frozen binary, checked on whatever `SIDECAR_COMMAND` runs.

The whole integration suite runs against the binary in CI
(`SIDECAR_COMMAND=dist/telemetry-sidecar-<triple> pytest tests/integration`); that run is also
the proof that the modules the spec excludes are unused. The cases here name the traps that are
particular to frozen programs:

- stdout buffering: a frozen program ignores PYTHONUNBUFFERED. The sidecar never writes the
  protocol through `sys.stdout`: one writer task writes whole lines to a private duplicate of
  fd 1 with `os.write`, so there is no Python buffer to flush. Checked here by answering each
  request before the next one is written, with stdin held open.
- Windows code pages (cp1252 on a pipe): the protocol is written as ASCII-only JSON bytes, so
  the console code page never applies to it; logs go to stderr, which Python opens with
  `backslashreplace`, so a character the code page lacks cannot raise. A Windows run is only
  possible in the release workflow; here the closest check is a C locale with a cp1252
  `PYTHONIOENCODING`, which must not change a byte of the wire.
- `--noconsole`/`--windowed`: never used (stdin/stdout would be None on Windows); the spec says
  `console=True`, and these tests talk to the binary over its stdio.
"""

from __future__ import annotations

import json
import subprocess

from sidecar import __version__
from sidecar_dev.driver import SidecarProcess, sidecar_command
from sidecar_dev.harness import TEST_KEY, event

ROUND_TRIPS = 20


def offline_url(port: int) -> str:
    """A capture host that refuses connections."""
    return f"http://127.0.0.1:{port}"


def test_version_option_prints_and_exits_0() -> None:
    """`--version` works from the binary (argparse and the package metadata are bundled)."""
    done = subprocess.run(
        [*sidecar_command(), "--version"], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert __version__ in done.stdout.decode()


def test_each_answer_arrives_while_stdin_stays_open(offline_port, spawn_sidecar) -> None:
    """No output buffering: every answer is on the pipe before the next request is written."""
    sidecar: SidecarProcess = spawn_sidecar(offline_url(offline_port), api_key=TEST_KEY)
    for i in range(ROUND_TRIPS):
        request_id = sidecar.request("ping")
        line = sidecar.read_line(timeout=10)
        assert json.loads(line) == {
            "jsonrpc": "2.0",
            "result": {"version": __version__},
            "id": request_id,
        }, i
    assert sidecar.process.poll() is None  # still serving: nothing waited for EOF or exit
    assert sidecar.stop() == 0, sidecar.stderr
    assert sidecar.stdout.count(b"\n") == ROUND_TRIPS


def test_a_non_utf8_locale_changes_nothing_on_the_wire(offline_port, spawn_sidecar) -> None:
    """Under a C locale and a cp1252 PYTHONIOENCODING, stdout is still ASCII-only JSON."""
    sidecar: SidecarProcess = spawn_sidecar(
        offline_url(offline_port),
        "--log-level",
        "debug",
        api_key=TEST_KEY,
        env={"LC_ALL": "C", "LANG": "C", "PYTHONIOENCODING": "cp1252", "PYTHONUTF8": "0"},
    )
    name = "caf\u00e9 \u2603 \U0001f600"
    result = sidecar.result(
        "ph_send_batch", {"batch": [event(name), {"event": name, "distinct_id": ""}]}
    )
    assert result["accepted"] == 1
    assert result["rejected"][0]["index"] == 1
    unknown = sidecar.call(name)
    assert unknown["error"]["code"] == -32601
    assert unknown["error"]["data"] == name  # non-ASCII travels as \u escapes and comes back
    assert sidecar.stop() == 0, sidecar.stderr
    sidecar.stdout.decode("ascii")  # raises on any byte over 0x7f
    for line in sidecar.stdout.splitlines():
        json.loads(line)
