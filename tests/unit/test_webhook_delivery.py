"""Webhook delivery that one endpoint cannot turn against the others: a receiver that
answers 300 MB, one that trickles its answer, and a URL that cannot be sent each fail or
end on their own while a healthy receiver beside them gets its delivery at once; and
the address guard judges the address actually connected to, not the one seen at
registration."""

from __future__ import annotations

import ipaddress
import resource
import shutil
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from openft.domain import webhooks as signing
from openft.domain.entities import BaseModel, KeyScope, Principal, WebhookEndpoint
from openft.domain.webhook_addresses import AllowedHosts
from openft.domain.webhook_urls import IPAddress, parse_webhook_url
from openft.services.container import Services
from openft.services.webhook_guard import Resolver, resolve
from openft.services.webhook_sender import Outcome, WebhookSender
from openft.services.webhooks import WebhookService
from openft.settings import Settings
from openft.testing import queued_job
from openft.testing.webhook_receivers import Receiver, serving
from openft.wiring import build_services
from tests.unit.conftest import Clock

TRY_SECONDS = 2.0


@pytest.fixture
def services(tmp_path: Path, clock: Clock) -> Iterator[Services]:
    """On a SQLite file: deliveries are recorded from several threads at once."""
    built = build_services(Settings(data_dir=tmp_path), [BaseModel("tiny", "/nowhere")], clock)
    yield built
    built.close()


def _webhooks(
    services: Services, clock: Clock, allowed: str = "127.0.0.1/32", resolver: Resolver = resolve
) -> WebhookService:
    return WebhookService(
        services.db,
        allowed_hosts=AllowedHosts.parse(allowed),
        try_seconds=TRY_SECONDS,
        clock=clock,
        resolver=resolver,
    )


def _project(services: Services, name: str) -> Principal:
    return services.keys.create(name, KeyScope.PROJECT)[1].principal


def _cancelled_job(services: Services, principal: Principal) -> str:
    job_id = queued_job(services, principal)
    services.jobs.cancel(principal, job_id)  # queued: at once, and its webhook is due
    return job_id


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_poisoned_and_slow_receivers_do_not_delay_a_healthy_one(
    services: Services, clock: Clock
) -> None:
    huge, slow, healthy = Receiver("huge"), Receiver("slow", trickle_seconds=0.5), Receiver()
    webhooks = _webhooks(services, clock)
    try:
        with serving(huge, slow, healthy):
            endpoints = {}
            for receiver in (slow, huge, healthy):  # the healthy one is claimed last
                principal = _project(services, receiver.behaviour)
                endpoints[receiver.behaviour] = (principal, webhooks.add(principal, receiver.url))
                _cancelled_job(services, principal)
            rss_before = _max_rss_mib()
            started = time.monotonic()
            assert webhooks.deliver_due() == 3
            assert webhooks.wait_idle(TRY_SECONDS + 5)
            ended = time.monotonic() - started

        ((arrived, _headers, _body),) = healthy.received
        assert arrived - started < 1.0  # on time, not after the slow one's try
        assert ended < TRY_SECONDS + 2  # the slow one was cut off at its time limit
        assert _max_rss_mib() - rss_before < 50  # the 300 MB answer was never read
        state = {
            name: webhooks.deliveries(principal, endpoint.id)[0]
            for name, (principal, endpoint) in endpoints.items()
        }
        assert state["healthy"].delivered_at and state["healthy"].last_status == 204
        assert state["huge"].delivered_at and state["huge"].last_status == 200
        assert not state["slow"].delivered_at
        assert state["slow"].last_error == f"no answer within {TRY_SECONDS:g} s"
        assert state["slow"].next_attempt_at is not None  # tried again later
    finally:
        webhooks.close()


def test_a_url_that_cannot_be_sent_fails_its_own_delivery_only(
    services: Services, clock: Clock
) -> None:
    """A URL stored before URLs were checked (issue 16: it stopped everyone's webhooks)."""
    broken, fine = _project(services, "broken"), _project(services, "fine")
    webhooks = _webhooks(services, clock)
    healthy = Receiver()
    try:
        with serving(healthy):
            bad = WebhookEndpoint(
                "we_broken",
                broken.project_id,
                "http://127.0.0.1:9/\r\nX-Injected: 1",
                "whsec_" + "A" * 44,
                clock(),
            )
            with services.db.write() as tx:
                tx.insert_webhook(bad)
            good = webhooks.add(fine, healthy.url)
            _cancelled_job(services, broken)
            _cancelled_job(services, fine)
            webhooks.deliver_due()
            assert webhooks.wait_idle(TRY_SECONDS + 5)
        assert len(healthy.received) == 1
        (failed,) = webhooks.deliveries(broken, bad.id)
        assert failed.last_error is not None and failed.last_error.startswith("invalid url")
        assert failed.next_attempt_at is None  # never sendable: given up at once
        (sent,) = webhooks.deliveries(fine, good.id)
        assert sent.delivered_at is not None
    finally:
        webhooks.close()


