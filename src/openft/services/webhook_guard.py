"""The connect-time half of the webhook address guard, as an httpcore network backend.

httpcore asks its network backend for a TCP stream to (host, port); this one resolves the
host itself, judges every address (domain/webhook_addresses.py), connects to an address
it judged, checks that the socket's peer is that address, and hands back a stream whose
every read and write shares one deadline. So a name that resolved to a public address at
registration and to 127.0.0.1 now (DNS rebinding) is refused, and a receiver that
trickles its answer a byte at a time is cut off when the try's time is up. httpcore
still sends the URL's own host in the Host header and as the TLS server name.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
from collections.abc import Callable, Iterable
from typing import Any

import httpcore

from openft.domain.webhook_addresses import AllowedHosts, address_refusal, name_refusal
from openft.domain.webhook_urls import IPAddress

Resolver = Callable[[str, int], list[IPAddress]]


class AddressRefused(Exception):
    """The host is, or resolves only to, addresses that webhooks may not reach."""


class Unresolvable(Exception):
    """The host name did not resolve."""


def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver gives for `host` (an IP literal gives itself)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise Unresolvable(host) from exc
    found: list[IPAddress] = []
    for _family, _type, _proto, _name, sockaddr in infos:
        ip = ipaddress.ip_address(str(sockaddr[0]).partition("%")[0])
        if ip not in found:
            found.append(ip)
    return found


def check_host(host: str, port: int, allowed: AllowedHosts, resolver: Resolver = resolve) -> None:
    """At registration: `AddressRefused` if the host, or any address it resolves to now,
    may not be reached. A name that does not resolve yet is let through; the connect-time
    check judges what it resolves to when a delivery is sent."""
    reason = name_refusal(host, allowed)
    if reason is not None:
        raise AddressRefused(reason)
    try:
        addresses = resolver(host, port)
    except Unresolvable:
        return
    for ip in addresses:
        reason = address_refusal(host, ip, allowed)
        if reason is not None:
            raise AddressRefused(reason)


class _DeadlineStream(httpcore.NetworkStream):
    """A stream whose reads and writes all end by one deadline (a per-operation timeout
    alone lets a receiver that sends a byte now and then hold a try for ever)."""

    def __init__(self, inner: httpcore.NetworkStream, deadline: float) -> None:
        self._inner = inner
        self._deadline = deadline

    def _left(self, timeout: float | None, error: type[Exception]) -> float:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise error("the try ran out of time")
        return left if timeout is None else min(timeout, left)

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._inner.read(max_bytes, self._left(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._inner.write(buffer, self._left(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        left = self._left(timeout, httpcore.ConnectTimeout)
        return _DeadlineStream(
            self._inner.start_tls(ssl_context, server_hostname, left), self._deadline
        )

    def get_extra_info(self, info: str) -> Any:
        return self._inner.get_extra_info(info)


class GuardedBackend(httpcore.NetworkBackend):
    """TCP connections to allowed addresses only, each with `try_seconds` to live."""

    def __init__(
        self, allowed: AllowedHosts, try_seconds: float, resolver: Resolver = resolve
    ) -> None:
        self._allowed = allowed
        self._try_seconds = try_seconds
        self._resolve = resolver
        self._tcp = httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        deadline = time.monotonic() + self._try_seconds
        reason = name_refusal(host, self._allowed)
        if reason is not None:
            raise AddressRefused(reason)
        refusals, failure = [], None
        for ip in self._resolve(host, port):
            reason = address_refusal(host, ip, self._allowed)
            if reason is not None:
                refusals.append(reason)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise httpcore.ConnectTimeout("the try ran out of time")
            try:
                # The checked address itself, not the name: nothing is resolved again.
                stream = self._tcp.connect_tcp(
                    str(ip),
                    port,
                    timeout=left if timeout is None else min(timeout, left),
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except httpcore.ConnectError as exc:
                failure = exc
                continue
            peer = ipaddress.ip_address(stream.get_extra_info("server_addr")[0])
            if peer != ip:  # cannot happen for a literal; checked as the rule demands
                stream.close()
                raise AddressRefused(f"connected to {peer}, not {ip}")
            return _DeadlineStream(stream, deadline)
        if failure is not None:
            raise failure
        raise AddressRefused(refusals[0] if refusals else f"{host} has no address")
