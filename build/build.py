"""Freeze the sidecar into the binary a Tauri app ships: `dist/telemetry-sidecar-<triple>[.exe]`.

    .venv/bin/python build/build.py                      # the one-file binary Tauri ships
    .venv/bin/python build/build.py --onedir             # a folder instead (see below)
    .venv/bin/python build/build.py --copy-to ../my-app  # and copy it to src-tauri/binaries/

Tauri's `bundle.externalBin: ["binaries/telemetry-sidecar"]` looks for
`binaries/telemetry-sidecar-<target-triple>[.exe]`, the triple being the one Rust builds the app
for: `--target`, else the one the Tauri CLI gives its before-build hooks (`TAURI_ENV_TARGET_TRIPLE`,
`TAURI_TARGET_TRIPLE` in Tauri 1), else `rustc --print host-tuple` (rustc >= 1.84), the `host:`
line of `rustc -vV` with an older rustc, and, without rustc, the triple this platform's Rust would
name. PyInstaller does not cross-compile: the binary is always for the machine that builds it.

On macOS, `--codesign-identity "Developer ID Application: ..."` has PyInstaller sign every
bundled library and the binary with the hardened runtime and `build/entitlements.plist`.

`--onedir` builds `dist/telemetry-sidecar-<triple>-onedir/` (the program and an `_internal/`
folder). It starts faster because nothing is unpacked at each start, but `externalBin` takes a
single file, so shipping it means declaring the folder as a Tauri resource; the one-file binary
is the default.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "build" / "telemetry-sidecar.spec"
WORK = ROOT / "build" / "work"
DIST = ROOT / "dist"
NAME = "telemetry-sidecar"

_MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "arm64": "aarch64",
    "aarch64": "aarch64",
    "armv8": "aarch64",
    "i386": "i686",
    "i686": "i686",
    "x86": "i686",
}


def rustc_triple() -> str | None:
    """The host triple rustc reports, or None when there is no usable rustc."""
    rustc = shutil.which("rustc")
    if rustc is None:
        return None
    for args in (["--print", "host-tuple"], ["-vV"]):
        try:
            done = subprocess.run(
                [rustc, *args], capture_output=True, text=True, timeout=60, check=False
            )
        except (OSError, subprocess.TimeoutExpired):
            return None
        if done.returncode != 0:
            continue  # rustc before 1.84 does not know host-tuple
        if args[0] == "-vV":
            for line in done.stdout.splitlines():
                if line.startswith("host:"):
                    return line.split(":", 1)[1].strip() or None
            return None
        return done.stdout.strip() or None
    return None


def platform_triple(
    system: str | None = None, machine: str | None = None, libc: str | None = None
) -> str:
    """The triple Rust would name for this platform (or the given one)."""
    system = (system or platform.system()).lower()
    raw_machine = (machine or platform.machine()).lower()
    arch = _MACHINES.get(raw_machine)
    if arch is None:
        raise SystemExit(f"build.py: unknown machine {raw_machine!r}; install rustc or add it")
    if system == "darwin":
        return f"{arch}-apple-darwin"
    if system == "windows":
        return f"{arch}-pc-windows-msvc"
    if system == "linux":
        libc = platform.libc_ver()[0] if libc is None else libc
        return f"{arch}-unknown-linux-{'gnu' if libc in ('glibc', '') else 'musl'}"
    raise SystemExit(f"build.py: unsupported system {system!r}")


def target_triple(override: str | None = None) -> str:
    """The triple of the binary's name: given, Tauri's, rustc's, else the platform's."""
    return (
        override
        or os.environ.get("TAURI_ENV_TARGET_TRIPLE")
        or os.environ.get("TAURI_TARGET_TRIPLE")
        or rustc_triple()
        or platform_triple()
    )


def binary_name(triple: str) -> str:
    """`telemetry-sidecar-<triple>`, with `.exe` for Windows targets."""
    return f"{NAME}-{triple}" + (".exe" if "windows" in triple else "")


def binaries_dir(target: Path) -> Path:
    """Where to copy: a Tauri project (its `src-tauri/binaries/`) or the folder given."""
    if (target / "src-tauri").is_dir():
        return target / "src-tauri" / "binaries"
    if target.name == "src-tauri" or (target / "tauri.conf.json").is_file():
        return target / "binaries"
    return target


def build(
    triple: str, *, onedir: bool, trim: bool = True, codesign_identity: str | None = None
) -> Path:
    """Run PyInstaller on the spec and return the built program."""
    command = [
        sys.executable,
        "-m",
        "PyInstaller",
        str(SPEC),
        "--noconfirm",
        "--clean",
        "--log-level=WARN",
        f"--distpath={DIST}",
        f"--workpath={WORK}",
        "--",
        f"--name={NAME}-{triple}",
    ]
    if onedir:
        command.append("--onedir")
    if not trim:
        command.append("--no-trim")
    if codesign_identity:
        command.append(f"--codesign-identity={codesign_identity}")
    subprocess.run(command, check=True, cwd=ROOT)
    name = binary_name(triple)
    return DIST / f"{NAME}-{triple}-onedir" / name if onedir else DIST / name


def main(argv: list[str] | None = None) -> int:
    """Build, check that the binary starts, and copy it where asked."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--onedir", action="store_true", help="build a folder, not one file")
    parser.add_argument(
        "--copy-to",
        type=Path,
        metavar="PATH",
        help="a Tauri project (copies to its src-tauri/binaries/) or a binaries folder",
    )
    parser.add_argument("--target", metavar="TRIPLE", help="the triple to name the binary for")
    parser.add_argument(
        "--codesign-identity", metavar="ID", help="macOS: sign with this identity (see above)"
    )
    parser.add_argument(
        "--no-trim", action="store_true", help="keep every module (to measure what trimming gains)"
    )
    parser.add_argument(
        "--print-path", action="store_true", help="print the binary's path (relative) and exit"
    )
    args = parser.parse_args(argv)
    if args.onedir and args.copy_to:
        parser.error("--copy-to takes the one-file binary only (externalBin is a single file)")

    triple = target_triple(args.target)
    if args.print_path:
        folder = Path("dist", f"{NAME}-{triple}-onedir") if args.onedir else Path("dist")
        print((folder / binary_name(triple)).as_posix())
        return 0
    host = rustc_triple() or platform_triple()
    if triple.split("-")[0] != host.split("-")[0]:
        print(f"build.py: warning: naming the binary for {triple}, but building on {host}")
    started = time.monotonic()
    program = build(
        triple,
        onedir=args.onedir,
        trim=not args.no_trim,
        codesign_identity=args.codesign_identity,
    )
    elapsed = time.monotonic() - started
    version = subprocess.run(
        [str(program), "--version"], capture_output=True, text=True, timeout=60, check=True
    ).stdout.strip()
    files = program.parent.rglob("*") if args.onedir else [program]
    size = sum(f.stat().st_size for f in files if f.is_file())
    print(f"built {program.relative_to(ROOT)} ({size / 1e6:.1f} MB, {elapsed:.0f} s): {version}")

    if args.copy_to:
        folder = binaries_dir(args.copy_to)
        folder.mkdir(parents=True, exist_ok=True)
        copied = shutil.copy2(program, folder / program.name)
        print(f"copied to {copied}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
