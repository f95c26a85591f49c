"""The TLS context of the capture client: the operating system's trust store, always verifying.

Desktop users behind a TLS-inspecting corporate proxy have its CA in the OS store, not in
certifi's bundle, so `truststore` checks certificates with the platform's own verifier (macOS
Security framework, Windows CryptoAPI; on Linux, OpenSSL's system locations, which honour
SSL_CERT_FILE and SSL_CERT_DIR). On macOS and Windows those two variables are loaded as well, as
httpx's default context would. certifi's roots are added only where the system has none (a bare
Linux without ca-certificates), so delivery never depends on the host being set up. Certificates
and host names are always verified; a bad SSL_CERT_FILE is logged and skipped, never fatal.
"""

from __future__ import annotations

import logging
import os
import re
import ssl
import sys

import certifi
import truststore

log = logging.getLogger(__name__)

# Where truststore looks on Linux when OpenSSL's compiled-in locations are empty (its own list).
_LINUX_CA_FILES = (
    "/etc/ssl/cert.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/pki/tls/cert.pem",
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/ssl/ca-bundle.pem",
)
_HASHED_CERT = re.compile(r"^[0-9a-fA-F]{8}\.[0-9]$")


def client_ssl_context() -> ssl.SSLContext:
    """A verifying client context backed by the OS trust store (see the module docstring)."""
    context = truststore.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if sys.platform in ("darwin", "win32"):
        cafile = os.environ.get("SSL_CERT_FILE") or None
        capath = os.environ.get("SSL_CERT_DIR") or None
        if cafile or capath:
            try:
                context.load_verify_locations(cafile=cafile, capath=capath)
            except (OSError, ssl.SSLError) as exc:
                log.warning("ignoring SSL_CERT_FILE/SSL_CERT_DIR: %s", exc)
    elif not _system_store_present():
        log.info("no system CA certificates found; using certifi's")
        context.load_verify_locations(cafile=certifi.where())
    return context


def _system_store_present() -> bool:
    """Whether OpenSSL (or truststore's fallback list) has CA certificates to load on Linux."""
    paths = ssl.get_default_verify_paths()
    if paths.cafile:
        return True
    if (
        paths.capath
        and os.path.isdir(paths.capath)
        and any(_HASHED_CERT.match(name) for name in os.listdir(paths.capath))
    ):
        return True
    return any(os.path.isfile(path) for path in _LINUX_CA_FILES)
