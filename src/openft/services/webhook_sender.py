"""One try of one webhook delivery: a POST through the address guard, answered by a
status or by an error fit to show the project.

Only the status line and headers of the answer are read (h11 bounds those at 64 KiB);
the body is never read, so a receiver answering 300 MB costs nothing. The connection is
closed after each try: each try then has its own connection and its own deadline.
Errors are told in coarse words: an address that is refused is refused before any
connection is made, so what the project sees never depends on whether a port of a
refused host is open (no port scanning through the deliveries list).
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass

import httpcore
import httpx

from openft.domain.webhook_addresses import AllowedHosts
from openft.domain.webhook_urls import WebhookUrl
from openft.services.webhook_guard import (
    AddressRefused,
    GuardedBackend,
    Resolver,
    Unresolvable,
    resolve,
)


@dataclass(frozen=True)
class Outcome:
    status: int | None  # the receiver's answer, if one came
    error: str | None  # None: a 2xx

    @property
    def delivered(self) -> bool:
        return self.error is None


class WebhookSender:
    """Thread-safe: the deliveries of a batch are sent from several threads at once."""

    def __init__(
        self,
        allowed: AllowedHosts,
        try_seconds: float,
        concurrency: int,
        resolver: Resolver = resolve,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._try_seconds = try_seconds
        self._pool = httpcore.ConnectionPool(
            # By default httpx's: the same CA bundle (certifi, or SSL_CERT_FILE) as before.
            ssl_context=ssl_context or httpx.create_ssl_context(),
            max_connections=concurrency,
            max_keepalive_connections=0,  # a fresh connection, and deadline, per try
            retries=0,
            network_backend=GuardedBackend(allowed, try_seconds, resolver),
        )

    def post(self, url: WebhookUrl, headers: dict[str, str], body: bytes) -> Outcome:
        target = httpcore.URL(scheme=url.scheme, host=url.host, port=url.port, target=url.target)
        host = f"[{url.host}]" if ":" in url.host else url.host
        if url.port != (443 if url.scheme == "https" else 80):
            host += f":{url.port}"
        timeout = dict.fromkeys(("connect", "read", "write", "pool"), self._try_seconds)
        try:
            with self._pool.stream(
                "POST",
                target,
                headers=[("Host", host), *headers.items()],
                content=body,
                extensions={"timeout": timeout},
            ) as response:
                status = response.status
        except Exception as exc:  # every kind: one receiver's failure is its own
            return Outcome(None, _describe(exc, url, self._try_seconds))
        return Outcome(status, None if 200 <= status < 300 else f"answered {status}")

    def close(self) -> None:
        self._pool.close()


def _describe(exc: Exception, url: WebhookUrl, try_seconds: float) -> str:
    if isinstance(exc, AddressRefused):
        return f"refused: {exc}"
    if isinstance(exc, Unresolvable):
        return f"could not resolve {url.host}"
    if isinstance(exc, httpcore.TimeoutException):
        return f"no answer within {try_seconds:g} s"
    if isinstance(exc, httpcore.ConnectError):
        return f"could not connect to {url.host}"
    if isinstance(exc, httpcore.RemoteProtocolError):
        return "the answer was not valid HTTP"
    if isinstance(exc, httpcore.NetworkError):
        return "the connection failed"
    return f"the delivery failed ({type(exc).__name__})"
