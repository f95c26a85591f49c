"""The build script's naming: the target triple Tauri expects, and where `--copy-to` puts it."""

from __future__ import annotations

import ast
import ctypes
import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def load_build_script() -> ModuleType:
    """build/build.py, imported as a module (build/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_script", ROOT / "build" / "build.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build_script()
posix_only = pytest.mark.skipif(sys.platform == "win32", reason="fake rustc is a shell script")


@pytest.mark.parametrize(
    ("system", "machine", "libc", "triple"),
    [
        ("Linux", "x86_64", "glibc", "x86_64-unknown-linux-gnu"),
        ("Linux", "aarch64", "glibc", "aarch64-unknown-linux-gnu"),
        ("Linux", "x86_64", "musl", "x86_64-unknown-linux-musl"),
        ("Darwin", "arm64", "", "aarch64-apple-darwin"),
        ("Darwin", "x86_64", "", "x86_64-apple-darwin"),
        ("Windows", "AMD64", "", "x86_64-pc-windows-msvc"),
        ("Windows", "ARM64", "", "aarch64-pc-windows-msvc"),
    ],
)
def test_platform_triple_names_what_rust_would(
    system: str, machine: str, libc: str, triple: str
) -> None:
    """Without rustc, the triple is derived from the platform as Rust names it."""
    assert build.platform_triple(system, machine, libc) == triple


def test_binary_name_has_exe_only_for_windows() -> None:
    """`telemetry-sidecar-<triple>`, plus `.exe` for a Windows target."""
    assert build.binary_name("x86_64-pc-windows-msvc") == (
        "telemetry-sidecar-x86_64-pc-windows-msvc.exe"
    )
    assert build.binary_name("aarch64-apple-darwin") == "telemetry-sidecar-aarch64-apple-darwin"


def fake_rustc(folder: Path, script: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Put a `rustc` shell script first on PATH."""
    rustc = folder / "rustc"
    rustc.write_text("#!/bin/sh\n" + script)
    rustc.chmod(0o755)
    monkeypatch.setenv("PATH", str(folder))


