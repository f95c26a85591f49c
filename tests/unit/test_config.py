"""Unit tests for sidecar.process.config, and the process contract for bad options, --version."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import platformdirs
import pytest

from sidecar import __version__
from sidecar.process.config import (
    Config,
    ConfigError,
    build_parser,
    mask_key,
    normalize_host,
    parse_config,
)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
ENV_NAMES = (
    "POSTHOG_HOST",
    "POSTHOG_API_KEY",
    "TELEMETRY_SIDECAR_DATA_DIR",
    "TELEMETRY_SIDECAR_LOG_LEVEL",
)


def parse(*argv: str, **environ: str) -> Config:
    """Parse `argv` against exactly the environment given (nothing from the real one)."""
    return parse_config(list(argv), environ)


# --- defaults and host ----------------------------------------------------------------------


def test_defaults() -> None:
    """With nothing given: eu host, queue 500, batch 50, 5 retries, info, no key."""
    config = parse()
    assert config.host == "https://eu.i.posthog.com"
    assert config.max_queue == 500
    assert config.batch_size == 50
    assert config.max_retries == 5
    assert config.log_level == "info"
    assert config.api_key is None
    assert config.data_dir == Path(platformdirs.user_data_dir("telemetry-sidecar", False))
    assert config.db_path == config.data_dir / "telemetry.db"


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("eu", "https://eu.i.posthog.com"),
        ("us", "https://us.i.posthog.com"),
        ("US", "https://us.i.posthog.com"),
        (" eu ", "https://eu.i.posthog.com"),
    ],
)
def test_host_shorthands(value: str, host: str) -> None:
    """`eu` and `us` (any case, any surrounding blanks) expand to PostHog's cloud hosts."""
    assert parse("--host", value).host == host


@pytest.mark.parametrize(
    ("value", "host"),
    [
        ("https://ph.example.com/", "https://ph.example.com"),
        ("https://ph.example.com", "https://ph.example.com"),
        ("https://ph.example.com/ingest/", "https://ph.example.com/ingest"),
        ("https://ph.example.com:8443//", "https://ph.example.com:8443"),
    ],
)
def test_host_trailing_slash_dropped(value: str, host: str) -> None:
    """A trailing slash is dropped so `{host}/batch/` has one slash."""
    assert normalize_host(value) == host


@pytest.mark.parametrize(
    "value",
    [
        "http://127.0.0.1:8000",
        "http://127.0.0.2",
        "http://localhost:8000/",
        "http://LOCALHOST",
        "http://[::1]:8000",
    ],
)
def test_plain_http_allowed_for_loopback(value: str) -> None:
    """Plain http is accepted for loopback hosts (a local fake or proxy)."""
    assert normalize_host(value) == value.rstrip("/")


@pytest.mark.parametrize(
    "value",
    [
        "http://eu.i.posthog.com",
        "http://10.0.0.1",
        "http://[::2]",
        "http://localhost.example.com",
        "http://0.0.0.0",
    ],
)
def test_plain_http_refused_for_other_hosts(value: str) -> None:
    """Plain http to a non-loopback host is refused, naming the rule."""
    with pytest.raises(ConfigError, match="loopback"):
        parse("--host", value)


@pytest.mark.parametrize(
    "value",
    [
        "ftp://example.com",
        "example.com",
        "https://",
        "https://ph.example.com/?a=1",
        "https://ph.example.com/#x",
        "eu.example",
    ],
)
def test_bad_hosts_refused(value: str) -> None:
    """Other schemes, missing hosts, queries and fragments are refused."""
    with pytest.raises(ConfigError):
        normalize_host(value)


# --- environment fallbacks ------------------------------------------------------------------


def test_environment_fallbacks() -> None:
    """Each documented variable fills its option when the option is absent."""
    config = parse(
        POSTHOG_HOST="us",
        POSTHOG_API_KEY="phc_from_env",
        TELEMETRY_SIDECAR_DATA_DIR="/tmp/from-env",
        TELEMETRY_SIDECAR_LOG_LEVEL="WARNING",
    )
    assert config.host == "https://us.i.posthog.com"
    assert config.api_key == "phc_from_env"
    assert config.data_dir == Path("/tmp/from-env")
    assert config.log_level == "warning"


def test_options_win_over_environment() -> None:
    """An option given on the command line beats its environment variable."""
    config = parse(
        "--host",
        "eu",
        "--api-key",
        "phc_from_option",
        "--data-dir",
        "/tmp/from-option",
        "--log-level",
        "DEBUG",
        POSTHOG_HOST="us",
        POSTHOG_API_KEY="phc_from_env",
        TELEMETRY_SIDECAR_DATA_DIR="/tmp/from-env",
        TELEMETRY_SIDECAR_LOG_LEVEL="error",
    )
    assert config.host == "https://eu.i.posthog.com"
    assert config.api_key == "phc_from_option"
    assert config.data_dir == Path("/tmp/from-option")
    assert config.log_level == "debug"


def test_blank_environment_values_are_ignored() -> None:
    """A variable set to blanks counts as unset."""
    config = parse(POSTHOG_HOST="  ", POSTHOG_API_KEY="", TELEMETRY_SIDECAR_LOG_LEVEL=" ")
    assert config.host == "https://eu.i.posthog.com"
    assert config.api_key is None
    assert config.log_level == "info"


def test_environment_host_is_checked_too() -> None:
    """POSTHOG_HOST goes through the same plain-http rule as --host."""
    with pytest.raises(ConfigError, match="loopback"):
        parse(POSTHOG_HOST="http://example.com")


