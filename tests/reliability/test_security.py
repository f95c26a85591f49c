"""Suite 6: security. The capture host is fixed at spawn and only loopback may be plain http;
the api key never shows in stdout, stderr or any file but the database (and is masked where a
log names it); the data folder and every database file are owner-only; TLS certificates are
always checked (OS trust store plus certifi); HTTPS_PROXY/NO_PROXY are honoured, SOCKS5 proxies
too, and a proxy that cannot be used keeps the events and says why without its password.
"""

from __future__ import annotations

import os
import stat
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fm_support import (
    ConnectProxy,
    Socks5Proxy,
    TlsFiles,
    have_openssl,
    https_url,
    make_tls_files,
    tls_capture,
)

from sidecar.process.config import ConfigError, mask_key, normalize_host, parse_config
from sidecar.process.methods import METHODS
from sidecar_dev.capture import CaptureServer, Status
from sidecar_dev.driver import SidecarProcess, sidecar_command
from sidecar_dev.harness import (
    FAST_RETRIES,
    GUARD_S,
    TEST_KEY,
    numbered,
    numbered_event,
    wait_drained,
    wait_until,
)

HOST_PARAMS = ("host", "url", "api_host", "endpoint", "capture_url", "batch_url", "base_url",
               "server", "proxy")
DATABASE_FILES = {"telemetry.db", "telemetry.db-wal", "telemetry.db-shm"}


# ---- the host is fixed -----------------------------------------------------------------------


def test_no_call_can_change_the_host(tmp_path: Path) -> None:
    """Host-like params on every method get -32602; event fields naming another host and a
    redirect to it change nothing: every request goes to the configured server."""
    with CaptureServer() as good, CaptureServer() as evil:
        with SidecarProcess(tmp_path / "data", good.url, *FAST_RETRIES, api_key=TEST_KEY) as proc:
            for method in sorted(METHODS):
                for name in HOST_PARAMS:
                    params = {name: evil.url}
                    if method == "ph_send_batch":
                        params["batch"] = [numbered_event(0, scenario="host")]
                    if method == "ph_set_opt_out":
                        params["opt_out"] = False
                    answer = proc.call(method, params)
                    assert answer["error"]["code"] == -32602, (method, name, answer)
                    assert name in answer["error"]["data"], answer
            tricky = [
                {**numbered_event(1, scenario="host"), "host": evil.url, "url": evil.batch_url},
                numbered_event(2, scenario="host", **{"$host": evil.url, "api_host": evil.url,
                                       "$current_url": evil.batch_url}),
            ]
            assert proc.result("ph_send_batch", {"batch": tricky})["accepted"] == 2
            good.wait_for_events(2, timeout=GUARD_S)
            # The configured server redirects elsewhere: not followed, retried here.
            good.script(Status(307, headers={"Location": evil.batch_url}),
                        Status(308, headers={"Location": evil.batch_url}),
                        Status(301, headers={"Location": evil.batch_url}))
            batch = [numbered_event(3, scenario="host")]
            assert proc.result("ph_send_batch", {"batch": batch})["accepted"]
            good.wait_for_events(3, timeout=GUARD_S)
            status = wait_drained(proc)
            assert status["host"] == good.url
            assert proc.stop() == 0
        assert evil.requests == []
        assert [r.status for r in good.requests] == [200, 307, 308, 301, 200]
        assert {r.path for r in good.requests} == {"/batch/"}


REFUSED_HOSTS = [
    "http://example.com",
    "http://10.0.0.1",
    "http://192.168.1.20:8000",
    "http://[::ffff:127.0.0.1]",  # IPv4-mapped: refused rather than guessed
    "http://127.0.0.1.nip.io",
    "http://localhost.evil.example",
    "http://127.0.0.1@evil.example",
    "http://127.0.0.1:80@evil.example",
    "http://evil.example#@127.0.0.1",
    "http://evil.example?@127.0.0.1",
    "http://0x7f000001",
    "http://127.1",
    "ftp://127.0.0.1",
    "https://",
    "file:///etc/passwd",
    "http://user:pw@127.0.0.1",  # credentials would show in ph_status and the log
    "http://evil.example%2f@127.0.0.1",
    "http://evil.example\\@127.0.0.1",
    "https://evil.example\\@eu.i.posthog.com",
    "http://127.0.0.1:99999",  # a port no socket can have
    "https://eu.i.posthog.com:0",
]


