"""The counts an operator's metrics read: one aggregate per table, across all projects."""

from __future__ import annotations

from sqlalchemy import Connection, and_, case, func, select

from openft.domain.entities import JobStatus
from openft.domain.operations import OperationsSnapshot
from openft.store.schema import jobs, webhook_deliveries

_D = webhook_deliveries
_RUNNING = jobs.c.status == JobStatus.RUNNING.value
_BY_STATUS = select(jobs.c.status, func.count()).group_by(jobs.c.status)
_OLDEST_QUEUED = select(func.min(jobs.c.updated_at)).where(jobs.c.status == JobStatus.QUEUED.value)
# Pending: due now or later (`next_attempt_at` is cleared once delivered or given up);
# failed: cleared without having been delivered.
_DELIVERIES = select(
    func.count(_D.c.next_attempt_at),
    func.coalesce(
        func.sum(case((and_(_D.c.next_attempt_at.is_(None), _D.c.delivered_at.is_(None)), 1))),
        0,
    ),
)


class OperationsQueries:
    _conn: Connection

    def operations_snapshot(self, heartbeat_before: int) -> OperationsSnapshot:
        by_status = {status: count for status, count in self._conn.execute(_BY_STATUS).all()}
        held, expired = self._conn.execute(
            select(
                func.count(jobs.c.worker_id),
                func.coalesce(func.sum(case((jobs.c.heartbeat_at < heartbeat_before, 1))), 0),
            ).where(_RUNNING)
        ).one()
        pending, failed = self._conn.execute(_DELIVERIES).one()
        return OperationsSnapshot(
            jobs_by_status=by_status,
            oldest_queued_at=self._conn.execute(_OLDEST_QUEUED).scalar(),
            leases_held=int(held),
            leases_expired=int(expired),
            webhooks_pending=int(pending),
            webhooks_failed=int(failed),
        )
