"""The counts behind `/metrics`, read from each database: the queue and its oldest job,
leases held and expired, webhook deliveries pending and given up, events appended."""

from __future__ import annotations

import time

from openft.domain.entities import Principal, WebhookEndpoint
from openft.services.container import Services
from openft.services.metrics import MetricsService
from tests.integration.test_worker_service import metrics, queued


def at(services: Services, now: int) -> MetricsService:
    return MetricsService(
        services.db, services.live, services.inference, heartbeat_timeout=60, clock=lambda: now
    )


def test_the_snapshot_counts_the_queue_leases_and_deliveries(
    services: Services, principal: Principal
) -> None:
    now = int(time.time())
    empty = at(services, now).snapshot()
    assert empty.jobs_by_status == {} and empty.oldest_queued_at is None
    first, _second = queued(services, principal), queued(services, principal)
    assert services.worker.claim("w1") is not None  # the oldest: `first`
    appended = services.db.events_appended
    assert services.worker.report(first, "w1", 1, [metrics(1), metrics(2)])
    assert services.db.events_appended == appended + 2

    snapshot = at(services, now).snapshot()
    assert snapshot.jobs_by_status == {"queued": 1, "running": 1}
    assert snapshot.oldest_queued_at is not None and abs(snapshot.oldest_queued_at - now) <= 5
    assert (snapshot.leases_held, snapshot.leases_expired) == (1, 0)
    # Two minutes on, the worker has been silent past its 60 s: its lease is expired.
    assert at(services, now + 120).snapshot().leases_expired == 1

    with services.db.write() as tx:
        tx.insert_webhook(WebhookEndpoint("wh_1", principal.project_id, "https://x", "s", now))
        tx.queue_webhook_event(principal.project_id, "evt_1", "t", first, "{}", now)
        tx.queue_webhook_event(principal.project_id, "evt_2", "t", first, "{}", now)
        tx.queue_webhook_event(principal.project_id, "evt_3", "t", first, "{}", now)
        tx.record_webhook_attempt(
            "evt_2", "wh_1", now, delivered=False, status=500, error="no", next_attempt_at=None
        )
        tx.record_webhook_attempt(
            "evt_3", "wh_1", now, delivered=True, status=200, error=None, next_attempt_at=None
        )
    snapshot = at(services, now).snapshot()
    assert (snapshot.webhooks_pending, snapshot.webhooks_failed) == (1, 1)
