"""Webhook endpoints and the outbox of their deliveries."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, insert, select, update

from openft.domain.entities import WebhookDelivery, WebhookEndpoint
from openft.store.pages import key_of
from openft.store.schema import webhook_deliveries, webhook_endpoints

E, D = webhook_endpoints, webhook_deliveries
_DELIVERY = (
    D.c.event_id,
    D.c.type,
    D.c.job_id,
    D.c.created_at,
    D.c.payload,
    D.c.attempts,
    D.c.next_attempt_at,
    D.c.delivered_at,
    D.c.last_status,
    D.c.last_error,
)


_ENDPOINT = (
    E.c.id.label("endpoint_id"),
    E.c.project_id,
    E.c.url,
    E.c.secret,
    E.c.created_at.label("endpoint_created_at"),
)


def _endpoint(row: Any) -> WebhookEndpoint:
    return WebhookEndpoint(
        row.endpoint_id, row.project_id, row.url, row.secret, row.endpoint_created_at
    )


def _delivery(row: Any) -> WebhookDelivery:
    return WebhookDelivery(*(getattr(row, column.name) for column in _DELIVERY))


class WebhookQueries:
    _conn: Connection

    def insert_webhook(self, endpoint: WebhookEndpoint) -> None:
        self._conn.execute(
            insert(E).values(
                id=endpoint.id,
                project_id=endpoint.project_id,
                url=endpoint.url,
                secret=endpoint.secret,
                created_at=endpoint.created_at,
            )
        )

    def list_webhooks(self, project_id: str) -> list[WebhookEndpoint]:
        rows = self._conn.execute(
            select(*_ENDPOINT).where(E.c.project_id == project_id).order_by(E.c.pk)
        )
        return [_endpoint(row) for row in rows]

    def delete_webhook(self, project_id: str, endpoint_id: str) -> bool:
        statement = delete(E).where(E.c.id == endpoint_id, E.c.project_id == project_id)
        return self._conn.execute(statement).rowcount == 1

    def queue_webhook_event(
        self, project_id: str, event_id: str, event_type: str, job_id: str, body: str, now: int
    ) -> None:
        endpoints = select(E.c.pk).where(E.c.project_id == project_id)
        rows = [
            {
                "endpoint_pk": pk,
                "event_id": event_id,
                "type": event_type,
                "job_id": job_id,
                "created_at": now,
                "payload": body,
                "attempts": 0,
                "next_attempt_at": now,
            }
            for pk in self._conn.execute(endpoints).scalars()
        ]
        if rows:
            self._conn.execute(insert(D), rows)

    def claim_webhook_deliveries(
        self, now: int, lease_until: int, limit: int, busy: frozenset[str] = frozenset()
    ) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
        """Due deliveries, each held until `lease_until` so that no other sender takes
        it meanwhile (SKIP LOCKED on PostgreSQL; SQLite's write lock otherwise), at most
        one per endpoint and none of the `busy` endpoints, oldest first."""
        due = select(D.c.pk, D.c.endpoint_pk).where(D.c.next_attempt_at <= now)
        if busy:
            due = due.where(D.c.endpoint_pk.not_in(select(E.c.pk).where(E.c.id.in_(busy))))
        # A window wider than `limit`: one endpoint's backlog must not fill the whole claim.
        window = due.order_by(D.c.next_attempt_at, D.c.pk).limit(limit * 4)
        pks: list[int] = []
        endpoints: set[int] = set()
        for pk, endpoint_pk in self._conn.execute(window.with_for_update(skip_locked=True)):
            if endpoint_pk not in endpoints and len(pks) < limit:
                endpoints.add(endpoint_pk)
                pks.append(pk)
        if not pks:
            return []
        self._conn.execute(update(D).where(D.c.pk.in_(pks)).values(next_attempt_at=lease_until))
        rows = self._conn.execute(
            select(*_DELIVERY, *_ENDPOINT).join(E, E.c.pk == D.c.endpoint_pk).where(D.c.pk.in_(pks))
        )
        return [(_delivery(row), _endpoint(row)) for row in rows]

    def record_webhook_attempt(
        self,
        event_id: str,
        endpoint_id: str,
        now: int,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: int | None,
    ) -> None:
        self._conn.execute(
            update(D)
            .where(D.c.event_id == event_id, D.c.endpoint_pk == key_of(E, endpoint_id))
            .values(
                attempts=D.c.attempts + 1,
                delivered_at=now if delivered else None,
                next_attempt_at=next_attempt_at,
                last_status=status,
                last_error=error[:500] if error else None,
            )
        )

    def list_webhook_deliveries(
        self, project_id: str, endpoint_id: str
    ) -> list[WebhookDelivery] | None:
        """Newest first; None if the endpoint is not the project's."""
        endpoint = self._conn.execute(
            select(E.c.pk).where(E.c.id == endpoint_id, E.c.project_id == project_id)
        ).scalar_one_or_none()
        if endpoint is None:
            return None
        rows = self._conn.execute(
            select(*_DELIVERY).where(D.c.endpoint_pk == endpoint).order_by(D.c.pk.desc()).limit(100)
        )
        return [_delivery(row) for row in rows]
