"""The durable event log of each job: batched appends and keyset pages, newest first."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson
from sqlalchemy import Connection, bindparam, insert, select, update

from openft.domain.entities import Event, EventDraft, EventLevel, EventType, Page
from openft.domain.ids import MAX_EVENT_SEQ
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
    .where(job_events.c.job_pk == bindparam("job_pk"), job_events.c.seq < bindparam("before"))
    .order_by(job_events.c.seq.desc())
    .limit(bindparam("fetch"))
)
_RESERVE = (
    update(jobs)
    .where(jobs.c.pk == bindparam("job_pk"))
    .values(last_event_seq=jobs.c.last_event_seq + bindparam("count"))
    .returning(jobs.c.last_event_seq, jobs.c.event_key)
)
_INSERT = insert(job_events)
_INSERT_COLUMNS = ("job_pk", "seq", "created_at", "level", "type", "message", "data")
_LEVELS = {level.value: level for level in EventLevel}
_TYPES = {kind.value: kind for kind in EventType}


def _encode(data: dict[str, Any]) -> str | None:
    return orjson.dumps(data).decode() if data else None


def append_events(
    conn: Connection, job_pk: int, drafts: Sequence[EventDraft], now: int
) -> list[Event]:
    """Append `drafts` in order, in the caller's transaction, with one statement for the
    whole batch. Sequence numbers are reserved under the job row's lock, so concurrent
    appenders to one job never collide and every reader sees a gap-free sequence."""
    if not drafts:
        return []
    last, event_key = conn.execute(_RESERVE, {"job_pk": job_pk, "count": len(drafts)}).one()
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
            job_pk,
            event.seq,
            event.created_at,
            event.level.value,
            event.type.value,
            event.message,
            _encode(event.data),
        )
        for event in events
    ]
    if conn.dialect.name == "postgresql":
        _copy_rows(conn, rows)
    else:
        conn.execute(_INSERT, [dict(zip(_INSERT_COLUMNS, row, strict=True)) for row in rows])
    return events


def _copy_rows(conn: Connection, rows: list[tuple[Any, ...]]) -> None:
    """PostgreSQL's COPY: more than twice the rate of a multi-row INSERT for a batch."""
    driver = conn.connection.driver_connection
    assert driver is not None
    columns = ", ".join(_INSERT_COLUMNS)
    with driver.cursor() as cursor:
        with cursor.copy(f"COPY {job_events.name} ({columns}) FROM STDIN") as copy:
            for row in rows:
                copy.write_row(row)


def list_events(
    conn: Connection, job_pk: int, event_key: str, *, before_seq: int | None, limit: int
) -> Page[Event]:
    """Newest first; with `before_seq`, only the events strictly older than it.

    One extra row is fetched to tell, exactly, whether more remain."""
    before = MAX_EVENT_SEQ + 1 if before_seq is None else before_seq
    rows = conn.execute(_PAGE, {"job_pk": job_pk, "before": before, "fetch": limit + 1}).all()
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


def metrics_data(conn: Connection, job_pk: int) -> list[dict[str, Any]]:
    """The `data` of every metrics event of a job, oldest first."""
    rows = conn.execute(
        select(job_events.c.data)
        .where(job_events.c.job_pk == job_pk, job_events.c.type == EventType.METRICS.value)
        .order_by(job_events.c.seq)
    ).scalars()
    return [orjson.loads(data) if data else {} for data in rows]
