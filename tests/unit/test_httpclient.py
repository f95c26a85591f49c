"""Unit tests for sidecar.delivery.httpclient and .direct: which proxy a capture host goes through
(and that it is the one httpx's own client would pick), one attempt through an httpx transport
(httpx.MockTransport) with the headers and timeouts it must carry, and the direct endpoint
against the fake capture server: headers, kept connections, and every way an answer can fail."""

from __future__ import annotations

import httpx
import pytest
import trio
import trio.testing
from httpx._utils import get_environment_proxies

from sidecar import __version__
from sidecar.delivery.direct import KEEPALIVE_EXPIRY_S, MAX_ANSWER_BYTES, DirectEndpoint
from sidecar.delivery.httpclient import TransportEndpoint, make_endpoint, proxy_for
from sidecar.delivery.policy import FailureKind, Response, TransportFailure
from sidecar_dev.capture.faults import DropConnection, Hang, ResetMidBody, Status
from sidecar_dev.capture.server import CaptureServer
from sidecar_dev.harness import RefusingPort

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
    endpoint = TransportEndpoint("https://capture.test/batch/", _answering(200, seen))
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
    busy = TransportEndpoint(
        "https://capture.test/batch/", _answering(503, seen, **{"Retry-After": "9"})
    )
    assert await busy.post(b"x", timeout=1.0) == Response(503, "9")

    def failing(error: type[httpx.TransportError]) -> TransportEndpoint:
        def handle(request: httpx.Request) -> httpx.Response:
            raise error("failed", request=request)

        return TransportEndpoint("https://c.test/batch/", httpx.MockTransport(handle))

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


# ---- the direct endpoint (h11 over trio), against the fake capture server ---------------------

GZIP_BODY = b"\x1f\x8b" + b"g" * 300


class Connects:
    """Counts the TCP connections the direct endpoint opens (wraps `trio.open_tcp_stream`)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        real = trio.open_tcp_stream

        async def counting(host: str, port: int) -> trio.SocketStream:
            self.count += 1
            return await real(host, port)

        monkeypatch.setattr(trio, "open_tcp_stream", counting)


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> Connects:
    """A count of the connections opened during the test."""
    return Connects(monkeypatch)


def direct_to(url: str) -> DirectEndpoint:
    """The endpoint `make_endpoint` builds for `url` when no proxy is named."""
    endpoint = make_endpoint(url)
    assert isinstance(endpoint, DirectEndpoint)
    return endpoint


def test_make_endpoint_goes_direct_unless_a_proxy_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no proxy for the host the endpoint connects directly; with HTTPS_PROXY naming one,
    requests go through httpx's transport (which carries the proxy)."""
    assert isinstance(make_endpoint("https://eu.i.posthog.com/batch/"), DirectEndpoint)
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.corp:3128")
    assert isinstance(make_endpoint("https://eu.i.posthog.com/batch/"), TransportEndpoint)
    monkeypatch.setenv("NO_PROXY", "posthog.com")
    assert isinstance(make_endpoint("https://eu.i.posthog.com/batch/"), DirectEndpoint)


async def test_direct_post_sends_the_body_and_headers_over_one_kept_connection(
    capture: CaptureServer, connects: Connects
) -> None:
    """Three POSTs carry the body as is with Host, Content-Length, the JSON and gzip headers and
    our User-Agent, each answered in turn, all over one connection."""
    capture.script(Status(200), Status(200), Status(200))
    endpoint = direct_to(capture.batch_url)
    answers = [await endpoint.post(GZIP_BODY, timeout=5.0) for _ in range(3)]
    await endpoint.aclose()

    assert answers == [Response(200, None)] * 3
    assert connects.count == 1
    for request in capture.requests:
        assert (request.method, request.path) == ("POST", "/batch/")
        assert request.body_size == len(GZIP_BODY)
        assert request.header("Host") == f"127.0.0.1:{capture.port}"
        assert request.header("Content-Length") == str(len(GZIP_BODY))
        assert request.header("Content-Type") == "application/json"
        assert request.header("Content-Encoding") == "gzip"
        assert request.header("User-Agent") == f"telemetry-sidecar/{__version__}"


