"""Webhook URLs at registration: what cannot be sent, and every address form of the
server's own machine, its private network and the cloud's metadata service, is a 400
naming `url`; an operator's allowed hosts let internal receivers in."""

from __future__ import annotations

import ipaddress

import pytest

from openft.domain.entities import Principal
from openft.domain.errors import InvalidRequest
from openft.domain.webhook_addresses import AllowedHosts
from openft.domain.webhook_urls import IPAddress
from openft.services.container import Services
from openft.services.webhook_guard import Unresolvable
from openft.services.webhooks import WebhookService

UNSENDABLE = [
    "http://127.0.0.1:9/\r\nX-Injected: 1",
    "http://hooks.example.com/a b",
    "http://hooks.example.com\\@8.8.8.8/",
    "http://[v1.x]/",
    "http://[zz]/",
    "http://[::1",
    "http://u:p@hooks.example.com/",
    "http://hooks.example.com:0/",
    "http://hooks.example.com:99999/",
    "http://1.2.3.256/",
    "http://hooks..example.com/",
    "ftp://hooks.example.com/",
    "hooks.example.com/path",
    "http:///path",
]
REFUSED = [
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://0177.0.0.1/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost:8000/",
    "http://LocalHost./",
    "http://api.localhost/",
    "http://0.0.0.0/",
    "http://[::]/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/",
    "http://10.0.0.1/",
    "http://172.16.5.4/",
    "http://192.168.1.1/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://169.254.10.10/",
    "http://[fe80::1]/",
    "http://224.0.0.1/",
    "http://[ff02::1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://[2002:7f00:1::]/",
]


def _service(services: Services, allowed: str = "", **names: list[str]) -> WebhookService:
    """Webhooks that resolve the names in `names` (dots written as underscores) and IP
    literals, and no other name: no test depends on a DNS server."""

    def resolver(host: str, port: int) -> list[IPAddress]:
        try:
            return [ipaddress.ip_address(host)]
        except ValueError:
            pass
        if host.replace(".", "_") not in names:
            raise Unresolvable(host)
        return [ipaddress.ip_address(a) for a in names[host.replace(".", "_")]]

    return WebhookService(services.db, allowed_hosts=AllowedHosts.parse(allowed), resolver=resolver)


@pytest.mark.parametrize("url", UNSENDABLE)
def test_a_url_that_cannot_be_sent_is_a_400_naming_url(
    services: Services, principal: Principal, url: str
) -> None:
    webhooks = _service(services)
    try:
        with pytest.raises(InvalidRequest) as refused:
            webhooks.add(principal, url)
        assert refused.value.param == "url"
        assert webhooks.endpoints(principal) == []
    finally:
        webhooks.close()


@pytest.mark.parametrize("url", REFUSED)
def test_addresses_of_this_machine_its_network_and_metadata_are_refused(
    services: Services, principal: Principal, url: str
) -> None:
    webhooks = _service(services)
    try:
        with pytest.raises(InvalidRequest) as refused:
            webhooks.add(principal, url)
        assert refused.value.param == "url" and refused.value.code == "url_not_allowed"
        assert "OPENFT_WEBHOOK_ALLOWED_HOSTS" in refused.value.message
    finally:
        webhooks.close()


def test_a_name_that_resolves_to_a_private_address_is_refused(
    services: Services, principal: Principal
) -> None:
    webhooks = _service(services, hooks_example_com=["8.8.8.8", "10.1.2.3"])
    try:
        with pytest.raises(InvalidRequest, match=r"10\.1\.2\.3 is a private address"):
            webhooks.add(principal, "https://hooks.example.com/in")
    finally:
        webhooks.close()


def test_public_urls_are_kept_in_their_normal_form(
    services: Services, principal: Principal
) -> None:
    webhooks = _service(services, hooks_example_com=["8.8.8.8"])
    try:
        added = [
            webhooks.add(principal, url).url
            for url in (
                "HTTPS://Hooks.Example.com:443/é?q=1#fragment",
                "http://8.8.8.8:8080/in",
                "http://[2001:4860:4860::8888]/in",
                "http://not-resolvable-yet.example/in",  # judged again when sent
            )
        ]
        assert added == [
            "https://hooks.example.com/%C3%A9?q=1",
            "http://8.8.8.8:8080/in",
            "http://[2001:4860:4860::8888]/in",
            "http://not-resolvable-yet.example/in",
        ]
    finally:
        webhooks.close()


@pytest.mark.parametrize(
    ("allowed", "url"),
    [
        ("127.0.0.1/32", "http://127.0.0.1:9000/hooks"),
        ("127.0.0.0/8", "http://2130706433:9000/hooks"),
        ("10.0.0.0/8, 192.168.0.0/16", "http://10.20.30.40/hooks"),
        ("::1", "http://[::1]:9000/hooks"),
        ("receiver.internal", "http://receiver.internal/hooks"),
        ("localhost", "http://localhost:9000/hooks"),
    ],
)
def test_an_operator_allows_internal_receivers(
    services: Services, principal: Principal, allowed: str, url: str
) -> None:
    webhooks = _service(services, allowed, receiver_internal=["10.9.9.9"])
    try:
        assert webhooks.add(principal, url).id.startswith("we_")
        with pytest.raises(InvalidRequest):
            webhooks.add(principal, "http://169.254.169.254/")  # the rest stays refused
    finally:
        webhooks.close()


def test_a_bad_allowed_network_is_named() -> None:
    with pytest.raises(ValueError, match=r"10\.0\.0\.0/33"):
        AllowedHosts.parse("10.0.0.0/33")
