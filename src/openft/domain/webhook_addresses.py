"""Where webhooks may be sent: public addresses only, unless the operator allows more.

A webhook URL is chosen by any project's key, and the server posts to it from inside its
network, so without this rule a key could make the server reach its own loopback, the
private network behind it or the cloud's metadata service (SSRF). Every address a
delivery would connect to is judged here, at registration and again at connect time.
`OPENFT_WEBHOOK_ALLOWED_HOSTS` names host names and CIDRs that an operator trusts (an
internal receiver); everything else must be a global unicast address.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from openft.domain.webhook_urls import IPAddress

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Names that mean this machine or a cloud's metadata service wherever they are resolved.
_REFUSED_NAMES = {"localhost", "metadata", "metadata.google.internal", "metadata.goog"}
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Metadata services on addresses that are not link-local (Alibaba's; AWS's IPv6 one).
_METADATA = {ipaddress.ip_address("100.100.100.200"), ipaddress.ip_address("fd00:ec2::254")}


def refused_name(host: str) -> str | None:
    """Why a host name is refused before it is even resolved, or None."""
    name = host.removesuffix(".")
    if name in _REFUSED_NAMES or name.endswith(".localhost"):
        return "names this machine or a cloud metadata service"
    return None


def refusal(ip: IPAddress) -> str | None:
    """Why an address is not a public one to post to, or None if it is."""
    if ip in _METADATA or ip == ipaddress.IPv4Address("169.254.169.254"):
        return "a cloud metadata address"
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return refusal(embedded)
    for reason, matches in (
        ("an unspecified", ip.is_unspecified),
        ("a loopback", ip.is_loopback),
        ("a link-local", ip.is_link_local),
        ("a multicast", ip.is_multicast),
        ("a private", ip.is_private),
        ("a reserved", ip.is_reserved),
    ):
        if matches:
            return f"{reason} address"
    if not ip.is_global:  # shared (100.64/10), documentation, benchmarking ranges
        return "not a public address"
    return None


def _embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, Teredo, NAT64): it is the
    IPv4 address that would be reached, so it is the one judged."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class AllowedHosts:
    """The operator's exceptions: exact host names and networks."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, spec: str) -> AllowedHosts:
        """`host, 10.0.0.0/8, 127.0.0.1, …` (commas or spaces); ValueError names a bad one."""
        names: set[str] = set()
        networks: list[IPNetwork] = []
        for item in spec.replace(",", " ").split():
            try:
                networks.append(ipaddress.ip_network(item.strip("[]"), strict=False))
            except ValueError:
                if "/" in item:
                    raise ValueError(f"invalid network {item!r} in the allowed hosts") from None
                names.add(item.lower().removesuffix("."))
        return cls(frozenset(names), tuple(networks))

    def allows_name(self, host: str) -> bool:
        return host.removesuffix(".") in self.names

    def allows_address(self, ip: IPAddress) -> bool:
        return any(ip.version == net.version and ip in net for net in self.networks)


def address_refusal(host: str, ip: IPAddress, allowed: AllowedHosts) -> str | None:
    """Why a delivery to `host` may not connect to `ip`, or None: an allowed name or
    network passes; anything else must be public."""
    if allowed.allows_name(host) or allowed.allows_address(ip):
        return None
    reason = refusal(ip)
    return None if reason is None else f"{ip} is {reason}"


def name_refusal(host: str, allowed: AllowedHosts) -> str | None:
    """Why `host` is refused by its name alone, or None."""
    if allowed.allows_name(host):
        return None
    reason = refused_name(host)
    return None if reason is None else f"{host} {reason}"