async def test_direct_post_reports_the_status_and_retry_after(capture: CaptureServer) -> None:
    """The status and the Retry-After header come back as they are, or None without one."""
    capture.script(Status(503, headers={"Retry-After": "9"}), Status(429), Status(200))
    endpoint = direct_to(capture.batch_url)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(503, "9")
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(429, None)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    await endpoint.aclose()


async def test_direct_post_names_each_failure_and_the_next_goes_out_afresh(
    capture: CaptureServer, connects: Connects
) -> None:
    """A hung answer is a read timeout, a connection closed or reset with no answer is a lost
    one; after each, the next request goes out on a new connection and is answered."""
    capture.script(Hang(), Status(200), DropConnection(), Status(200), ResetMidBody(), Status(200))
    endpoint = direct_to(capture.batch_url)
    hung = await endpoint.post(GZIP_BODY, timeout=0.3)
    assert hung == TransportFailure(FailureKind.TIMEOUT, "ReadTimeout")
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    dropped = await endpoint.post(GZIP_BODY, 5.0)
    assert dropped == TransportFailure(FailureKind.LOST, "RemoteProtocolError")
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    reset = await endpoint.post(GZIP_BODY, 5.0)
    assert isinstance(reset, TransportFailure)
    assert reset.kind is FailureKind.LOST
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    await endpoint.aclose()
    assert connects.count == 4


async def test_direct_post_to_a_closed_port_is_a_connect_failure() -> None:
    """Nothing listening: a connect failure, which policy does not count against the events."""
    with RefusingPort() as port:
        endpoint = direct_to(f"{port.url}/batch/")
        assert await endpoint.post(GZIP_BODY, 5.0) == TransportFailure(
            FailureKind.CONNECT, "ConnectError"
        )
        await endpoint.aclose()


async def test_direct_answer_whose_body_does_not_end_well_still_counts(
    capture: CaptureServer, connects: Connects
) -> None:
    """An answer whose body never completes, one past MAX_ANSWER_BYTES, and one that asks to
    close: each status counts, and the connection is not used again after any of them."""
    capture.script(
        Status(200, body=b"{}", headers={"Content-Length": "100000"}),
        Status(200, body=b"x" * (MAX_ANSWER_BYTES + 1)),
        Status(200, headers={"Connection": "close"}),
        Status(200),
    )
    endpoint = direct_to(capture.batch_url)
    assert await endpoint.post(GZIP_BODY, timeout=0.3) == Response(200, None)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    await endpoint.aclose()
    assert connects.count == 4


async def test_direct_idle_connection_is_not_reused_past_its_expiry(
    capture: CaptureServer, connects: Connects, mock_clock: trio.testing.MockClock
) -> None:
    """A connection idle for KEEPALIVE_EXPIRY_S is closed and a new one made: servers drop idle
    connections, often without a word."""
    capture.script(Status(200), Status(200), Status(200))
    endpoint = direct_to(capture.batch_url)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    mock_clock.jump(KEEPALIVE_EXPIRY_S - 0.5)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    assert connects.count == 1
    mock_clock.jump(KEEPALIVE_EXPIRY_S)
    assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
    assert connects.count == 2
    await endpoint.aclose()


async def test_direct_connection_the_server_closed_while_idle_is_replaced(
    connects: Connects,
) -> None:
    """When the server ends the kept connection between requests (a restart here), the next
    request goes out on a new connection instead of failing on the dead one."""
    with CaptureServer() as first:
        first.script(Status(200))
        endpoint = direct_to(first.batch_url)
        assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
        port = first.port
    with CaptureServer(port=port) as second:
        second.script(Status(200))
        await trio.testing.wait_all_tasks_blocked()
        assert await endpoint.post(GZIP_BODY, 5.0) == Response(200, None)
        assert len(second.requests) == 1
    await endpoint.aclose()
    assert connects.count == 2
