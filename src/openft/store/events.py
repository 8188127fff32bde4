"""The durable event log of each job: batched appends and keyset pages, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from openft.domain.entities import Event, EventDraft, EventLevel, EventLog, EventType, Page
from openft.domain.ids import MAX_EVENT_SEQ
from openft.store.jobs import job_pk
from openft.store.schema import job_events, jobs

# The events page is the hottest read in openft, so its statements are built once here
# rather than per call: building and keying a fresh select() costs several times more
# than SQLite takes to run it. The page is a keyset read (as in store/pages.py) with the
# cursor always bound (MAX_EVENT_SEQ + 1 for the head), so one statement serves all.
_PAGE = (
    select(
        job_events.c.seq,
        job_events.c.created_at,
        job_events.c.level,
        job_events.c.type,
        job_events.c.message,
        job_events.c.data,
    )
    .where(
        job_events.c.job_pk == job_pk(bindparam("job_id")),
        job_events.c.seq < bindparam("before"),
    )
    .order_by(job_events.c.seq.desc())
    .limit(bindparam("fetch"))
)
_RESERVE = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"))
    .values(last_event_seq=jobs.c.last_event_seq + bindparam("count"))
    .returning(jobs.c.pk, jobs.c.last_event_seq, jobs.c.event_key)
)
_LOG = select(jobs.c.event_key, jobs.c.last_event_seq, jobs.c.project_id).where(
    jobs.c.id == bindparam("job_id")
)
_INSERT = insert(job_events)
_INSERT_COLUMNS = ("job_pk", "seq", "created_at", "level", "type", "message", "data")
_LEVELS = {level.value: level for level in EventLevel}
_TYPES = {kind.value: kind for kind in EventType}


def _encode(data: dict[str, Any]) -> str | None:
    return orjson.dumps(data).decode() if data else None


class EventQueries:
    _conn: Connection

    def append_events(self, job_id: str, drafts: Sequence[EventDraft], now: int) -> list[Event]:
        """One statement for the whole batch. Sequence numbers are reserved under the job
        row's lock, so concurrent appenders to one job never collide and every reader
        sees a gap-free sequence."""
        if not drafts:
            return []
        pk, last, event_key = self._conn.execute(
            _RESERVE, {"job_id": job_id, "count": len(drafts)}
        ).one()
        first = last - len(drafts) + 1
        events = [
            Event(
                event_key,
                first + offset,
                draft.created_at if draft.created_at is not None else now,
                draft.level,
                draft.type,
                draft.message,
                draft.data,
            )
            for offset, draft in enumerate(drafts)
        ]
        rows = [
            (
                pk,
                event.seq,
                event.created_at,
                event.level.value,
                event.type.value,
                event.message,
                _encode(event.data),
            )
            for event in events
        ]
        if self._conn.dialect.name == "postgresql":
            self._copy_rows(rows)
        else:
            self._conn.execute(
                _INSERT, [dict(zip(_INSERT_COLUMNS, row, strict=True)) for row in rows]
            )
        return events

    def _copy_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL's COPY: more than twice the rate of a multi-row INSERT for a batch."""
        driver = self._conn.connection.driver_connection
        assert driver is not None
        columns = ", ".join(_INSERT_COLUMNS)
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {job_events.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def record_event_batch(
        self, job_id: str, now: int, *, batch: int, reported_step: int, drafts: Sequence[EventDraft]
    ) -> list[Event]:
        events = self.append_events(job_id, drafts, now)
        self._conn.execute(
            update(jobs)
            .where(jobs.c.id == job_id)
            .values(
                worker_batch=batch, reported_step=reported_step, heartbeat_at=now, updated_at=now
            )
        )
        return events

    def event_log(self, job_id: str, project_id: str | None = None) -> EventLog | None:
        row = self._conn.execute(_LOG, {"job_id": job_id}).one_or_none()
        if row is None or (project_id is not None and row.project_id != project_id):
            return None
        return EventLog(job_id, row.event_key, row.last_event_seq)

    def events_page(self, log: EventLog, *, before_seq: int | None, limit: int) -> Page[Event]:
        """One extra row is fetched to tell, exactly, whether more remain."""
        before = MAX_EVENT_SEQ + 1 if before_seq is None else before_seq
        rows = self._conn.execute(
            _PAGE, {"job_id": log.job_id, "before": before, "fetch": limit + 1}
        ).all()
        event_key = log.event_key
        events = [
            Event(
                event_key,
                row.seq,
                row.created_at,
                _LEVELS[row.level],
                _TYPES[row.type],
                row.message,
                orjson.loads(row.data) if row.data else {},
            )
            for row in rows[:limit]
        ]
        return Page(events, has_more=len(rows) > limit)

    def metrics_data(self, job_id: str) -> list[dict[str, Any]]:
        rows = self._conn.execute(
            select(job_events.c.data)
            .where(
                job_events.c.job_pk == job_pk(job_id),
                job_events.c.type == EventType.METRICS.value,
            )
            .order_by(job_events.c.seq)
        ).scalars()
        return [orjson.loads(data) if data else {} for data in rows]
