"""Webhooks: terminal transitions posted to a receiver on loopback (allowed by the
operator), signed so that the official SDK's `unwrap` verifies them, once each, and
retried until a 2xx; URLs that cannot be sent, or point inside, refused with a 400; a
healthy receiver served on time beside a poisoned and a slow one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from openai import OpenAI
from openai.types.webhooks import (
    FineTuningJobCancelledWebhookEvent,
    FineTuningJobFailedWebhookEvent,
    FineTuningJobSucceededWebhookEvent,
)

from openft.testing.data import preference_file
from openft.testing.server import Server, running_server, wait_until
from openft.testing.webhook_receivers import Receiver as Hostile
from openft.testing.webhook_receivers import serving
from tests.acceptance.helpers import queued_job, wait_for_status

FAST_DELIVERY = {
    "OPENFT_WEBHOOK_POLL_SECONDS": "0.2",
    "OPENFT_WEBHOOK_RETRY_SECONDS": "0.5",
    # The receivers are on loopback, which webhooks may reach only when allowed.
    "OPENFT_WEBHOOK_ALLOWED_HOSTS": "127.0.0.1/32",
}


@dataclass
class Receiver:
    """An HTTP endpoint that records what it is sent, failing the first `failures`."""

    failures: int = 0
    received: list[tuple[dict[str, str], str]] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)

    def serve(self) -> ThreadingHTTPServer:
        return self.serve_on(0)

    def serve_on(self, port: int) -> ThreadingHTTPServer:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["content-length"])).decode()
                receiver.received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                status = 500 if len(receiver.received) <= receiver.failures else 204
                receiver.answered.append(status)
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


@pytest.fixture
def hooked(database_url: str, tmp_path: Path) -> Iterator[Server]:
    with running_server(database_url, tmp_path, "tiny=/nonexistent/tiny", env=FAST_DELIVERY) as s:
        yield s


JobEvent = (
    FineTuningJobSucceededWebhookEvent
    | FineTuningJobFailedWebhookEvent
    | FineTuningJobCancelledWebhookEvent
)


def unwrap(client: OpenAI, body: str, headers: dict[str, str], secret: str) -> JobEvent:
    """The delivery, verified and parsed by the official SDK."""
    event = client.webhooks.unwrap(body, headers, secret=secret)
    assert isinstance(event, JobEvent), event
    return event


def deliveries(server: Server, endpoint_id: str) -> list[dict[str, str]]:
    header, *rows = openft(server, "webhooks", "deliveries", endpoint_id).splitlines()
    return [dict(zip(header.split("\t"), row.split("\t"), strict=True)) for row in rows]


def openft(server: Server, *args: str) -> str:
    env = {**os.environ, "OPENFT_BASE_URL": server.base_url, "OPENFT_API_KEY": server.key}
    done = subprocess.run(
        [sys.executable, "-m", "openft.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=True,
    )
    return done.stdout


def test_terminal_transitions_are_posted_signed_once_each(hooked: Server) -> None:
    receiver = Receiver()
    http = receiver.serve()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/hooks"
        endpoint_id, secret = openft(hooked, "webhooks", "add", url).split()
        assert endpoint_id.startswith("we_") and secret.startswith("whsec_")
        endpoints = openft(hooked, "webhooks", "list")
        assert endpoint_id in endpoints and secret not in endpoints  # shown at creation only
        client = OpenAI(base_url=hooked.base_url, api_key=hooked.key, max_retries=0)
        cancelled = queued_job(client)
        client.fine_tuning.jobs.cancel(cancelled.id)
        wrong = client.files.create(file=("p.jsonl", preference_file(12)), purpose="fine-tune")
        failed = client.fine_tuning.jobs.create(model="tiny", training_file=wrong.id)
        wait_for_status(client, failed.id, "failed")
        wait_until(lambda: len(receiver.received) >= 2, 15, 0.1, "two deliveries")

        events = {}
        for headers, body in receiver.received:
            event = unwrap(client, body, headers, secret)
            assert headers["webhook-id"] == event.id and event.id.startswith("evt_")
            assert json.loads(body)["object"] == "event"
            events[event.data.id] = event.type
        assert events == {
            cancelled.id: "fine_tuning.job.cancelled",
            failed.id: "fine_tuning.job.failed",
        }
        with pytest.raises(Exception, match="signature"):
            client.webhooks.unwrap(body, headers, secret="whsec_" + "A" * 44)
        listed = deliveries(hooked, endpoint_id)
        assert sorted(d["job_id"] for d in listed) == sorted([cancelled.id, failed.id])
        assert all(d["attempts"] == "1" and d["last_status"] == "204" for d in listed)
        threading.Event().wait(2)  # nothing more comes: once each
        assert len(receiver.received) == 2
    finally:
        http.shutdown()


def test_a_receiver_that_fails_twice_gets_the_event_on_the_third_try(hooked: Server) -> None:
    receiver = Receiver(failures=2)
    http = receiver.serve()
    try:
        url = f"http://127.0.0.1:{http.server_address[1]}/"
        endpoint_id, secret = openft(hooked, "webhooks", "add", url).split()
        client = OpenAI(base_url=hooked.base_url, api_key=hooked.key, max_retries=0)
        job = queued_job(client)
        client.fine_tuning.jobs.cancel(job.id)
        wait_until(lambda: 204 in receiver.answered, 30, 0.1, "the third try")
        assert receiver.answered == [500, 500, 204]
        ids = {headers["webhook-id"] for headers, _body in receiver.received}
        assert len(ids) == 1  # the same event each time
        headers, body = receiver.received[-1]
        assert unwrap(client, body, headers, secret).data.id == job.id
        (delivery,) = deliveries(hooked, endpoint_id)
        assert delivery["attempts"] == "3" and delivery["last_status"] == "204"
        assert delivery["delivered_at"] and not delivery["last_error"]
    finally:
        http.shutdown()


def test_a_pending_delivery_survives_a_restart(database_url: str, tmp_path: Path) -> None:
    receiver = Receiver()
    with running_server(database_url, tmp_path, "tiny=/x", env=FAST_DELIVERY) as first:
        http = receiver.serve()
        receiver_port = http.server_address[1]
        http.shutdown()
        http.server_close()  # nobody answers there now: the delivery fails and waits
        url = f"http://127.0.0.1:{receiver_port}/"
        endpoint_id, secret = openft(first, "webhooks", "add", url).split()
        client = OpenAI(base_url=first.base_url, api_key=first.key, max_retries=0)
        job = queued_job(client)
        client.fine_tuning.jobs.cancel(job.id)
        wait_until(lambda: deliveries(first, endpoint_id)[0]["attempts"] != "0", 15, 0.2, "a try")
    assert receiver.received == []
    http = receiver.serve_on(receiver_port)
    try:
        with running_server(database_url, tmp_path, "tiny=/x", env=FAST_DELIVERY) as second:
            wait_until(lambda: receiver.received, 30, 0.2, "the delivery after the restart")
            client = OpenAI(base_url=second.base_url, api_key=second.key, max_retries=0)
            headers, body = receiver.received[0]
            assert unwrap(client, body, headers, secret).data.id == job.id
    finally:
        http.shutdown()


@pytest.fixture
def guarded(database_url: str, tmp_path: Path) -> Iterator[Server]:
    """A server with no allowed hosts: webhooks to public addresses only."""
    with running_server(database_url, tmp_path, "tiny=/nonexistent/tiny") as s:
        yield s


REFUSED_URLS = [
    "http://127.0.0.1:9/\r\nX-Injected: 1",
    "http://[v1.x]/",
    "http://[zz]/",
    "http://127.0.0.1/",
    "http://127.1/",
    "http://2130706433/",
    "http://0x7f000001/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://localhost/",
    "http://0.0.0.0/",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1/",
    "http://192.168.0.1/",
    "http://169.254.1.1/",
    "http://metadata.google.internal/",
]


def test_urls_that_cannot_or_may_not_be_sent_to_are_400s_naming_url(guarded: Server) -> None:
    auth = {"authorization": f"Bearer {guarded.key}"}
    for url in REFUSED_URLS:
        answer = httpx.post(f"{guarded.base_url}/webhooks", json={"url": url}, headers=auth)
        assert answer.status_code == 400, (url, answer.text)
        error = answer.json()["error"]
        assert error["param"] == "url" and error["type"] == "invalid_request_error", url
    listed = httpx.get(f"{guarded.base_url}/webhooks", headers=auth)
    assert listed.json()["data"] == []


def test_a_healthy_receiver_is_not_held_up_by_a_poisoned_and_a_slow_one(
    database_url: str, tmp_path: Path
) -> None:
    env = {**FAST_DELIVERY, "OPENFT_WEBHOOK_TRY_SECONDS": "3"}
    slow, huge, healthy = Hostile("slow", trickle_seconds=0.5), Hostile("huge"), Hostile()
    with (
        serving(slow, huge, healthy),
        running_server(database_url, tmp_path, "tiny=/x", env=env) as server,
    ):
        for receiver in (slow, huge, healthy):
            openft(server, "webhooks", "add", receiver.url)
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        job = queued_job(client)
        cancelled_at = time.monotonic()
        client.fine_tuning.jobs.cancel(job.id)
        arrived, _headers, body = wait_until(lambda: healthy.received, 10, 0.05, "delivery")[0]
        assert arrived - cancelled_at < 2.0, arrived - cancelled_at
        assert json.loads(body)["data"]["id"] == job.id
        wait_until(lambda: len(slow.received) >= 2, 20, 0.2, "the slow one's second try")
    assert len(huge.received) == 1  # its 200 counted; the 300 MB were never read
