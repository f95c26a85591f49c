"""Unit tests for sidecar.delivery.httpclient: which proxy a capture host goes through (and that
it is the one httpx's own client would pick), and one attempt through a transport
(httpx.MockTransport) with the headers and timeouts it must carry."""

from __future__ import annotations

import httpx
import pytest
from httpx._utils import get_environment_proxies

from sidecar import __version__
from sidecar.delivery.httpclient import Endpoint, make_transport, proxy_for, redact_proxy
from sidecar.delivery.policy import FailureKind, Response, TransportFailure, TransportUnavailable

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start every test from an environment that names no proxy."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.mark.parametrize(
    ("environment", "url", "expected"),
    [
        ({}, "https://eu.i.posthog.com", None),
        ({"HTTPS_PROXY": "http://proxy.corp:3128"}, "https://eu.i.posthog.com",
         "http://proxy.corp:3128"),
        ({"https_proxy": "proxy.corp:3128"}, "https://eu.i.posthog.com", "http://proxy.corp:3128"),
        ({"HTTP_PROXY": "http://proxy.corp:3128"}, "https://eu.i.posthog.com", None),
        ({"ALL_PROXY": "http://all.corp:8080"}, "https://eu.i.posthog.com", "http://all.corp:8080"),
        ({"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "http://all:2"}, "https://us.i.posthog.com",
         "http://p:1"),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "posthog.com"}, "https://eu.i.posthog.com",
         None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": ".posthog.com"}, "https://eu.i.posthog.com",
         None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "example.com, *"}, "https://eu.i.posthog.com",
         None),
        ({"HTTPS_PROXY": "http://p:1", "NO_PROXY": "hog.com"}, "https://eu.i.posthog.com",
         "http://p:1"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1"}, "http://127.0.0.1:8000", None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:8000"}, "http://127.0.0.1:8000",
         None),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "127.0.0.1:9999"}, "http://127.0.0.1:8000",
         "http://p:1"),
        ({"HTTP_PROXY": "http://p:1", "NO_PROXY": "localhost"}, "http://127.0.0.1:8000",
         "http://p:1"),
    ],
)
def test_proxy_for_follows_the_environment_and_no_proxy(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], url: str, expected: str | None
) -> None:
    """The proxy is the one named for the URL's scheme (else ALL_PROXY), with http:// assumed;
    NO_PROXY entries that match the host (a domain and its subdomains, an address, an
    address:port, or *) mean a direct connection."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert proxy_for(url) == expected


def httpx_client_proxy(url: str) -> str | None:
    """The proxy `httpx.AsyncClient(trust_env=True)` sends a request for `url` through, or None
    (`verify` plays no part in choosing it).

    httpx has no public call for this: the client turns its environment discovery
    (`httpx._utils.get_environment_proxies`) into URL patterns, most specific first, and
    `_transport_for_url` takes the first that matches. This follows the same steps on the same
    objects; httpx is pinned below 1.0, and a change there shows up here.
    """
    proxies = get_environment_proxies()
    client = httpx.AsyncClient(trust_env=True, verify=False)  # no trust store to load
    target = httpx.URL(url)
    for pattern, transport in client._mounts.items():
        if pattern.matches(target):
            return None if transport is None else proxies[pattern.pattern]
    return None


PARITY_PROXIES = [
    {},
    {"HTTPS_PROXY": "http://proxy.corp:3128"},
    {"https_proxy": "proxy.corp:3128"},
    {"HTTP_PROXY": "http://p:1"},
    {"http_proxy": "http://p:1"},
    {"ALL_PROXY": "http://all:2"},
    {"all_proxy": "all:2"},
    {"HTTPS_PROXY": "http://p:1", "ALL_PROXY": "http://all:2"},
    {"HTTP_PROXY": "http://p:1", "all_proxy": "http://all:2"},
    {"HTTP_PROXY": "http://upper:1", "http_proxy": "http://lower:2"},
]
PARITY_NO_PROXY = [
    None, "posthog.com", ".posthog.com", "*", "example.com, *", "hog.com", "EU.I.POSTHOG.COM",
    "*.posthog.com", "i.posthog.com:443", "posthog.com,localhost", "127.0.0.1",
    "127.0.0.1:8000", "127.0.0.1:9999", "localhost", "127.0.0.0/8", "::1",
]
PARITY_URLS = [
    "https://eu.i.posthog.com", "https://posthog.com", "https://eu.i.posthog.com:443",
    "https://eu.i.posthog.com:8443", "http://127.0.0.1:8000", "http://localhost:8000",
    "http://[::1]:8000",
]


def _leading_dot_covers_the_apex(no_proxy: str | None, url: str) -> bool:
    return no_proxy == ".posthog.com" and httpx.URL(url).host == "posthog.com"


@pytest.mark.parametrize("environment", PARITY_PROXIES)
@pytest.mark.parametrize("no_proxy", PARITY_NO_PROXY)
def test_proxy_for_picks_what_httpx_picks(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], no_proxy: str | None
) -> None:
    """Across HTTPS_PROXY/HTTP_PROXY/ALL_PROXY (upper and lower case, with and without a
    scheme) and NO_PROXY forms (domains, leading dots, wildcards, case, ports, addresses,
    CIDR, IPv6, localhost), `proxy_for` names the proxy httpx's own client would use, with one
    difference: NO_PROXY=.example.com also covers example.com itself, as in curl and urllib."""
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    if no_proxy is not None:
        monkeypatch.setenv("NO_PROXY", no_proxy)
    for url in PARITY_URLS:
        ours, theirs = proxy_for(url), httpx_client_proxy(url)
        if _leading_dot_covers_the_apex(no_proxy, url) and theirs is not None:
            assert ours is None, url
        else:
            assert ours == theirs, url


def _answering(status: int, seen: list[httpx.Request], **headers: str) -> httpx.MockTransport:
    def handle(request: httpx.Request) -> httpx.Response:
        request.read()
        seen.append(request)
        return httpx.Response(status, headers=headers, json={"status": 1})

    return httpx.MockTransport(handle)


async def test_post_sends_the_body_with_its_headers_and_timeouts() -> None:
    """One POST to the /batch/ URL carrying the gzip body as is, the JSON and gzip headers,
    our User-Agent, and the attempt's timeout for every phase; the answer's status comes back."""
    seen: list[httpx.Request] = []
    endpoint = Endpoint("https://capture.test/batch/", _answering(200, seen))
    answer = await endpoint.post(b"\x1f\x8bbody", timeout=7.5)
    await endpoint.aclose()

    assert answer == Response(200, None)
    [request] = seen
    assert (request.method, str(request.url)) == ("POST", "https://capture.test/batch/")
    assert request.content == b"\x1f\x8bbody"
    assert request.headers["Content-Type"] == "application/json"
    assert request.headers["Content-Encoding"] == "gzip"
    assert request.headers["Content-Length"] == "6"
    assert request.headers["User-Agent"] == f"telemetry-sidecar/{__version__}"
    assert request.extensions["timeout"] == dict.fromkeys(("connect", "read", "write", "pool"), 7.5)


async def test_post_reports_the_answer_or_names_the_transport_failure() -> None:
    """The status and Retry-After come back as they are; a refused connection is a connect
    failure, a read timeout a timeout and a broken connection a lost one, each named."""
    seen: list[httpx.Request] = []
    busy = Endpoint("https://capture.test/batch/", _answering(503, seen, **{"Retry-After": "9"}))
    assert await busy.post(b"x", timeout=1.0) == Response(503, "9")

    def failing(error: type[httpx.TransportError]) -> Endpoint:
        def handle(request: httpx.Request) -> httpx.Response:
            raise error("failed", request=request)

        return Endpoint("https://c.test/batch/", httpx.MockTransport(handle))

    cases = [
        (httpx.ConnectError, TransportFailure(FailureKind.CONNECT, "ConnectError")),
        (httpx.ConnectTimeout, TransportFailure(FailureKind.CONNECT, "ConnectTimeout")),
        (httpx.ReadTimeout, TransportFailure(FailureKind.TIMEOUT, "ReadTimeout")),
        (httpx.WriteTimeout, TransportFailure(FailureKind.TIMEOUT, "WriteTimeout")),
        (httpx.RemoteProtocolError, TransportFailure(FailureKind.LOST, "RemoteProtocolError")),
        (httpx.ReadError, TransportFailure(FailureKind.LOST, "ReadError")),
    ]
    for error, expected in cases:
        assert await failing(error).post(b"x", 1.0) == expected


@pytest.mark.parametrize(
    "proxy",
    ["http://proxy.corp:3128", "socks5://127.0.0.1:1080", "socks5h://user:secret@vpn.local:1080"],
)
async def test_http_and_socks_proxies_make_a_transport(
    monkeypatch: pytest.MonkeyPatch, proxy: str
) -> None:
    """http, socks5 and socks5h proxies (ALL_PROXY) give a transport; making it connects to
    nothing."""
    monkeypatch.setenv("ALL_PROXY", proxy)
    transport = make_transport("https://eu.i.posthog.com")
    await transport.aclose()


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        ("ftp://proxy.corp:21", "ftp://proxy.corp:21"),
        ("socks4://ann:hunter2@proxy.corp:1080", "socks4://ann:***@proxy.corp:1080"),
        ("http://proxy.corp:notaport", "http://proxy.corp:notaport"),
    ],
)
def test_a_proxy_that_cannot_be_used_is_named_without_its_password(
    monkeypatch: pytest.MonkeyPatch, proxy: str, shown: str
) -> None:
    """A proxy httpx cannot use (a kind it does not speak, a malformed URL) is reported as
    TransportUnavailable naming the proxy, its password masked."""
    monkeypatch.setenv("HTTPS_PROXY", proxy)
    with pytest.raises(TransportUnavailable) as raised:
        make_transport("https://eu.i.posthog.com")
    assert str(raised.value).startswith(f"the proxy {shown} cannot be used (")
    assert "hunter2" not in str(raised.value)


@pytest.mark.parametrize(
    ("proxy", "shown"),
    [
        ("http://proxy.corp:3128", "http://proxy.corp:3128"),
        ("socks5://ann:hunter2@p:1080", "socks5://ann:***@p:1080"),
        ("socks5://ann@p:1080", "socks5://ann@p:1080"),
        ("http://ann:pa@ss@p:1", "http://ann:***@p:1"),
        ("ann:hunter2@p:1", "ann:***@p:1"),
    ],
)
def test_redact_proxy_masks_only_the_password(proxy: str, shown: str) -> None:
    assert redact_proxy(proxy) == shown
