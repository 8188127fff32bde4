"""The durable event log of each job: batched appends and keyset pages, newest first."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, insert, select, update

from openft.domain.entities import Event, EventDraft, EventLevel, EventType, Page
from openft.store.pages import keyset_page
from openft.store.schema import job_events, jobs

_COLUMNS = (
    job_events.c.seq,
    job_events.c.created_at,
    job_events.c.level,
    job_events.c.type,
    job_events.c.message,
    job_events.c.data,
)


def _encode(data: dict[str, Any]) -> str | None:
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False) if data else None


def append_events(
    conn: Connection, job_pk: int, drafts: Sequence[EventDraft], now: int
) -> list[Event]:
    """Append `drafts` in order, in the caller's transaction, with one statement for the
    whole batch. Sequence numbers are reserved under the job row's lock, so concurrent
    appenders to one job never collide and every reader sees a gap-free sequence."""
    if not drafts:
        return []
    last, event_key = conn.execute(
        update(jobs)
        .where(jobs.c.pk == job_pk)
        .values(last_event_seq=jobs.c.last_event_seq + len(drafts))
        .returning(jobs.c.last_event_seq, jobs.c.event_key)
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
    conn.execute(
        insert(job_events),
        [
            {
                "job_pk": job_pk,
                "seq": event.seq,
                "created_at": event.created_at,
                "level": event.level.value,
                "type": event.type.value,
                "message": event.message,
                "data": _encode(event.data),
            }
            for event in events
        ],
    )
    return events


def event_exists(conn: Connection, job_pk: int, seq: int) -> bool:
    query = select(job_events.c.seq).where(job_events.c.job_pk == job_pk, job_events.c.seq == seq)
    return conn.execute(query).first() is not None


def list_events(
    conn: Connection, job_pk: int, event_key: str, *, before_seq: int | None, limit: int
) -> Page[Event]:
    """Newest first; with `before_seq`, only the events strictly older than it."""

    def convert(row: Any) -> Event:
        return Event(
            event_key,
            row.seq,
            row.created_at,
            EventLevel(row.level),
            EventType(row.type),
            row.message,
            json.loads(row.data) if row.data else {},
        )

    query = select(*_COLUMNS).where(job_events.c.job_pk == job_pk)
    return keyset_page(conn, query, job_events.c.seq, before_seq, limit, True, convert)
