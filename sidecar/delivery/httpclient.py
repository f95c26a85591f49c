"""One delivery attempt over HTTP, and the transport that carries it.

Imported on the first send: httpx and the TLS context are a large share of start-up time, and a
sidecar with an empty queue never needs them.

Requests go straight to an `httpx.AsyncHTTPTransport` rather than through `httpx.AsyncClient`:
the host is fixed at spawn, so the client's per-request work (merging URLs and headers, cookies,
auth and redirect handling, choosing a proxy) decides nothing here and would cost CPU on every
request. What the client would decide once is decided once, in `make_transport`.

`Endpoint.post` reports what happened, an answer or a named transport failure; what that means
for the events is decided in `sidecar.delivery.policy`.
"""

from __future__ import annotations

import ssl
import urllib.request

import httpx
import trio

from sidecar import __version__
from sidecar.delivery.policy import (
    Answer,
    FailureKind,
    Response,
    TransportFailure,
    TransportUnavailable,
)
from sidecar.delivery.tls import client_ssl_context

# Bytes of an answer's body read before giving up on it (PostHog's is `{"status":1}`).
MAX_ANSWER_BYTES = 64 * 1024
_HEADERS = (
    (b"User-Agent", f"telemetry-sidecar/{__version__}".encode("ascii")),
    (b"Content-Type", b"application/json"),
    (b"Content-Encoding", b"gzip"),
)


def make_transport(url: str) -> httpx.AsyncBaseTransport:
    """The transport to capture at `url`: OS trust store, always verifying, through the proxy
    that the environment (or, on macOS and Windows, the system settings) names for it: http,
    https, socks5 or socks5h. Raises TransportUnavailable for a proxy that cannot be used (the
    message names it without its password); the events then wait rather than go around it."""
    proxy = proxy_for(url)
    try:
        return httpx.AsyncHTTPTransport(verify=client_ssl_context(), proxy=proxy)
    except (ValueError, ImportError, httpx.InvalidURL) as exc:
        shown = redact_proxy(proxy) if proxy else "(none)"
        raise TransportUnavailable(f"the proxy {shown} cannot be used ({exc})") from exc


def redact_proxy(proxy: str) -> str:
    """`proxy` with any password in it replaced by `***`, for logs and `last_error`."""
    scheme, sep, rest = proxy.partition("://")
    if not sep:
        scheme, rest = "", proxy
    userinfo, at, location = rest.rpartition("@")
    if not at:
        return proxy
    user, colon, _ = userinfo.partition(":")
    return f"{scheme}{sep}{user}{':***' if colon else ''}@{location}"


def proxy_for(url: str) -> str | None:
    """The proxy URL for requests to `url`, or None to connect directly.

    The same discovery httpx's client makes (`urllib.request.getproxies`: `HTTPS_PROXY`,
    `ALL_PROXY` and their lowercase forms, or the system's settings), and `NO_PROXY` matched
    against the host, with its port when the URL gives one; tests hold it to httpx's choice.
    It goes further than httpx in two ways: on macOS and Windows the system's own bypass list
    counts too (`urllib.request.proxy_bypass` reads it; httpx reads only `NO_PROXY`), and
    `NO_PROXY=.example.com` covers example.com itself, as in curl.
    """
    proxies = urllib.request.getproxies()
    target = httpx.URL(url)
    chosen = proxies.get(target.scheme) or proxies.get("all")
    if not chosen:
        return None
    host = target.host if target.port is None else f"{target.host}:{target.port}"
    bypass_all = "*" in (entry.strip() for entry in proxies.get("no", "").split(","))
    if bypass_all or urllib.request.proxy_bypass(host):  # urllib takes "*" only on its own
        return None
    return chosen if "://" in chosen else f"http://{chosen}"


class Endpoint:
    """Capture's `/batch/` URL and the transport to it; `post` makes one attempt."""

    def __init__(self, url: str, transport: httpx.AsyncBaseTransport) -> None:
        """Parse `url` once, not at every request (httpx's URL parsing is not cheap)."""
        self.url = httpx.URL(url)
        self.transport = transport

    async def post(self, body: bytes, timeout: float) -> Answer:  # noqa: ASYNC109
        """POST one gzip body; the answer's status and Retry-After, or why none came."""
        request = httpx.Request(
            "POST",
            self.url,
            headers=_HEADERS,
            content=body,
            extensions={"timeout": httpx.Timeout(timeout).as_dict()},
        )
        try:
            response = await self.transport.handle_async_request(request)
            try:
                await _skim_answer(response, timeout)
            finally:
                await response.aclose()
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            return TransportFailure(FailureKind.CONNECT, _connect_failure(exc))
        except httpx.TimeoutException as exc:
            return TransportFailure(FailureKind.TIMEOUT, type(exc).__name__)
        except httpx.TransportError as exc:
            return TransportFailure(FailureKind.LOST, type(exc).__name__)
        return Response(response.status_code, response.headers.get("Retry-After"))

    async def aclose(self) -> None:
        """Close the transport and its connections."""
        await self.transport.aclose()


async def _skim_answer(response: httpx.Response, timeout: float) -> None:  # noqa: ASYNC109
    """Read a short answer to its end (the connection is then reused); stop after
    MAX_ANSWER_BYTES or `timeout`. Only the status and headers count, and an endless or broken
    body after them must neither fill memory nor hold the sender."""
    seen = 0
    with trio.move_on_after(timeout):
        try:
            async for chunk in response.aiter_raw():
                seen += len(chunk)
                if seen > MAX_ANSWER_BYTES:
                    break
        except (httpx.TransportError, httpx.StreamError):
            pass  # the status line already came: it is the server's verdict (or, in memory,
            # the answer was read already)


def _connect_failure(exc: httpx.TransportError) -> str:
    """The error's name, and what TLS said when the handshake is what failed (a certificate the
    trust store does not vouch for, typically behind a TLS-inspecting proxy)."""
    cause: BaseException | None = exc
    for _ in range(8):  # httpx -> httpcore -> ssl; bounded in case of a cycle
        if cause is None or isinstance(cause, ssl.SSLError):
            break
        cause = cause.__cause__ or cause.__context__
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"{type(exc).__name__}: TLS certificate verification failed ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"{type(exc).__name__}: TLS handshake failed ({cause.reason or cause})"
    return type(exc).__name__
