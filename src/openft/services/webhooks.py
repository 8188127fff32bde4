"""Webhooks: a project's endpoints, and the delivery of its jobs' terminal transitions.

A transition to succeeded, failed or cancelled puts the event in the outbox in the same
transaction (`queue_terminal`), so it is never lost and never sent for a change that did
not commit. The delivery loop (`deliver_due`, in every `openft serve`) takes due
deliveries under a lease (no two senders send one at once), posts them signed the way
OpenAI signs its webhooks, and records the answer: a 2xx ends it, anything else is tried
again later with exponential backoff. After a 2xx it is never sent again.

One endpoint cannot hold up another's deliveries: tries run on a pool of threads, each
with its own total time limit; the loop takes only as many deliveries as there are free
threads, and one per endpoint at a time, so a slow receiver occupies one thread at most,
each try cut off at its time limit, while the others keep going. URLs are parsed and judged
at registration, and judged again at connect time (webhook_guard.py): webhooks reach
public addresses only, unless the operator allows more (`OPENFT_WEBHOOK_ALLOWED_HOSTS`).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial

from openft.domain import webhooks
from openft.domain.entities import JobStatus, Principal, WebhookDelivery, WebhookEndpoint
from openft.domain.errors import InvalidRequest, NotFound
from openft.domain.ids import new_webhook_event_id, new_webhook_id
from openft.domain.webhook_addresses import AllowedHosts
from openft.domain.webhook_urls import BadWebhookUrl, WebhookUrl, parse_webhook_url
from openft.services.clock import Clock, system_clock
from openft.services.webhook_guard import AddressRefused, Resolver, check_host, resolve
from openft.services.webhook_sender import Outcome, WebhookSender
from openft.store.interface import Store, Transaction

log = logging.getLogger(__name__)
# How long a sender holds the deliveries it took; longer than a try can take.
LEASE_SECONDS = 120
TRY_SECONDS = 10.0
CONCURRENCY = 16
BATCH_WAIT_SECONDS = 0.02


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


def _left(deadline: float) -> float:
    return max(0.0, deadline - time.monotonic())


def _not_found(endpoint_id: str) -> NotFound:
    return NotFound(f"No webhook endpoint {endpoint_id}.", param="webhook_id")


class WebhookService:
    def __init__(
        self,
        db: Store,
        *,
        retry_base_seconds: float = 2.0,
        allowed_hosts: AllowedHosts | None = None,
        try_seconds: float = TRY_SECONDS,
        concurrency: int = CONCURRENCY,
        clock: Clock = system_clock,
        resolver: Resolver = resolve,
    ) -> None:
        if try_seconds >= LEASE_SECONDS / 2:
            raise ValueError(f"a try must take less than {LEASE_SECONDS / 2:g} s")
        self._db = db
        self._retry_base = retry_base_seconds
        self._allowed = allowed_hosts or AllowedHosts()
        self._clock = clock
        self._resolve = resolver
        self._concurrency = concurrency
        self._sender = WebhookSender(self._allowed, try_seconds, concurrency, resolver)
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="openft-webhook")
        self._busy: set[str] = set()  # endpoints with a try under way in this process
        self._idle = threading.Condition()

    def add(self, principal: Principal, url: str) -> WebhookEndpoint:
        """A new endpoint, with its signing secret (shown this once)."""
        target = self._checked(url)
        endpoint = WebhookEndpoint(
            new_webhook_id(),
            principal.project_id,
            str(target),
            webhooks.new_secret(),
            self._clock(),
        )
        with self._db.write() as tx:
            tx.insert_webhook(endpoint)
        return endpoint

    def _checked(self, url: str) -> WebhookUrl:
        try:
            target = parse_webhook_url(url)
            check_host(target.host, target.port, self._allowed, self._resolve)
        except BadWebhookUrl as exc:
            raise InvalidRequest(f"Invalid url {url!r}: {exc}.", param="url") from None
        except AddressRefused as exc:
            raise InvalidRequest(
                f"Invalid url {url!r}: {exc}; webhooks are sent to public addresses only"
                " (an operator may allow others with OPENFT_WEBHOOK_ALLOWED_HOSTS).",
                param="url",
                code="url_not_allowed",
            ) from None
        return target

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

    def deliver_due(self, limit: int = 50, wait_seconds: float = 1.0) -> int:
        """Start sending what is due, as many as there are free senders; how many were
        started. It does not wait for the tries (`wait_idle` does), but for up to
        `wait_seconds` for a free sender, and, while all that is due is for endpoints
        with a try under way here, for those tries to end: the loop that calls it then
        keeps every sender busy without waiting for its next poll."""
        deadline = time.monotonic() + wait_seconds
        while True:
            with self._idle:
                if not self._idle.wait_for(self._has_free_sender, _left(deadline)):
                    return 0
                # A moment more for other senders to end their tries: claiming several
                # deliveries in one transaction costs less than one each.
                self._idle.wait_for(self._half_free, BATCH_WAIT_SECONDS)
                free = min(limit, self._concurrency - len(self._busy))
                busy = frozenset(self._busy)
            now = self._clock()
            with self._db.write() as tx:
                # One try per endpoint at a time: a slow endpoint holds one sender only.
                due = tx.claim_webhook_deliveries(now, now + LEASE_SECONDS, free, busy)
            if due or not busy:
                break
            with self._idle:  # what is due may wait for one of those tries to end
                if not self._idle.wait_for(partial(self._any_ended, busy), _left(deadline)):
                    return 0
        with self._idle:
            self._busy.update(endpoint.id for _delivery, endpoint in due)
        for delivery, endpoint in due:
            self._pool.submit(self._try, delivery, endpoint)
        return len(due)

    def _has_free_sender(self) -> bool:
        return len(self._busy) < self._concurrency

    def _half_free(self) -> bool:
        return len(self._busy) <= self._concurrency // 2

    def _any_ended(self, busy: frozenset[str]) -> bool:
        return not busy <= self._busy

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no delivery is being sent; False if some still are after `timeout`."""
        with self._idle:
            return self._idle.wait_for(lambda: not self._busy, timeout)

    def _try(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        try:
            self._send(delivery, endpoint)
        except Exception:  # the database failed us: the lease makes it due again
            log.exception("webhook %s to %s: not recorded", delivery.event_id, endpoint.id)
        finally:
            with self._idle:
                self._busy.discard(endpoint.id)
                self._idle.notify_all()

    def _send(self, delivery: WebhookDelivery, endpoint: WebhookEndpoint) -> None:
        attempts = delivery.attempts + 1
        try:
            url = parse_webhook_url(endpoint.url)
        except BadWebhookUrl as exc:  # registered before URLs were checked: never sendable
            outcome, attempts = Outcome(None, f"invalid url: {exc}"), webhooks.MAX_ATTEMPTS
        else:
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
            outcome = self._sender.post(url, headers, delivery.payload.encode())
        now = self._clock()
        wait = None if outcome.delivered else webhooks.retry_after(attempts, self._retry_base)
        with self._db.write() as tx:
            tx.record_webhook_attempt(
                delivery.event_id,
                endpoint.id,
                now,
                delivered=outcome.delivered,
                status=outcome.status,
                error=outcome.error,
                next_attempt_at=None if wait is None else now + max(1, round(wait)),
            )
        if not outcome.delivered:
            log.warning(
                "webhook %s to %s: %s (attempt %d)",
                delivery.event_id,
                endpoint.id,
                outcome.error,
                delivery.attempts + 1,
            )

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._sender.close()
