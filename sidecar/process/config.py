"""The process's settings: parsed once from argv and the environment, then frozen."""

from __future__ import annotations

import argparse
import dataclasses
import ipaddress
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit

import platformdirs

from sidecar import __version__
from sidecar.queue.durability import Durability
from sidecar.wire.events import is_unicode_text

HOST_SHORTHANDS = {"eu": "https://eu.i.posthog.com", "us": "https://us.i.posthog.com"}
DEFAULT_HOST = HOST_SHORTHANDS["eu"]
LOG_LEVELS = ("debug", "info", "warning", "error")
APP_NAME = "telemetry-sidecar"


class ConfigError(ValueError):
    """A bad option or environment value; the message is one line for stderr."""


@dataclass(frozen=True, slots=True)
class Config:
    """Everything the process needs to know at spawn. Fixed for the life of the process."""

    data_dir: Path
    host: str
    api_key: str | None = None
    max_queue: int = 500
    batch_size: int = 50
    max_retries: int = 5
    log_level: str = "info"
    # Tuning knobs (not part of the contract): tests shrink them to stay fast.
    backoff_base_s: float = 1.0
    backoff_max_s: float = 30.0
    retry_after_max_s: float = 3600.0
    auth_hold_s: float = 600.0
    request_timeout_s: float = 30.0
    max_batch_bytes: int = 5 * 1024 * 1024
    durability: Durability = Durability.FULL

    @property
    def db_path(self) -> Path:
        """Where the queue lives."""
        return self.data_dir / "telemetry.db"


def normalize_host(value: str) -> str:
    """Expand `eu`/`us`, check the scheme, and drop the trailing slash.

    Plain http is allowed only for loopback hosts, so events and keys never cross a network
    in clear text.
    """
    if not is_unicode_text(value):
        raise ConfigError("--host holds bytes that are not UTF-8 text")
    url = HOST_SHORTHANDS.get(value.strip().lower(), value.strip())
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"--host must be eu, us or an http(s) URL, not {value!r}")
    if parts.query or parts.fragment:
        raise ConfigError("--host must not carry a query or fragment")
    if "@" in parts.netloc:
        # Credentials would be shown by ph_status and the log; and "a@b" hides which host it is.
        raise ConfigError("--host must not carry a user name or password")
    try:
        port = parts.port
    except ValueError:  # out of range or not a number
        port = 0
    if port == 0:
        raise ConfigError(f"--host has an invalid port: {value!r}")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise ConfigError(f"--host: plain http is allowed only for loopback hosts, not {value!r}")
    return url.rstrip("/")


def _is_loopback(hostname: str) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname).is_loopback
    except ValueError:
        return False


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # The contract asks for a single line on stderr, not argparse's usage block.
        raise ConfigError(message)


def _default(field: str) -> Any:
    """The default of a `Config` field: the one place each option's default is written."""
    return next(f.default for f in dataclasses.fields(Config) if f.name == field)


