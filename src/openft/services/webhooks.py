"""Webhooks: a project's endpoints, and the delivery of its jobs' terminal transitions.

A transition to succeeded, failed or cancelled puts the event in the outbox in the same
transaction (`queue_terminal`), so it is never lost and never sent for a change that did
not commit. The delivery loop (`deliver_due`, in every `openft serve`) takes due
deliveries under a lease (no two senders send one at once), posts them signed the way
OpenAI signs its webhooks, and records the answer: a 2xx ends it, anything else is tried
again later with exponential backoff. After a 2xx it is never sent again.
"""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx

from openft.domain import webhooks
from openft.domain.entities import JobStatus, Principal, WebhookDelivery, WebhookEndpoint
from openft.domain.errors import InvalidRequest, NotFound
from openft.domain.ids import new_webhook_event_id, new_webhook_id
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store, Transaction

log = logging.getLogger(__name__)
# How long a sender holds the deliveries it took; longer than a try can take.
LEASE_SECONDS = 120
TIMEOUT_SECONDS = 10


def queue_terminal(
    tx: Transaction, project_id: str, job_id: str, status: JobStatus, now: int
) -> None:
    """In the transaction that moves a job to `status`: its webhook event, if terminal."""
    event_type = webhooks.EVENT_TYPES.get(status)
    if event_type is None:
        return
    event_id = new_webhook_event_id()
    body = webhooks.payload(event_id, event_type, job_id, now)
    tx.queue_webhook_event(project_id, event_id, event_type, job_id, body, now)


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id}.", param="webhook_id")


class WebhookService:
    def __init__(
        self, db: Store, *, retry_base_seconds: float = 2.0, clock: Clock = system_clock
    ) -> None:
        self._db = db
        self._retry_base = retry_base_seconds
        self._clock = clock
        self._http = httpx.Client(timeout=TIMEOUT_SECONDS, follow_redirects=False)

    def add(self, principal: Principal, url: str) -> WebhookEndpoint:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise InvalidRequest(f"Invalid url {url!r}: an http(s) URL is needed.", param="url")
        endpoint = WebhookEndpoint(
            new_webhook_id(), principal.project_id, url, webhooks.new_secret(), self._clock()
        )
        with self._db.write() as tx:
            tx.insert_webhook(endpoint)
        return endpoint

    def endpoints(self, principal: Principal) -> list[WebhookEndpoint]:
        with self._db.read() as tx:
            return tx.list_webhooks(principal.project_id)

    def remove(self, principal: Principal, endpoint_id: str) -> None:
        with self._db.write() as tx:
            if not tx.delete_webhook(principal.project_id, endpoint_id):
                raise _not_found(endpoint_id)

    def deliveries(self, principal: Principal, endpoint_id: str) -> list[WebhookDelivery]:
        with self._db.read() as tx:
            found = tx.list_webhook_deliveries(principal.project_id, endpoint_id)
        if found is None:
            raise _not_found(endpoint_id)
        return found

    def deliver_due(self, limit: int = 50) -> int:
        """Send what is due; how many were tried."""
        now = self._clock()
        with self._db.write() as tx:
            due = tx.claim_webhook_deliveries(now, now + LEASE_SECONDS, limit)
        for delivery, endpoint in due:
            self._send(delivery, endpoint)
        return len(due)

    def _send(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        timestamp = self._clock()
        headers = {
            "content-type": "application/json",
            "user-agent": "openft-webhooks",
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": webhooks.signature(
                endpoint.secret, delivery.event_id, timestamp, delivery.payload
            ),
        }
        status: int | None = None
        error: str | None = None
        try:
            response = self._http.post(endpoint.url, content=delivery.payload, headers=headers)
            status = response.status_code
            if not response.is_success:
                error = f"answered {status}"
        except httpx.HTTPError as exc:
            error = f"{type(exc).__name__}: {exc}"
        delivered = error is None
        now = self._clock()
        wait = None if delivered else webhooks.retry_after(delivery.attempts + 1, self._retry_base)
        with self._db.write() as tx:
            tx.record_webhook_attempt(
                delivery.event_id,
                endpoint.id,
                now,
                delivered=delivered,
                status=status,
                error=error,
                next_attempt_at=None if wait is None else now + max(1, round(wait)),
            )
        if not delivered:
            log.warning(
                "webhook %s to %s: %s (attempt %d)",
                delivery.event_id,
                endpoint.url,
                error,
                delivery.attempts + 1,
            )

    def close(self) -> None:
        self._http.close()