def test_the_address_connected_to_is_judged_again(
    services: Services, principal: Principal, clock: Clock
) -> None:
    """A name that was public at registration and points at loopback when sent (DNS
    rebinding) is refused, whether or not the port there is open: the deliveries list
    tells nothing about the ports of a refused host."""
    answers: dict[str, list[IPAddress]] = {
        "open.example": [ipaddress.ip_address("8.8.8.8")],
        "closed.example": [ipaddress.ip_address("8.8.4.4")],
    }
    webhooks = _webhooks(services, clock, allowed="", resolver=lambda host, _port: answers[host])
    listening = Receiver()
    try:
        with serving(listening):
            opened = webhooks.add(principal, f"http://open.example:{listening.port}/")
            closed = webhooks.add(principal, "http://closed.example:9/")
            answers["open.example"] = answers["closed.example"] = [
                ipaddress.ip_address("127.0.0.1")
            ]
            _cancelled_job(services, principal)
            assert webhooks.deliver_due() == 2
            assert webhooks.wait_idle(TRY_SECONDS + 5)
        assert listening.received == []
        errors = {
            webhooks.deliveries(principal, endpoint.id)[0].last_error
            for endpoint in (opened, closed)
        }
        assert errors == {"refused: 127.0.0.1 is a loopback address"}
    finally:
        webhooks.close()


def test_an_allowed_internal_receiver_gets_signed_deliveries(
    services: Services, principal: Principal, clock: Clock
) -> None:
    webhooks = _webhooks(services, clock, allowed="127.0.0.1/32")
    receiver = Receiver()
    try:
        with serving(receiver):
            endpoint = webhooks.add(principal, receiver.url)
            job_id = _cancelled_job(services, principal)
            webhooks.deliver_due()
            assert webhooks.wait_idle(TRY_SECONDS + 5)
        ((_at, headers, body),) = receiver.received
        assert f'"id":"{job_id}"' in body
        assert headers["host"] == f"127.0.0.1:{receiver.port}"
        assert headers["webhook-signature"] == signing.signature(
            endpoint.secret, headers["webhook-id"], int(headers["webhook-timestamp"]), body
        )
    finally:
        webhooks.close()


def test_a_slow_endpoint_with_a_backlog_holds_one_sender_only(
    services: Services, clock: Clock
) -> None:
    """Two senders, a slow endpoint with four deliveries due before a healthy one's
    four: the healthy ones all arrive while the slow endpoint's first try is under way."""
    slow, healthy = Receiver("slow", trickle_seconds=0.5), Receiver()
    webhooks = WebhookService(
        services.db,
        allowed_hosts=AllowedHosts.parse("127.0.0.1/32"),
        try_seconds=TRY_SECONDS,
        concurrency=2,
        clock=clock,
    )
    try:
        with serving(slow, healthy):
            for receiver in (slow, healthy):
                principal = _project(services, receiver.behaviour)
                webhooks.add(principal, receiver.url)
                for _ in range(4):
                    _cancelled_job(services, principal)
            started = time.monotonic()
            while len(healthy.received) < 4 and time.monotonic() - started < TRY_SECONDS:
                webhooks.deliver_due()  # as the server's loop calls it
                time.sleep(0.02)
            assert len(healthy.received) == 4
            assert len(slow.received) == 1  # its other three wait their turn
            assert webhooks.wait_idle(TRY_SECONDS + 5)
    finally:
        webhooks.close()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_https_checks_the_url_host_while_connecting_to_the_checked_address(
    tmp_path: Path,
) -> None:
    """The sender connects to the address it judged, yet TLS verifies the URL's name: a
    certificate for hooks.test is accepted for https://hooks.test/, not for another name
    that resolves to the same address."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subject = ["-subj", "/CN=hooks.test", "-addext", "subjectAltName=DNS:hooks.test"]
    files = ["-keyout", str(key), "-out", str(cert)]
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            *subject,
            *files,
        ],
        check=True,
        capture_output=True,
    )
    server_side = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_side.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    loopback = [ipaddress.ip_address("127.0.0.1")]
    sender = WebhookSender(
        AllowedHosts.parse("hooks.test other.test"),
        TRY_SECONDS,
        2,
        resolver=lambda _host, _port: loopback,
        ssl_context=trusting,
    )
    receiver = Receiver()
    try:
        with serving(receiver, tls=server_side):
            good = parse_webhook_url(f"https://hooks.test:{receiver.port}/in")
            assert sender.post(good, {}, b"{}") == Outcome(204, None)
            ((_at, headers, _body),) = receiver.received
            assert headers["host"] == f"hooks.test:{receiver.port}"
            other = parse_webhook_url(f"https://other.test:{receiver.port}/in")
            assert sender.post(other, {}, b"{}") == Outcome(None, "could not connect to other.test")
    finally:
        sender.close()
