"""One delivery attempt over HTTP: the endpoint that makes it, and how it is chosen.

Imported on the first send: httpx and the TLS context are a large share of start-up time, and a
sidecar with an empty queue never needs them.

`make_endpoint` decides once, at the first send, how requests reach capture: straight over one
keep-alive connection (`sidecar.delivery.direct`, h11 over trio) unless the environment names a
proxy for the host; through a proxy, requests go to an `httpx.AsyncHTTPTransport` that knows
the proxy (`TransportEndpoint`). Either way no `httpx.AsyncClient` sits in between: the host is
fixed at spawn, so the client's per-request work (merging URLs and headers, cookies, auth and
redirect handling, choosing a proxy) decides nothing here and would cost CPU on every request.

`post` reports what happened, an answer or a named transport failure; what that means for the
events is decided in `sidecar.delivery.policy`.
"""

from __future__ import annotations

import urllib.request
from typing import Protocol

import httpx
import trio

from sidecar import __version__
from sidecar.delivery.direct import MAX_ANSWER_BYTES, DirectEndpoint
from sidecar.delivery.policy import Answer, FailureKind, Response, TransportFailure
from sidecar.delivery.tls import client_ssl_context, describe_connect_failure

_HEADERS = (
    (b"User-Agent", f"telemetry-sidecar/{__version__}".encode("ascii")),
    (b"Content-Type", b"application/json"),
    (b"Content-Encoding", b"gzip"),
)


class Endpoint(Protocol):
    """Capture's `/batch/` URL, as the sender uses it."""

    async def post(self, body: bytes, timeout: float) -> Answer:  # noqa: ASYNC109
        """POST one gzip body; the answer's status and Retry-After, or why none came."""
        ...

    async def aclose(self) -> None:
        """Close the connections."""
        ...


def make_endpoint(url: str) -> Endpoint:
    """The endpoint for `url`: OS trust store, always verifying; direct, or through the proxy
    that the environment (or, on macOS and Windows, the system settings) names for it."""
    context = client_ssl_context()
    proxy = proxy_for(url)
    if proxy is not None:
        return TransportEndpoint(url, httpx.AsyncHTTPTransport(verify=context, proxy=proxy))
    target = httpx.URL(url)  # the parser the host was checked against (see options)
    return DirectEndpoint(
        scheme=target.scheme,
        host=target.raw_host.decode("ascii"),
        port=target.port or (443 if target.scheme == "https" else 80),
        authority=target.netloc,
        target=target.raw_path,
        headers=_HEADERS,
        ssl_context=context,
    )


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


class TransportEndpoint:
    """Capture's `/batch/` URL through an httpx transport (a proxy's, or a test's
    `httpx.MockTransport`); `post` makes one attempt."""

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
            return TransportFailure(
                FailureKind.CONNECT, describe_connect_failure(exc, type(exc).__name__)
            )
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
