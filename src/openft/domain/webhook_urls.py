"""A webhook URL, parsed once at registration into what the sender needs (scheme, host,
port, request target) or refused with the reason.

Hosts are read as a browser reads them (the WHATWG URL rules): `127.1`, `2130706433`,
`0x7f000001` and `0177.0.0.1` are all 127.0.0.1, because that is where the system's
resolver would connect too, and the address guard must judge the address actually meant.
Anything a sender could not put on the wire unchanged (control characters, spaces,
backslashes, an IPv6 literal that is not one, user info) is refused here, so that a bad
URL is a 400 at registration, never an error at send time.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from urllib.parse import quote, urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

DEFAULT_PORTS = {"http": 80, "https": 443}
_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
_HEX = re.compile(r"^0[xX][0-9a-fA-F]*$")
# Printable ASCII but space and backslash: what may stand in a URL as given.
_UNSAFE = re.compile(r"[\x00-\x20\x7f\\]")
# Characters kept as they are when a path or query is percent-encoded.
_TARGET_SAFE = "/%:@!$&'()*+,;=-._~?"


class BadWebhookUrl(ValueError):
    """Why a URL cannot be a webhook endpoint (shown to the user)."""


@dataclass(frozen=True)
class WebhookUrl:
    scheme: str  # http | https
    host: str  # lower-case ASCII name, or an IP address in its canonical form
    port: int
    target: str  # path and query, percent-encoded: what goes on the request line

    @property
    def ip(self) -> IPAddress | None:
        """The address, when the host is an IP literal."""
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if DEFAULT_PORTS[self.scheme] == self.port else f":{self.port}"
        return f"{self.scheme}://{host}{port}{self.target}"


def parse_webhook_url(url: str) -> WebhookUrl:
    """The URL's parts, normalised; `BadWebhookUrl` says why it cannot be used."""
    if _UNSAFE.search(url):
        raise BadWebhookUrl("it holds a space, a control character or a backslash")
    try:
        parts = urlsplit(url)
    except ValueError as exc:  # unbalanced brackets and the like
        raise BadWebhookUrl(str(exc)) from None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS:
        raise BadWebhookUrl("an http or https URL is needed")
    if "@" in parts.netloc:
        raise BadWebhookUrl("user info (user:password@) is not allowed")
    host_text, port_text = _split_netloc(parts.netloc)
    if not host_text:
        raise BadWebhookUrl("it has no host")
    host = _parse_host(host_text)
    port = _parse_port(port_text, DEFAULT_PORTS[scheme])
    target = quote(parts.path or "/", safe=_TARGET_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_TARGET_SAFE)
    return WebhookUrl(scheme, host, port, target)


def _split_netloc(netloc: str) -> tuple[str, str]:
    if netloc.startswith("["):
        end = netloc.find("]")
        if end < 0:
            raise BadWebhookUrl("an IPv6 address is not closed with ]")
        rest = netloc[end + 1 :]
        if rest and not rest.startswith(":"):
            raise BadWebhookUrl("text follows the IPv6 address")
        return netloc[: end + 1], rest[1:]
    host, _, port = netloc.partition(":")
    if ":" in port:
        raise BadWebhookUrl("an IPv6 address must be written in brackets")
    return host, port


def _parse_port(text: str, default: int) -> int:
    if not text:
        return default
    if not text.isascii() or not text.isdigit() or not 0 < int(text) < 65536:
        raise BadWebhookUrl(f"port {text!r} is not a number from 1 to 65535")
    return int(text)


def _parse_host(text: str) -> str:
    if text.startswith("["):
        inner = text[1:-1]
        if "%" in inner:
            raise BadWebhookUrl("an IPv6 zone (%…) is not allowed")
        try:
            return str(ipaddress.IPv6Address(inner))
        except ValueError:
            raise BadWebhookUrl(f"{text} is not an IPv6 address") from None
    try:
        name = text.encode("idna").decode("ascii").lower()
    except UnicodeError:
        raise BadWebhookUrl(f"{text!r} is not a valid host name") from None
    labels = name.removesuffix(".").split(".")
    if _ends_in_number(labels):
        return str(_parse_ipv4(labels, text))
    if len(name) > 253 or not all(_LABEL.match(label) for label in labels):
        raise BadWebhookUrl(f"{text!r} is not a valid host name")
    return name


def _ends_in_number(labels: list[str]) -> bool:
    last = labels[-1]
    return (last.isascii() and last.isdigit()) or bool(_HEX.match(last))


def _parse_ipv4(labels: list[str], text: str) -> ipaddress.IPv4Address:
    """WHATWG's IPv4 parser: up to four parts, each decimal, 0x-hex or 0-octal, the last
    filling the bytes left (so `127.1` is 127.0.0.1 and `2130706433` is too)."""
    invalid = BadWebhookUrl(f"{text!r} is not a valid IPv4 address")
    if len(labels) > 4:
        raise invalid
    numbers = []
    for label in labels:
        try:
            if _HEX.match(label):
                numbers.append(int(label[2:] or "0", 16))
            elif len(label) > 1 and label.startswith("0"):
                numbers.append(int(label[1:], 8))
            else:
                numbers.append(int(label, 10))
        except ValueError:
            raise invalid from None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 256 ** (5 - len(numbers)):
        raise invalid
    value = last
    for index, number in enumerate(head):
        value += number << (8 * (3 - index))
    return ipaddress.IPv4Address(value)