def _start(
    data_dir: Path, args: list[str], extra: dict[str, str]
) -> subprocess.CompletedProcess[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("POSTHOG_")}
    return subprocess.run(
        [*sidecar_command(), "--data-dir", str(data_dir), "--api-key", TEST_KEY, *args],
        input=b"", capture_output=True, env={**env, **extra}, timeout=GUARD_S, check=False,
    )


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_bad_or_cleartext_remote_host_fails_option_parsing(host: str) -> None:
    """Plain http to anything but loopback (however disguised), credentials, or an unusable
    URL: a one-line option error, by --host or POSTHOG_HOST."""
    for argv, environ in ((["--host", host], {}), ([], {"POSTHOG_HOST": host})):
        with pytest.raises(ConfigError) as refused:
            parse_config(argv, environ)
        assert "--host" in str(refused.value)
        assert "\n" not in str(refused.value)


def test_refused_host_exits_2_before_touching_data(tmp_path: Path) -> None:
    """The real process, given some of those hosts by option or environment: exit 2, one
    stderr line, nothing on stdout, no data folder created."""
    picked = ["http://example.com", "http://127.0.0.1@evil.example", "http://127.0.0.1:99999"]
    cases = [(host, tmp_path / f"{i}", ["--host", host], {}) for i, host in enumerate(picked)]
    cases += [(host, tmp_path / f"env-{i}", [], {"POSTHOG_HOST": host})
              for i, host in enumerate(picked[:2])]
    with ThreadPoolExecutor(max_workers=len(cases)) as pool:
        runs = list(pool.map(lambda c: _start(c[1], c[2], c[3]), cases))
    for (host, data_dir, _, _), done in zip(cases, runs, strict=True):
        assert done.returncode == 2, (host, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, (host, done.stderr)
        assert b"--host" in done.stderr, (host, done.stderr)
        assert done.stdout == b""
        assert not data_dir.exists()


ACCEPTED_HOSTS = [
    "http://127.0.0.1:8000", "http://127.0.0.2", "http://[::1]:8000", "http://localhost:1",
    "HTTP://LOCALHOST", "https://eu.i.posthog.com:443/", "https://EU.i.posthog.com", "eu", "us",
]


@pytest.mark.parametrize("host", ACCEPTED_HOSTS)
def test_accepted_host_is_the_host_httpx_connects_to(host: str) -> None:
    """For every host the options accept, httpx sends to the very host the check approved
    (no parser differential through userinfo, backslashes or odd case)."""
    try:
        base = normalize_host(host)
    except ConfigError:
        pytest.fail(f"{host!r} should be accepted")
    checked = urlsplit(base)
    url = httpx.URL(base + "/batch/")
    assert url.host == (checked.hostname or "").lower()
    assert url.scheme == checked.scheme.lower()
    assert url.port == checked.port or (url.port is None and checked.port in (None, 80, 443))
    if url.scheme == "http":
        assert url.host in ("127.0.0.1", "127.0.0.2", "::1", "localhost")


# ---- the key never shows ---------------------------------------------------------------------

OPTION_KEY = "phc_option_key_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAwxyz"
CALL_KEY = "phc_call_key_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB9876"


def _files_holding(folder: Path, secret: str) -> list[str]:
    found = []
    for path in folder.rglob("*"):
        if path.is_file() and secret.encode() in path.read_bytes():
            found.append(path.name)
    return found


def test_api_key_never_shows_outside_the_database(tmp_path: Path) -> None:
    """At debug level, through 401/500/413/400 and bad calls, the keys appear in no
    stdout or stderr byte and in no file but the database; the refusal log masks the key."""
    data_dir = tmp_path / "data"
    with CaptureServer(max_body_bytes=4000) as server:
        server.script(Status(401), Status(500, headers={"Retry-After": "0"}))
        args = (*FAST_RETRIES, "--log-level", "debug", "--auth-hold", "0.3", "--max-retries", "1",
                "--request-timeout", "1")
        with SidecarProcess(data_dir, server.url, *args, api_key=OPTION_KEY) as proc:
            proc.result("ph_send_batch", {"batch": [numbered_event(0, scenario="key")]})
            server.wait_for_requests(1, timeout=GUARD_S)  # 401: the option key is held
            proc.result("ph_send_batch",
                        {"batch": [numbered_event(1, scenario="key")], "api_key": CALL_KEY})
            poisoned = numbered_event(2, scenario="key", **{"$cookieless_mode": "yes"})
            big = numbered_event(3, scenario="key", pad=os.urandom(6000).hex())
            proc.result("ph_send_batch",
                        {"batch": [poisoned, big, numbered_event(4, scenario="key")],
                         "api_key": CALL_KEY})
            for bad in (
                {"batch": "x", "api_key": CALL_KEY},
                {"batch": [], "api_key": CALL_KEY + "x" * 300},
                {"batch": [{"event": ""}], "api_key": CALL_KEY, "colour": OPTION_KEY},
            ):
                assert proc.call("ph_send_batch", bad)["error"]["code"] == -32602
            proc.call("ping", {"api_key": CALL_KEY})
            proc.call("ph_status", [CALL_KEY])
            wait_drained(proc)
            assert proc.stop() == 0
    server_keys = {r.payload.get("api_key") for r in server.requests if r.payload}
    assert server_keys == {OPTION_KEY, CALL_KEY}  # they did go where they belong
    for secret in (OPTION_KEY, CALL_KEY):
        assert secret not in proc.stderr
        assert secret.encode() not in proc.stdout
        holders = set(_files_holding(data_dir, secret))
        assert holders <= DATABASE_FILES, holders
    assert {p.name for p in data_dir.iterdir()} <= DATABASE_FILES
    assert "HTTP 401" in proc.stderr
    assert mask_key(OPTION_KEY) == "phc_…wxyz"
    assert f"api key {mask_key(OPTION_KEY)}" in proc.stderr  # which key, masked


# ---- owner-only files ------------------------------------------------------------------------


@pytest.mark.parametrize("umask", [0o000, 0o022, 0o077])
def test_data_folder_and_database_files_are_owner_only(tmp_path: Path, umask: int) -> None:
    """Whatever the umask, the data folder is created 0700 and telemetry.db, -wal and -shm 0600
    (checked while the process runs, when -wal and -shm exist)."""
    data_dir = tmp_path / "deep" / "data"
    old = os.umask(umask)
    try:
        proc = SidecarProcess(data_dir, "http://127.0.0.1:9", api_key=TEST_KEY)
    finally:
        os.umask(old)
    with proc:
        proc.result("ph_send_batch", {"batch": numbered(3, scenario="perm")})
        names = {p.name for p in data_dir.iterdir()}
        assert names >= DATABASE_FILES, names
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        for name in names:
            assert stat.S_IMODE((data_dir / name).stat().st_mode) == 0o600, name
        assert proc.stop() == 0
    assert stat.S_IMODE((data_dir / "telemetry.db").stat().st_mode) == 0o600


# ---- TLS and proxies -------------------------------------------------------------------------

needs_openssl = pytest.mark.skipif(not have_openssl(), reason="needs the openssl CLI")


@pytest.fixture(scope="module")
def fm_tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A private CA, a server certificate it signed, a self-signed one and a wrong-name one."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


def _tls_env(bundle: Path | None) -> dict[str, str]:
    env = {"NO_PROXY": "127.0.0.1,localhost"}
    if bundle is not None:
        env["SSL_CERT_FILE"] = str(bundle)
    return env


@needs_openssl
@pytest.mark.parametrize("which", ["self-signed", "unknown CA", "wrong name"])
def test_untrusted_certificate_is_refused(tmp_path: Path, fm_tls: TlsFiles, which: str) -> None:
    """A self-signed certificate, one from an unknown CA, or a trusted one for another name:
    nothing is sent, the events stay queued, last_error says it was the certificate."""
    cert, key, trust = {
        "self-signed": (fm_tls.self_signed_cert, fm_tls.self_signed_key, None),
        "unknown CA": (fm_tls.server_cert, fm_tls.server_key, None),
        "wrong name": (fm_tls.wrong_name_cert, fm_tls.wrong_name_key, fm_tls.ca_cert),
    }[which]
    with tls_capture(cert, key) as server:
        with SidecarProcess(tmp_path / "data", https_url(server), *FAST_RETRIES,
                        env=_tls_env(trust), api_key=TEST_KEY) as proc:
            proc.result("ph_send_batch", {"batch": numbered(2, scenario="tls")})
            wait_until(lambda: proc.result("ph_status")["last_error"] is not None,
                          "a failed attempt")
            status = proc.result("ph_status")
            assert proc.result("ph_flush", {"timeout": 0.3})["delivered"] == 0
            assert proc.stop() == 0
        assert server.requests == []
    assert status["queued"] == 2
    assert "certificate" in status["last_error"].lower(), status["last_error"]


@needs_openssl
def test_certificate_from_a_trusted_custom_ca_is_accepted(tmp_path: Path, fm_tls: TlsFiles
                                                          ) -> None:
    """With SSL_CERT_FILE naming a bundle that holds the private CA, events are delivered."""
    with (
        tls_capture(fm_tls.server_cert, fm_tls.server_key) as server,
        SidecarProcess(tmp_path / "data", https_url(server), *FAST_RETRIES,
                   env=_tls_env(fm_tls.ca_cert), api_key=TEST_KEY) as proc,
    ):
        proc.result("ph_send_batch", {"batch": numbered(2, scenario="tls")})
        server.wait_for_events(2, timeout=GUARD_S)
        assert wait_drained(proc)["last_error"] is None
        assert proc.stop() == 0


@needs_openssl
def test_https_proxy_is_used_unless_no_proxy_matches(tmp_path: Path, fm_tls: TlsFiles) -> None:
    """HTTPS_PROXY carries the requests (a CONNECT to the capture host); with NO_PROXY naming
    the host they go direct."""
    proxy = ConnectProxy()
    try:
        with tls_capture(fm_tls.server_cert, fm_tls.server_key) as server:
            target = f"127.0.0.1:{server.port}"
            for no_proxy, via_proxy in (("", True), ("127.0.0.1", False), ("localhost", True)):
                env = {**_tls_env(fm_tls.ca_cert), "HTTPS_PROXY": proxy.url,
                       "NO_PROXY": no_proxy}
                before_events = len(server.events)
                before_proxy = len(proxy.seen())
                with SidecarProcess(tmp_path / f"data-{no_proxy or 'none'}", https_url(server),
                                *FAST_RETRIES, env=env, api_key=TEST_KEY) as proc:
                    proc.result("ph_send_batch", {"batch": [numbered_event(0, scenario="proxy")]})
                    server.wait_for_events(before_events + 1, timeout=GUARD_S)
                    assert proc.stop() == 0
                tunnels = proxy.seen()[before_proxy:]
                assert tunnels == ([target] if via_proxy else []), (no_proxy, tunnels)
    finally:
        proxy.close()


@needs_openssl
def test_a_socks5_proxy_with_a_password_carries_the_requests(
    tmp_path: Path, fm_tls: TlsFiles
) -> None:
    """ALL_PROXY=socks5://user:password@… carries the requests to the capture host (the proxy
    checks the credentials); the password shows in no output of the sidecar."""
    proxy = Socks5Proxy(credentials=("ann", "s3cret-pass"))
    try:
        with tls_capture(fm_tls.server_cert, fm_tls.server_key) as server:
            env = {**_tls_env(fm_tls.ca_cert),
                   "ALL_PROXY": f"socks5://ann:s3cret-pass@127.0.0.1:{proxy.port}",
                   "NO_PROXY": ""}
            with SidecarProcess(tmp_path / "data", https_url(server), *FAST_RETRIES, env=env,
                                api_key=TEST_KEY) as proc:
                proc.result("ph_send_batch", {"batch": numbered(3, scenario="socks")})
                server.wait_for_events(3, timeout=GUARD_S)
                assert wait_drained(proc)["last_error"] is None
                assert proc.stop() == 0
                output = proc.stderr + proc.stdout.decode("utf-8", "replace")
        assert proxy.seen() and set(proxy.seen()) == {f"127.0.0.1:{server.port}"}
        assert set(proxy.offered) == {("ann", "s3cret-pass")}
        assert "s3cret-pass" not in output
    finally:
        proxy.close()


@pytest.mark.parametrize(
    "proxy",
    ["socks4://ann:s3cret-pass@127.0.0.1:1080", "http://ann:s3cret-pass@127.0.0.1:notaport"],
)
def test_a_proxy_that_cannot_be_used_keeps_the_events_and_says_why(
    tmp_path: Path, proxy: str
) -> None:
    """A proxy of a kind httpx does not speak, or a malformed one, ends nothing: the sidecar
    answers, keeps the events, names the proxy (password masked) in last_error, and stops
    cleanly; once started without it, the same folder delivers them."""
    with CaptureServer() as server:
        with SidecarProcess(tmp_path / "data", server.url, *FAST_RETRIES,
                            env={"ALL_PROXY": proxy, "HTTP_PROXY": proxy, "NO_PROXY": ""},
                            api_key=TEST_KEY) as proc:
            proc.result("ph_send_batch", {"batch": numbered(2, scenario="bad-proxy")})
            status: dict[str, Any] = {}

            def failed() -> bool:
                status.update(proc.result("ph_status"))
                return status["last_error"] is not None

            wait_until(failed, "a last_error", GUARD_S)
            assert proc.result("ph_status")["queued"] == 2
            assert proc.stop() == 0
            output = proc.stderr + proc.stdout.decode("utf-8", "replace")
        assert status["last_error"].startswith("cannot connect to capture: the proxy ")
        assert ":***@127.0.0.1" in status["last_error"]
        assert "s3cret-pass" not in status["last_error"] + output
        assert server.events == []
        with SidecarProcess(tmp_path / "data", server.url, *FAST_RETRIES,
                            api_key=TEST_KEY) as proc:
            server.wait_for_events(2, timeout=GUARD_S)
            assert proc.stop() == 0


def test_client_context_is_the_os_trust_store_and_verifies() -> None:
    """The capture client's TLS context is truststore's (the OS store) with certificate and host
    name checks on."""
    import ssl

    import truststore

    from sidecar.delivery.tls import client_ssl_context

    context = client_ssl_context()
    assert isinstance(context, truststore.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is True


def test_missing_ssl_cert_file_is_not_fatal(tmp_path: Path) -> None:
    """SSL_CERT_FILE naming a file that does not exist no longer kills the process at start
    (httpx's default context raised FileNotFoundError): it serves as usual."""
    env = {"SSL_CERT_FILE": str(tmp_path / "missing.pem"), "SSL_CERT_DIR": str(tmp_path / "no")}
    with SidecarProcess(tmp_path / "data", "https://127.0.0.1:9", env=env,
                        api_key=TEST_KEY) as proc:
        assert proc.result("ping")["version"]
        batch = [numbered_event(0, scenario="env")]
        assert proc.result("ph_send_batch", {"batch": batch})["accepted"] == 1
        assert proc.stop() == 0, proc.stderr
