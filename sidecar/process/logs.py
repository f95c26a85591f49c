"""Logging to stderr, with API keys masked wherever they would appear."""

from __future__ import annotations

import logging
import sys

from sidecar.process.config import mask_key

# Keys remembered for masking. Every call may name a key, so the set must not grow without
# bound; an app uses one or a few.
MAX_SECRETS = 64


class SecretMasker(logging.Filter):
    """Replaces every registered secret in a record's final text with its masked form."""

    def __init__(self, max_secrets: int = MAX_SECRETS) -> None:
        """Start with no secrets; keep at most `max_secrets`, the most recently remembered."""
        super().__init__()
        self._secrets: dict[str, str] = {}
        self._max = max_secrets

    def remember(self, secret: str) -> None:
        """Mask `secret` from now on (bounded: a flood of distinct keys evicts the oldest)."""
        if not secret:
            return
        mask = self._secrets.pop(secret, None) or mask_key(secret)
        self._secrets[secret] = mask  # dicts keep insertion order: last is most recent
        while len(self._secrets) > self._max:
            del self._secrets[next(iter(self._secrets))]

    def filter(self, record: logging.LogRecord) -> bool:
        """Render the message once, mask it, and keep the record."""
        if self._secrets:
            text = record.getMessage()
            masked = text
            for secret, mask in self._secrets.items():
                masked = masked.replace(secret, mask)
            if masked != text:
                record.msg, record.args = masked, None
            if record.exc_info and not record.exc_text:
                record.exc_text = logging.Formatter().formatException(record.exc_info)
            if record.exc_text:
                for secret, mask in self._secrets.items():
                    record.exc_text = record.exc_text.replace(secret, mask)
        return True


def configure_logging(level: str, masker: SecretMasker) -> None:
    """Send all logs to stderr at `level`; keep chatty libraries at warning."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(masker)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("httpx", "httpcore", "hpack"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