def _int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type: a whole number no smaller than `minimum`."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} is below the minimum {minimum}")
        return value

    return parse


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} must be a positive number")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command line, as `--help` shows it."""
    parser = _Parser(
        prog=APP_NAME,
        description="Relay PostHog events from a Tauri app through a durable SQLite queue. "
        "Speaks line-delimited JSON-RPC 2.0 on stdin/stdout.",
    )
    add = parser.add_argument
    add("--data-dir", help="folder of telemetry.db [TELEMETRY_SIDECAR_DATA_DIR] "
        "(default: the platform's user data folder)")
    add("--host", help="capture host: eu, us or a URL [POSTHOG_HOST] (default: eu)")
    add("--api-key", help="project API key used when a call carries none [POSTHOG_API_KEY]")
    add("--max-queue", type=_int_at_least(1), default=_default("max_queue"),
        help="queue bound, at least 1 (default %(default)s)")
    add("--batch-size", type=_int_at_least(1), default=_default("batch_size"),
        help="events per request, at least 1 (default %(default)s)")
    add("--max-retries", type=_int_at_least(0), default=_default("max_retries"),
        help="retries after the first attempt on server errors, 0 or more (default %(default)s)")
    add("--durability", type=str.lower, choices=[level.value for level in Durability],
        help="full: an answered ph_send_batch survives a power cut; normal: it survives the "
        "process being killed, and a power cut may lose the last seconds "
        f"[TELEMETRY_SIDECAR_DURABILITY] (default {_default('durability').value})")
    add("--log-level", type=str.lower, choices=LOG_LEVELS,
        help="debug, info, warning or error [TELEMETRY_SIDECAR_LOG_LEVEL] "
        f"(default {_default('log_level')})")
    add("--backoff-base", type=_positive_float, default=_default("backoff_base_s"),
        help="first retry delay, s (default %(default)s)")
    add("--backoff-max", type=_positive_float, default=_default("backoff_max_s"),
        help="retry delay cap, s (default %(default)s)")
    add("--retry-after-max", type=_positive_float, default=_default("retry_after_max_s"),
        help="Retry-After cap, s (default %(default)s)")
    add("--auth-hold", type=_positive_float, default=_default("auth_hold_s"),
        help="how long events are held after a 401/403, s (default %(default)s)")
    add("--request-timeout", type=_positive_float, default=_default("request_timeout_s"),
        help="HTTP timeout, s (default %(default)s)")
    add("--version", action="version", version=f"{APP_NAME} {__version__}")
    return parser


def parse_config(argv: Sequence[str], environ: Mapping[str, str] = os.environ) -> Config:
    """Build the Config from the command line, falling back to the environment."""
    args = build_parser().parse_args(list(argv))

    def pick(option: str | None, variable: str) -> str | None:
        if option is not None:
            return option
        value = environ.get(variable, "").strip()
        return value or None

    data_dir = pick(args.data_dir, "TELEMETRY_SIDECAR_DATA_DIR")
    log_level = pick(args.log_level, "TELEMETRY_SIDECAR_LOG_LEVEL") or _default("log_level")
    log_level = log_level.lower()
    if log_level not in LOG_LEVELS:
        raise ConfigError(f"TELEMETRY_SIDECAR_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}")
    durability_name = (pick(args.durability, "TELEMETRY_SIDECAR_DURABILITY")
                       or _default("durability").value).lower()
    if durability_name not in {level.value for level in Durability}:
        raise ConfigError("TELEMETRY_SIDECAR_DURABILITY must be full or normal")
    api_key = pick(args.api_key, "POSTHOG_API_KEY")
    if api_key is not None and not is_unicode_text(api_key):
        # Undecodable bytes in argv or the environment arrive as lone surrogates, which neither
        # the queue nor capture can carry.
        raise ConfigError("--api-key (or POSTHOG_API_KEY) holds bytes that are not UTF-8 text")
    backoff_base, backoff_max = args.backoff_base, args.backoff_max
    if backoff_max < backoff_base:
        raise ConfigError("--backoff-max must not be below --backoff-base")
    return Config(
        data_dir=Path(data_dir) if data_dir else Path(platformdirs.user_data_dir(APP_NAME, False)),
        host=normalize_host(pick(args.host, "POSTHOG_HOST") or DEFAULT_HOST),
        api_key=api_key,
        max_queue=args.max_queue,
        batch_size=args.batch_size,
        max_retries=args.max_retries,
        log_level=log_level,
        backoff_base_s=backoff_base,
        backoff_max_s=backoff_max,
        retry_after_max_s=args.retry_after_max,
        auth_hold_s=args.auth_hold,
        request_timeout_s=args.request_timeout,
        durability=Durability(durability_name),
    )


def mask_key(key: str) -> str:
    """A key as it may appear in logs: its prefix and last four characters only."""
    if len(key) <= 8:
        return "…"
    prefix = key[:4] if key.startswith("phc_") else ""
    return f"{prefix}…{key[-4:]}"