@posix_only
def test_old_rustc_without_host_tuple_falls_back_to_vV(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rustc older than `--print host-tuple` (1.84) is asked `-vV` and its `host:` line used."""
    fake_rustc(
        tmp_path,
        'if [ "$1" = "-vV" ]; then\n'
        "  printf 'rustc 1.80.0\\nhost: aarch64-apple-darwin\\nrelease: 1.80.0\\n'\n"
        "else\n"
        "  echo \"error: unknown print request: 'host-tuple'\" >&2; exit 1\n"
        "fi\n",
        monkeypatch,
    )
    assert build.rustc_triple() == "aarch64-apple-darwin"


@posix_only
def test_new_rustc_host_tuple_is_used(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A current rustc answers `--print host-tuple` directly."""
    fake_rustc(tmp_path, "echo x86_64-pc-windows-msvc\n", monkeypatch)
    assert build.rustc_triple() == "x86_64-pc-windows-msvc"


def test_no_rustc_means_the_platform_triple(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With no rustc on PATH the platform decides."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.delenv("TAURI_TARGET_TRIPLE", raising=False)
    assert build.rustc_triple() is None
    assert build.target_triple() == build.platform_triple()


@pytest.mark.skipif(shutil.which("rustc") is None, reason="no rustc on this machine")
def test_real_rustc_agrees_with_its_vV_host() -> None:
    """On this machine, the triple in the name is the one rustc reports as its host."""
    verbose = subprocess.run(["rustc", "-vV"], capture_output=True, text=True, check=True)
    host = next(line for line in verbose.stdout.splitlines() if line.startswith("host:"))
    assert build.rustc_triple() == host.split(":", 1)[1].strip()


def test_copy_to_finds_the_binaries_folder(tmp_path: Path) -> None:
    """A Tauri project gets src-tauri/binaries/; a src-tauri folder gets binaries/; else as is."""
    project = tmp_path / "app"
    (project / "src-tauri").mkdir(parents=True)
    assert build.binaries_dir(project) == project / "src-tauri" / "binaries"
    assert build.binaries_dir(project / "src-tauri") == project / "src-tauri" / "binaries"
    elsewhere = tmp_path / "bin"
    assert build.binaries_dir(elsewhere) == elsewhere


def test_print_path_names_the_binary_without_building(capsys: pytest.CaptureFixture[str]) -> None:
    """`--print-path` answers where the binary goes (CI uses it for SIDECAR_COMMAND)."""
    assert build.main(["--print-path", "--target", "x86_64-pc-windows-msvc"]) == 0
    assert capsys.readouterr().out == "dist/telemetry-sidecar-x86_64-pc-windows-msvc.exe\n"
    assert build.main(["--print-path", "--onedir", "--target", "aarch64-apple-darwin"]) == 0
    assert capsys.readouterr().out == (
        "dist/telemetry-sidecar-aarch64-apple-darwin-onedir/telemetry-sidecar-aarch64-apple-darwin\n"
    )


def imported_modules(source: Path) -> set[str]:
    """The modules `source` imports by name; a relative import counts as `sidecar`."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("sidecar" if node.level else node.module or "")
    return names


def test_the_product_package_imports_no_dev_tool() -> None:
    """No module of sidecar/ imports sidecar_dev, tests or bench, so the binary leaves them out."""
    reaching_out = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in (ROOT / "sidecar").rglob("*.py")
        for name in imported_modules(path)
        if name.split(".")[0] in {"sidecar_dev", "tests", "bench"}
    }
    assert (ROOT / "sidecar_dev" / "capture" / "__init__.py").is_file()
    assert reaching_out == set()


# Loaded later than the first answer, or never: jsonrpcserver's request validator (jsonschema)
# and demo server, the HTTP stack (first send), the HTTP-date parser (a Retry-After date),
# psutil (the first lease looked at).
NOT_AT_START = {"jsonschema", "referencing", "http.server", "httpx", "h11", "email.utils", "psutil"}


def test_start_leaves_out_what_the_first_answer_does_not_need() -> None:
    """Importing the entry point in a fresh interpreter loads none of NOT_AT_START."""
    done = subprocess.run(
        [sys.executable, "-c", "import sys, sidecar.process.cli; print(*sys.modules)"],
        capture_output=True, text=True, timeout=60, check=True, cwd=ROOT,
    )
    loaded = set(done.stdout.split())
    assert "sidecar.wire.rpc" in loaded
    assert NOT_AT_START & loaded == set()


def test_jsonrpcserver_stays_whole_for_a_later_importer() -> None:
    """After the sidecar loaded jsonrpcserver's pipeline without its `__init__`, a plain
    `import jsonrpcserver` still gets the whole package, sharing the loaded modules."""
    script = (
        "import sidecar.wire.rpc as rpc, jsonrpcserver\n"
        "assert jsonrpcserver.Success is rpc.Success\n"
        "print(jsonrpcserver.dispatch('{\"jsonrpc\": \"2.0\", \"method\": \"x\", \"id\": 1}'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True,
        cwd=ROOT,
    )
    assert '"code": -32601' in done.stdout


SPEC = ROOT / "build" / "telemetry-sidecar.spec"
PTHREAD_HOOK = ROOT / "build" / "rthooks" / "pyi_rth_pthread.py"


def spec_assignment(name: str) -> object:
    """The literal value the spec assigns to the top-level `name`."""
    for node in ast.parse(SPEC.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == name for target in node.targets
        ):
            return ast.literal_eval(node.value)
    raise AssertionError(f"the spec assigns no {name}")


def test_one_file_stores_what_it_unpacks_uncompressed() -> None:
    """The one-file binary's libraries, extensions and data are stored, so each start copies
    them out rather than inflating them; only the small bootstrap modules stay compressed."""
    table = spec_assignment("UNCOMPRESSED_NATIVE")
    assert isinstance(table, dict)
    assert {kind: table[kind] for kind in ("BINARY", "EXTENSION", "DATA", "PYZ")} == dict.fromkeys(
        ("BINARY", "EXTENSION", "DATA", "PYZ"), False
    )
    assert "cdict" in SPEC.read_text(encoding="utf-8")


def test_spec_runs_the_pthread_hook() -> None:
    """The trimmed build's Analysis names build/rthooks/pyi_rth_pthread.py, which exists."""
    text = SPEC.read_text(encoding="utf-8")
    assert 'runtime_hooks=[] if opts.no_trim else [str(ROOT / "build" / "rthooks" / ' in text
    assert '"pyi_rth_pthread.py")]' in text
    assert PTHREAD_HOOK.is_file()


def run_pthread_hook(names: list[str]) -> list[str]:
    """In a fresh interpreter whose `find_library` records its calls, run the hook, then look
    up `names`; returns one line per name (`name=answer`), then the recorded names and every
    subprocess the lookups started."""
    script = (
        "import runpy, sys, ctypes.util\n"
        "asked, spawned = [], []\n"
        "sys.addaudithook(lambda e, a: spawned.append(e) if e == 'subprocess.Popen' else None)\n"
        "real = ctypes.util.find_library\n"
        "ctypes.util.find_library = lambda n: asked.append(n) or real(n)\n"
        f"runpy.run_path({str(PTHREAD_HOOK)!r})\n"
        f"for name in {names!r}:\n"
        "    print(f'{name}={ctypes.util.find_library(name)}')\n"
        "print('asked=' + ','.join(asked))\n"
        "print('spawned=' + ','.join(spawned))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    return done.stdout.splitlines()


def on_glibc() -> bool:
    """This interpreter runs on Linux with glibc (musl has no `CS_GNU_LIBC_VERSION`)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        return (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc")
    except (ValueError, OSError):
        return False


glibc_only = pytest.mark.skipif(not on_glibc(), reason="the hook answers on glibc Linux only")


@glibc_only
def test_pthread_hook_answers_without_ldconfig() -> None:
    """With the hook, "pthread" is answered without a subprocess and names a library that has
    the function trio looks for; any other name still goes to ctypes' own lookup."""
    lines = run_pthread_hook(["pthread"])
    assert lines == ["pthread=libpthread.so.0", "asked=", "spawned="]
    assert hasattr(ctypes.CDLL("libpthread.so.0"), "pthread_setname_np")
    other = run_pthread_hook(["c"])
    assert other[0].startswith("c=libc.so")
    assert other[1] == "asked=c"


@pytest.mark.skipif(sys.platform.startswith("linux"), reason="the hook is inert off Linux")
def test_pthread_hook_is_inert_off_linux() -> None:
    """Off Linux the hook leaves `find_library` as it is: every lookup reaches ctypes' own."""
    lines = run_pthread_hook(["pthread"])
    assert lines[1] == "asked=pthread"