def test_numeric_options() -> None:
    """Numeric options are read as ints; --max-retries 0 is allowed."""
    config = parse("--max-queue", "1", "--batch-size", "7", "--max-retries", "0")
    assert (config.max_queue, config.batch_size, config.max_retries) == (1, 7, 0)
    assert type(config.max_queue) is int


def test_options_left_out_take_the_config_defaults() -> None:
    """Every option's default is the `Config` field's own: nothing given, the parsed Config
    equals a Config built with only the required fields."""
    config = parse("--data-dir", "/tmp/x")
    assert config == Config(data_dir=Path("/tmp/x"), host="https://eu.i.posthog.com")


def test_help_shows_the_config_defaults() -> None:
    """`--help` states each default as Config holds it."""
    text = " ".join(build_parser().format_help().split())
    defaults = Config(data_dir=Path(), host="")
    for option, value in [
        ("at least 1 (default", defaults.max_queue),
        ("request, at least 1 (default", defaults.batch_size),
        ("0 or more (default", defaults.max_retries),
        ("[TELEMETRY_SIDECAR_LOG_LEVEL] (default", defaults.log_level),
        ("401/403, s (default", defaults.auth_hold_s),
    ]:
        assert f"{option} {value})" in text, option


# --- bad values -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["--max-queue", "0"],
        ["--max-queue", "-3"],
        ["--max-queue", "many"],
        ["--batch-size", "0"],
        ["--batch-size", "2.5"],
        ["--max-retries", "-1"],
        ["--max-retries", "1.5"],
        ["--unknown-option"],
        ["--log-level", "loud"],
        ["--backoff-base", "0"],
        ["--backoff-base", "nan"],
        ["--backoff-base", "5", "--backoff-max", "1"],
        ["stray"],
    ],
)
def test_bad_options_raise_config_error(argv: list[str]) -> None:
    """Out-of-range numbers, unknown options and bad levels raise a one-line ConfigError."""
    with pytest.raises(ConfigError) as info:
        parse(*argv)
    assert "\n" not in str(info.value)


def test_bad_log_level_from_environment() -> None:
    """An unknown TELEMETRY_SIDECAR_LOG_LEVEL is refused, naming the variable."""
    with pytest.raises(ConfigError, match="TELEMETRY_SIDECAR_LOG_LEVEL"):
        parse(TELEMETRY_SIDECAR_LOG_LEVEL="verbose")


@pytest.mark.parametrize(
    ("argv", "environ", "named"),
    [
        (["--api-key", "phc_\udcff"], {}, "--api-key"),
        ([], {"POSTHOG_API_KEY": "\udcc3phc_key"}, "POSTHOG_API_KEY"),
        (["--host", "https://eu.i.posthog\udcff.com"], {}, "--host"),
        ([], {"POSTHOG_HOST": "https://\udcffeu.i.posthog.com"}, "--host"),
    ],
)
def test_undecodable_bytes_in_key_or_host_are_refused(
    argv: list[str], environ: dict[str, str], named: str
) -> None:
    """Bytes that are not UTF-8 in argv or the environment (lone surrogates to Python) are
    refused at start, naming the option, instead of failing every call that stores the key."""
    with pytest.raises(ConfigError, match=named) as info:
        parse(*argv, **environ)
    assert "phc_" not in str(info.value)


# --- mask_key -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "masked"),
    [
        ("phc_abcdefghijklmnopWXYZ", "phc_…WXYZ"),
        ("secretkey123456", "…3456"),
        ("123456789", "…6789"),
        ("12345678", "…"),
        ("phc_1234", "…"),
        ("", "…"),
    ],
)
def test_mask_key(key: str, masked: str) -> None:
    """Only the phc_ prefix and the last four characters survive; short keys show nothing."""
    assert mask_key(key) == masked


def test_mask_key_never_contains_the_secret_part() -> None:
    """The middle of a key never appears in its masked form."""
    key = "phc_" + "S3CRETMIDDLE" + "tail"
    assert "S3CRETMIDDLE" not in mask_key(key)


# --- the process ----------------------------------------------------------------------------


def run_sidecar(*argv: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m sidecar` with `argv`, stdin closed, and a clean environment."""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES}
    return subprocess.run(
        [sys.executable, "-m", "sidecar", *argv],
        cwd=PROJECT_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_bad_option_exits_2_with_one_line_and_no_data(tmp_path: Path) -> None:
    """`--max-queue 0` exits 2 with exactly one stderr line, nothing on stdout, no data dir."""
    data_dir = tmp_path / "x"
    result = run_sidecar("--max-queue", "0", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("telemetry-sidecar: error:")
    assert "max-queue" in lines[0]
    assert not data_dir.exists()


def test_insecure_host_exits_2_before_touching_data(tmp_path: Path) -> None:
    """A refused --host also exits 2 with one line and creates no data dir."""
    data_dir = tmp_path / "y"
    result = run_sidecar("--host", "http://example.com", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert not data_dir.exists()


def test_undecodable_api_key_exits_2_before_touching_data(tmp_path: Path) -> None:
    """An --api-key whose bytes are not UTF-8 exits 2 with one line and creates no data dir."""
    data_dir = tmp_path / "z"
    result = run_sidecar("--api-key", "phc_\udcff", "--data-dir", str(data_dir))
    assert result.returncode == 2
    assert len(result.stderr.splitlines()) == 1
    assert "--api-key" in result.stderr
    assert not data_dir.exists()


def test_version_exits_0_and_prints_it() -> None:
    """`--version` prints the name and version on stdout and exits 0."""
    result = run_sidecar("--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"telemetry-sidecar {__version__}"
