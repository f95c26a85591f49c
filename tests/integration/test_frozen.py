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
- Unpack folders: a one-file binary killed together with its bootloader leaves the folder it
  unpacked into; the next one-file sidecar removes it (`sidecar/process/unpacked.py`).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from sidecar import __version__
from sidecar.process.unpacked import FOLDER_PREFIX, MARK
from sidecar_dev.driver import SidecarProcess, sidecar_command
from sidecar_dev.harness import TEST_KEY, event, wait_until

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


def _one_file_binary() -> bool:
    """Whether SIDECAR_COMMAND is a one-file binary (which unpacks itself at each start)."""
    command = sidecar_command()
    return len(command) == 1 and not Path(command[0]).parent.name.endswith("-onedir")


def _marked_pids(folder: Path) -> set[int]:
    """The pids an unpack folder's mark names (its bootloader's and its program's)."""
    return {int(token.split(":")[0]) for token in (folder / MARK).read_text().split()}


def _unpack_folders(temp: Path) -> set[Path]:
    return {p for p in temp.iterdir() if p.name.startswith(FOLDER_PREFIX)}


@pytest.mark.skipif(not _one_file_binary(), reason="only a one-file binary unpacks itself")
def test_a_killed_one_file_sidecars_unpack_folder_goes_at_the_next_start(
    tmp_path: Path, offline_port: int
) -> None:
    """A one-file sidecar killed with its bootloader leaves its unpack folder (~17.6 MB); the
    next one-file sidecar on the machine removes it a little after its start, and keeps the
    folder of one still running; each sidecar's own folder goes at its clean exit."""
    temp = tmp_path / "temp"
    temp.mkdir()
    # Where each OS's bootloader unpacks: TMPDIR on Linux and macOS, TMP (then TEMP) on Windows.
    env = {"TMPDIR": str(temp), "TMP": str(temp), "TEMP": str(temp)}
    host = offline_url(offline_port)

    def marked(count: int) -> set[Path]:
        folders: set[Path] = set()

        def ready() -> bool:
            folders.clear()
            folders.update(p for p in _unpack_folders(temp) if (p / MARK).exists())
            return len(folders) == count

        wait_until(ready, f"{count} marked unpack folder(s) in {temp}")
        return folders

    with SidecarProcess(tmp_path / "killed", host, env=env) as killed, \
            SidecarProcess(tmp_path / "running", host, env=env) as running:
        killed.result("ping")
        running.result("ping")
        both = marked(2)
        killed_folder = next(p for p in both if killed.pid in _marked_pids(p))
        assert _marked_pids(killed_folder) == {p.pid for p in killed.tree()}
        killed.kill()
        assert killed_folder.exists()  # nothing could remove it: the leak being mended

        with SidecarProcess(tmp_path / "next", host, env=env) as following:
            following.result("ping")
            wait_until(lambda: not killed_folder.exists(), "the killed sidecar's folder gone")
            assert len(marked(2)) == 2  # the running one's and the new one's
            assert "removed 1 unpack folder(s) of killed sidecars" in following.stderr
            assert following.stop() == 0
        assert running.stop() == 0
    assert _unpack_folders(temp) == set()
