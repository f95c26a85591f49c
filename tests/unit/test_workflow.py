"""The release workflow cannot run here, so its syntax and schema are checked instead.

The YAML is parsed with PyYAML and validated against the GitHub workflow JSON schema that the
check-jsonschema package vendors (SchemaStore's `github-workflow.json`, no network). Then the
facts the release depends on are checked: the four targets, the build and test commands, the
orphan tests on every OS, and signing and notarization steps that run only when their secrets
exist.
"""

from __future__ import annotations

import copy
import json
import plistlib
import re
import shlex
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
TARGETS = {
    "ubuntu-22.04": "x86_64-unknown-linux-gnu",
    "windows-2022": "x86_64-pc-windows-msvc",
    "macos-14": "aarch64-apple-darwin",
    "macos-13": "x86_64-apple-darwin",
}


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with YAML 1.2 booleans, as GitHub reads workflows (`on:` stays a string)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool",
    re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
    list("tTfF"),
)


def load_workflow() -> dict[str, Any]:
    """The workflow as GitHub would read it."""
    document = yaml.load(WORKFLOW.read_text(encoding="utf-8"), Loader=_Yaml12Loader)
    assert isinstance(document, dict)
    return document


def workflow_schema() -> dict[str, Any]:
    """SchemaStore's GitHub workflow schema, as vendored by check-jsonschema."""
    vendored = resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(
        (vendored / "github-workflows.json").read_text(encoding="utf-8")
    )
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Every schema violation, as readable lines."""
    validator = jsonschema.Draft7Validator(workflow_schema())
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def build_steps() -> list[dict[str, Any]]:
    """The steps of the matrix build job."""
    steps: list[dict[str, Any]] = load_workflow()["jobs"]["build"]["steps"]
    return steps


def step(name_start: str) -> dict[str, Any]:
    """The build step whose name starts with `name_start`."""
    return next(s for s in build_steps() if s.get("name", "").startswith(name_start))


def test_workflow_matches_the_github_workflow_schema() -> None:
    """The YAML parses and validates against the GitHub workflow schema."""
    assert schema_errors(load_workflow()) == []


def test_schema_check_catches_a_broken_workflow() -> None:
    """The check bites: a misspelt key and a job without runs-on are reported."""
    broken = copy.deepcopy(load_workflow())
    broken["jobs"]["build"]["runs_on"] = broken["jobs"]["build"].pop("runs-on")
    assert schema_errors(broken)


def test_matrix_builds_the_four_targets() -> None:
    """Linux x86_64, Windows x86_64 and macOS arm64 and x86_64, each named by its triple."""
    include = load_workflow()["jobs"]["build"]["strategy"]["matrix"]["include"]
    assert {row["os"]: row["target"] for row in include} == TARGETS


def test_build_and_binary_tests_use_the_project_commands() -> None:
    """The binary is built by build/build.py and the integration suite runs against it."""
    assert "build/build.py" in step("Build")["run"]
    assert '--target "${{ matrix.target }}"' in step("Build")["run"]
    tests = step("Integration tests against the binary")
    assert tests["env"]["SIDECAR_COMMAND"] == "${{ env.BINARY }}"
    assert shlex.split(tests["run"])[-1] == "tests/integration"
    assert 'build/build.py --print-path --target "${{ matrix.target }}"' in step("Install")["run"]


def test_orphan_tests_run_on_every_os_from_source_and_against_the_binary() -> None:
    """Each OS of the matrix runs the orphan tests on `python -m sidecar` (no condition, no
    SIDECAR_COMMAND) and, in the integration suite, on the binary."""
    names = [s.get("name", "") for s in build_steps()]
    orphans = step("Orphan tests (source)")
    assert shlex.split(orphans["run"])[-1] == "tests/integration/test_orphans.py"
    assert "if" not in orphans
    assert "SIDECAR_COMMAND" not in orphans.get("env", {})
    assert names.index("Orphan tests (source)") < names.index("Build")
    assert (ROOT / "tests" / "integration" / "test_orphans.py").is_file()
    binary = step("Integration tests against the binary")
    assert "if" not in binary
    assert shlex.split(binary["run"])[-1] == "tests/integration"


@pytest.mark.parametrize(
    "name", ["Import the signing certificate", "Check the signature", "Notarize"]
)
def test_signing_steps_run_only_on_macos_with_secrets(name: str) -> None:
    """Signing and notarization run on macOS and only when their secrets are configured."""
    condition = step(name)["if"]
    assert "runner.os == 'macOS'" in condition
    assert "env.HAS_MACOS_SIGNING == 'true'" in condition
    job_env = load_workflow()["jobs"]["build"]["env"]
    assert "secrets.MACOS_CERTIFICATE != ''" in job_env["HAS_MACOS_SIGNING"]
    assert "secrets.APPLE_ID != ''" in job_env["HAS_NOTARY"]


def test_notarization_uses_notarytool() -> None:
    """Notarization goes through `xcrun notarytool` and waits for the verdict."""
    run = step("Notarize")["run"]
    assert "xcrun notarytool submit" in run
    assert "--wait" in run


def test_entitlements_grant_what_a_one_file_binary_needs() -> None:
    """The plist the signing uses is valid and grants the two hardened-runtime exceptions."""
    entitlements = plistlib.loads((ROOT / "build" / "entitlements.plist").read_bytes())
    assert entitlements == {
        "com.apple.security.cs.allow-unsigned-executable-memory": True,
        "com.apple.security.cs.disable-library-validation": True,
    }


def test_release_job_attaches_binaries_on_tags_only() -> None:
    """The release job runs for tag pushes, after the builds, with write access to contents."""
    workflow = load_workflow()
    assert workflow["on"]["push"]["tags"] == ["v*"]
    release = workflow["jobs"]["release"]
    assert release["needs"] == "build"
    assert release["if"] == "startsWith(github.ref, 'refs/tags/')"
    assert release["permissions"] == {"contents": "write"}
    assert workflow["permissions"] == {"contents": "read"}
