"""One delivery attempt over HTTP, and the client that makes it.

Imported on the first send, with the client: httpx and the TLS context are a large share of
start-up time, and a sidecar with an empty queue never needs them.
"""

from __future__ import annotations

import ssl

import httpx
import trio

from sidecar import __version__, capture
from sidecar.capture import Outcome, Verdict
from sidecar.tls import client_ssl_context

# Bytes of an answer's body read before giving up on it (PostHog's is `{"status":1}`).
MAX_ANSWER_BYTES = 64 * 1024
_HEADERS = {"Content-Type": "application/json", "Content-Encoding": "gzip"}


def make_client(
    timeout: float, transport: httpx.AsyncBaseTransport | None = None
) -> httpx.AsyncClient:
    """The capture client: OS trust store, always verifying; proxies from the environment."""
    return httpx.AsyncClient(
        transport=transport,
        verify=client_ssl_context(),
        headers={"User-Agent": f"telemetry-sidecar/{__version__}"},
        timeout=timeout,
    )


async def post_batch(
    client: httpx.AsyncClient, url: str, body: bytes, timeout: float  # noqa: ASYNC109
) -> Verdict:
    """POST one gzip body and classify what came back (or did not)."""
    try:
        async with client.stream(
            "POST", url, content=body, headers=_HEADERS, timeout=timeout
        ) as response:
            await _skim_answer(response, timeout)
    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
        return Verdict(Outcome.OFFLINE, f"cannot connect to capture: {_connect_failure(exc)}")
    except httpx.TimeoutException as exc:
        return Verdict(Outcome.RETRY, f"capture timed out: {type(exc).__name__}")
    except httpx.TransportError as exc:
        return Verdict(Outcome.RETRY, f"connection to capture lost: {type(exc).__name__}")
    return capture.classify_status(response.status_code, response.headers.get("Retry-After"))


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
