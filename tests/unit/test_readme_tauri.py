"""The Tauri snippets in the README are valid for Tauri and for the sidecar they configure."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from sidecar.process.config import parse_config

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = ROOT / "clients/tauri/node_modules/@tauri-apps/cli/config.schema.json"
SNIPPET = re.compile(r"<!-- check: (?P<name>[\w-]+) -->\s*```json\n(?P<body>.*?)```", re.DOTALL)


def _snippets() -> dict[str, Any]:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    return {m["name"]: json.loads(m["body"]) for m in SNIPPET.finditer(text)}


@pytest.fixture(scope="module")
def tauri_schema() -> dict[str, Any]:
    """Tauri's config schema as shipped in the @tauri-apps/cli npm package (make client-test)."""
    if not SCHEMA.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{SCHEMA} is missing: CI must run `npm ci --prefix clients/tauri` first")
        pytest.skip("run `make client-test` (npm ci in clients/tauri) to get Tauri's schema")
    schema: dict[str, Any] = json.loads(SCHEMA.read_text(encoding="utf-8"))
    return schema


def test_readme_has_both_checked_snippets() -> None:
    """The guide's tauri.conf.json and capability snippets are present and parse as JSON."""
    assert set(_snippets()) >= {"tauri-config", "capability"}


def test_tauri_config_snippet_matches_tauris_schema(tauri_schema: dict[str, Any]) -> None:
    """The tauri.conf.json snippet validates against Tauri's own config schema."""
    config = _snippets()["tauri-config"]
    jsonschema.validate(config, tauri_schema)
    assert config["bundle"]["externalBin"] == ["binaries/telemetry-sidecar"]


def test_capability_snippet_matches_tauris_capability_schema(tauri_schema: dict[str, Any]) -> None:
    """The capability snippet validates against the Capability definition in Tauri's schema."""
    capability_schema = {
        "$schema": tauri_schema["$schema"],  # draft-07, like the file it comes from
        "$ref": "#/definitions/Capability",
        "definitions": tauri_schema["definitions"],
    }
    jsonschema.validate(_snippets()["capability"], capability_schema)


def test_capability_args_scope_admits_a_real_spawn_and_the_sidecar_accepts_it(
    tmp_path: Path,
) -> None:
    """The scoped args admit what the client passes, and the sidecar parses that command line."""
    capability = _snippets()["capability"]
    identifiers = [p if isinstance(p, str) else p["identifier"] for p in capability["permissions"]]
    assert identifiers == ["shell:allow-spawn", "shell:allow-stdin-write", "shell:allow-kill"]
    (scope,) = capability["permissions"][0]["allow"]
    assert scope["name"] == "binaries/telemetry-sidecar"
    assert scope["sidecar"] is True
    spawn_args = [
        "--data-dir",
        str(tmp_path / "com.example.myapp"),
        "--host",
        "eu",
        "--api-key",
        "phc_your_project_key",
    ]
    assert len(scope["args"]) == len(spawn_args)
    for allowed, given in zip(scope["args"], spawn_args, strict=True):
        if isinstance(allowed, str):
            assert allowed == given
        else:
            assert re.fullmatch(allowed["validator"], given), (allowed, given)
    config = parse_config(spawn_args, environ={})
    assert config.host == "https://eu.i.posthog.com"
    assert config.api_key == "phc_your_project_key"


def test_capability_refuses_an_api_key_that_would_smuggle_an_option() -> None:
    """The key validator refuses values such as '--host' that would change the sidecar's host."""
    capability = _snippets()["capability"]
    key_validator = capability["permissions"][0]["allow"][0]["args"][5]["validator"]
    assert re.fullmatch(key_validator, "--host") is None
    assert re.fullmatch(key_validator, "phc_ok") is not None
