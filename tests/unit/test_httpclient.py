"""Unit tests for sidecar.delivery.httpclient and .direct: which proxy a capture host goes through
(and that it is the one httpx's own client would pick), one attempt through an httpx transport
(httpx.MockTransport) with the headers and timeouts it must carry, and the direct endpoint
against the fake capture server: headers, kept connections, and every way an answer can fail."""

from __future__ import annotations

import h11
import httpx
import pytest
import trio
import trio.testing
from httpx._utils import get_environment_proxies
from hypothesis import given, settings
from hypothesis import strategies as st

from sidecar import __version__
from sidecar.delivery.direct import (
    KEEPALIVE_EXPIRY_S,
    MAX_ANSWER_BYTES,
    DirectEndpoint,
    PlainAnswer,
    read_plain_answer,
)
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


# ---- read_plain_answer: the usual answer without h11, and h11 for everything else -----------

PLAIN_OK = (
    b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 12\r\n\r\n{"status":1}'
)


def h11_reading(data: bytes) -> tuple[int, str | None, bool] | None:
    """What h11 makes of `data` as the answer to a POST: (status, Retry-After joined with ", ",
    whether the connection can carry the next request), or None when the answer is not whole
    in `data` or h11 refuses it."""
    protocol = h11.Connection(h11.CLIENT)
    protocol.send(h11.Request(method="POST", target="/batch/",
                              headers=[("Host", "h"), ("Content-Length", "1")]))
    protocol.send(h11.Data(data=b"x"))
    protocol.send(h11.EndOfMessage())
    protocol.receive_data(data)
    protocol.receive_data(b"")  # nothing more will come
    try:
        head = protocol.next_event()
        while type(head) is h11.InformationalResponse:
            head = protocol.next_event()
        if type(head) is not h11.Response:
            return None
        while type(event := protocol.next_event()) is h11.Data:
            pass
    except h11.RemoteProtocolError:
        return None
    if type(event) is not h11.EndOfMessage:
        return None
    values = [v for k, v in head.headers if k == b"retry-after"]
    reuse = protocol.our_state is h11.DONE and protocol.their_state is h11.DONE
    return head.status_code, b", ".join(values).decode() if values else None, reuse


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (PLAIN_OK, PlainAnswer(200, None, keep_alive=True)),
        (b"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 9\r\nContent-Length: 0\r\n\r\n",
         PlainAnswer(503, "9", keep_alive=True)),
        (b"HTTP/1.1 429 \r\nretry-after:  2 \r\nRETRY-AFTER: Wed, 21 Oct 2026 07:28:00 GMT\r\n"
         b"content-length: 2\r\n\r\n{}",
         PlainAnswer(429, "2, Wed, 21 Oct 2026 07:28:00 GMT", keep_alive=True)),
        (b"HTTP/1.1 200\r\nConnection: Keep-Alive, Close\r\nContent-Length: 0\r\n\r\n",
         PlainAnswer(200, None, keep_alive=False)),
        (b"HTTP/1.1 599 Odd\r\nContent-Length: 007\r\n\r\n1234567", PlainAnswer(599, None, True)),
    ],
)
def test_read_plain_answer_takes_the_usual_answer_as_h11_would(
    data: bytes, expected: PlainAnswer
) -> None:
    """A whole HTTP/1.1 answer with one Content-Length gives its status, its Retry-After
    values joined, and whether the connection stays open, the same as h11 reads it."""
    assert read_plain_answer(data) == expected
    assert h11_reading(data) == tuple(expected)


@pytest.mark.parametrize(
    "data",
    [
        PLAIN_OK[:-1],  # body not all here
        PLAIN_OK + b"HTTP/1.1 200 OK\r\n",  # more after the answer
        PLAIN_OK[: PLAIN_OK.index(b"\r\n\r\n")],  # head not finished
        PLAIN_OK.replace(b"HTTP/1.1", b"HTTP/1.0"),
        b"HTTP/1.1 100 Continue\r\n\r\n" + PLAIN_OK,
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n",  # framed by the close
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nContent-Length: +2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nBad Name: 1\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-A: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\nX-A: 1\nX-B: 2\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 204 No Content\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\n\r\n{}",
        b"HTTP/1.1 200 OK\r\n\r\n",
        b"",
        b"garbage\r\n\r\n",
    ],
)
def test_read_plain_answer_turns_down_all_else(data: bytes) -> None:
    """Anything but one whole plain answer (part of one, more than one, HTTP/1.0, 1xx first,
    chunked or close-framed bodies, doubtful Content-Length, folded, misnamed, non-ASCII or
    LF-split header lines, a body on a 204) is left to h11."""
    assert read_plain_answer(data) is None


_FIELD_NAMES = st.sampled_from(
    ["Retry-After", "retry-after", "Connection", "X-Thing", "Date", "Content-Type",
     "Transfer-Encoding", "Content-Length", "Bad Name", ""]
)
_FIELD_VALUES = st.one_of(
    st.sampled_from(["9", "close", "keep-alive", "Keep-Alive, close", "application/json",
                     "Wed, 21 Oct 2026 07:28:00 GMT", "  9  ", "", "a\tb", "chunked", "2"]),
    st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=6),
)


@settings(max_examples=500)
@given(
    version=st.sampled_from([b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.1", b"HTTP/1.0", b"HTTP/2"]),
    status=st.sampled_from(
        [b"200", b"201", b"204", b"400", b"429", b"503", b"100", b"999", b"2x0"]
    ),
    reason=st.sampled_from([b" OK", b"", b" ", b" Too Many Requests", b" \xe9"]),
    fields=st.lists(st.tuples(_FIELD_NAMES, _FIELD_VALUES), max_size=4),
    length=st.sampled_from(["right", "right", "right", "wrong", "none"]),
    body=st.sampled_from([b"", b"{}", b'{"status":1}', b"2\r\n{}\r\n0\r\n\r\n"]),
    extra=st.sampled_from([b"", b"", b"", b"x", b"HTTP/1.1 200 OK\r\n"]),
)
def test_read_plain_answer_agrees_with_h11_on_whatever_it_takes(
    *,
    version: bytes,
    status: bytes,
    reason: bytes,
    fields: list[tuple[str, str]],
    length: str,
    body: bytes,
    extra: bytes,
) -> None:
    """For generated answers (statuses, reasons, versions, header names and values of every
    kind, right, wrong or missing lengths, bodies of every framing, bytes after the answer),
    whenever read_plain_answer takes one, h11 reads the same status, Retry-After and
    keep-alive from it."""
    if length != "none":
        size = len(body) + (length == "wrong")
        fields = [*fields, ("Content-Length", str(size))]
    head = version + b" " + status + reason + b"\r\n"
    head += b"".join(f"{name}: {value}\r\n".encode("latin-1") for name, value in fields)
    data = head + b"\r\n" + body + extra
    plain = read_plain_answer(data)
    if plain is not None:
        assert h11_reading(data) == tuple(plain)
