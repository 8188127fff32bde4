"""The durable event log of each job: batched appends and keyset pages, newest first."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import psycopg
from psycopg_pool import AsyncConnectionPool
from sqlalchemy import (
    ColumnElement,
    Connection,
    Select,
    and_,
    bindparam,
    func,
    insert,
    literal,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.dialects.sqlite import dialect as sqlite_dialect

from openft.domain.entities import (
    Event,
    EventDraft,
    EventLevel,
    EventLog,
    EventType,
    JobStatus,
    Page,
)
from openft.domain.errors import StoreUnavailable
from openft.domain.ids import MAX_EVENT_SEQ
from openft.store.interface import Appended
from openft.store.jobs import held_by, job_pk
from openft.store.schema import job_events, jobs

# The events page is the hottest read in openft, so its statements are built once here
# rather than per call: building and keying a fresh select() costs several times more
# than SQLite takes to run it. A page is a keyset read (as in store/pages.py) with the
# cursor always bound (MAX_EVENT_SEQ + 1 for the head), so one statement serves all.
# It reads the job's row and the page in ONE statement, one round trip: the job's event
# key, last sequence number and status come back on every row (to check the cursor, and
# to tell a follower whether more can come), and a job with no event past the cursor on
# one row with NULL event columns. Followers read forwards, oldest first.
_EVENT_COLUMNS = ("seq", "created_at", "level", "type", "message", "data")
_JOB_COLUMNS = (jobs.c.event_key, jobs.c.last_event_seq, jobs.c.project_id, jobs.c.status)


def _page_statements(newest_first: bool) -> tuple[Select[Any], Select[Any]]:
    """(for SQLite, for PostgreSQL) reading the page past the bound `cursor`."""
    seq = job_events.c.seq
    past = seq < bindparam("cursor") if newest_first else seq > bindparam("cursor")
    order = seq.desc() if newest_first else seq.asc()
    # SQLite: a LEFT JOIN that its planner walks along the (job_pk, seq) key.
    join = (
        select(*_JOB_COLUMNS, *(job_events.c[name] for name in _EVENT_COLUMNS))
        .select_from(jobs.outerjoin(job_events, and_(job_events.c.job_pk == jobs.c.pk, past)))
        .where(jobs.c.id == bindparam("job_id"))
        .order_by(order)
        .limit(bindparam("fetch"))
    )
    # PostgreSQL sorts that join instead: a LATERAL subquery keeps the index range scan.
    page = (
        select(*(job_events.c[name] for name in _EVENT_COLUMNS))
        .where(job_events.c.job_pk == jobs.c.pk, past)
        .order_by(order)
        .limit(bindparam("fetch"))
        .lateral("page")
    )
    lateral = (
        select(*_JOB_COLUMNS, *(page.c[name] for name in _EVENT_COLUMNS))
        .select_from(jobs.outerjoin(page, true()))
        .where(jobs.c.id == bindparam("job_id"))
        .order_by(page.c.seq.desc() if newest_first else page.c.seq.asc())
    )
    return join, lateral


_PAGE_JOIN, _PAGE_LATERAL = _page_statements(newest_first=True)
_SINCE_JOIN, _SINCE_LATERAL = _page_statements(newest_first=False)
_RESERVE = (
    update(jobs)
    .where(jobs.c.id == bindparam("job_id"))
    .values(last_event_seq=jobs.c.last_event_seq + bindparam("count"))
    .returning(jobs.c.pk, jobs.c.last_event_seq, jobs.c.event_key)
)
# PostgreSQL: the same statement also notifies the processes that LISTEN on the channel,
# when the transaction commits (not before: a follower never hears of what it cannot yet
# read), with the job's id. No extra round trip, and PostgreSQL folds the same
# notification sent twice in one transaction into one: one per committed batch.
EVENTS_CHANNEL = "openft_events"
_RESERVE_NOTIFY = _RESERVE.returning(func.pg_notify(EVENTS_CHANNEL, jobs.c.id))
_LOG = select(*_JOB_COLUMNS).where(jobs.c.id == bindparam("job_id"))
# The API reads pages from PostgreSQL with psycopg's async driver on its event loop, as SQL
# compiled once here (`read_events_async`): a hop to a worker thread and SQLAlchemy's
# execute cost more CPU per page than the round trip itself (bench/events_bench.py).
# psycopg prepares it on the server after a few runs.
_PAGE_LATERAL_SQL = str(_PAGE_LATERAL.compile(dialect=psycopg_dialect()))  # type: ignore[no-untyped-call]
_SINCE_LATERAL_SQL = str(_SINCE_LATERAL.compile(dialect=psycopg_dialect()))  # type: ignore[no-untyped-call]
_INSERT = insert(job_events)
_INSERT_COLUMNS = ("job_pk", "seq", "created_at", "level", "type", "message", "data")


# The metrics of a run of consecutive events (a range of the (job_pk, seq) key), their
# `data` joined by the database into one text that is parsed as one JSON array: for a
# chart of a million steps, a few hundred strings cross into Python rather than a million.
# PostgreSQL joins them in sequence order; SQLite's group_concat takes no ORDER BY
# before 3.44 and joins them as the key range is scanned (`metrics_runs` sorts by step).
def _metrics_run(joined: Any) -> Select[Any]:
    return select(joined).where(
        job_events.c.job_pk == job_pk(bindparam("job_id")),
        job_events.c.seq.between(bindparam("first"), bindparam("last")),
        job_events.c.type == EventType.METRICS.value,
    )


_METRICS_RUN = _metrics_run(func.group_concat(job_events.c.data, ","))
_METRICS_RUN_PG = _metrics_run(
    func.string_agg(job_events.c.data, aggregate_order_by(literal(","), job_events.c.seq))
)
COPY_FROM_ROWS = 32  # PostgreSQL: batches larger than this are COPYed, smaller INSERTed
_LEVELS = {level.value: level for level in EventLevel}
_TYPES = {kind.value: kind for kind in EventType}


# A job's log position and one page of it; None: no such job.
EventsRead = tuple[EventLog, Page[Event]] | None


def _encode(data: dict[str, Any]) -> str | None:
    return orjson.dumps(data).decode() if data else None


def _page_params(job_id: str, before_seq: int | None, limit: int) -> dict[str, Any]:
    """One extra row is fetched to tell, exactly, whether more remain."""
    before = MAX_EVENT_SEQ + 1 if before_seq is None else before_seq
    return {"job_id": job_id, "cursor": before, "fetch": limit + 1}


def _log_of(job_id: str, row: Sequence[Any]) -> EventLog:
    event_key, last_seq, project_id, status = row[:4]
    return EventLog(job_id, event_key, last_seq, project_id, JobStatus(status))


def _page_of(job_id: str, rows: Sequence[Sequence[Any]], limit: int) -> EventsRead:
    """The page statement's rows (the job's columns, then the event's) as a page."""
    if not rows:
        return None
    log = _log_of(job_id, rows[0])
    if rows[0][4] is None:  # the job, without an event past the cursor
        return log, Page([], has_more=False)
    event_key = log.event_key
    events = [
        Event(
            event_key,
            seq,
            created_at,
            _LEVELS[level],
            _TYPES[kind],
            message,
            orjson.loads(data) if data else {},
        )
        for *_job, seq, created_at, level, kind, message, data in rows[:limit]
    ]
    return log, Page(events, has_more=len(rows) > limit)


async def read_events_async(
    pool: AsyncConnectionPool[Any], job_id: str, *, before_seq: int | None, limit: int
) -> EventsRead:
    """`read_events` on PostgreSQL through an async pool of autocommit connections: one
    statement is a consistent snapshot by itself, so no BEGIN or COMMIT goes with it."""
    params = _page_params(job_id, before_seq, limit)
    return _page_of(job_id, await _fetch_async(pool, _PAGE_LATERAL_SQL, params), limit)


async def read_events_since_async(
    pool: AsyncConnectionPool[Any], job_id: str, *, after_seq: int, limit: int
) -> EventsRead:
    """`read_events_since` (a live feed's read) as `read_events_async` reads a page."""
    params = {"job_id": job_id, "cursor": after_seq, "fetch": limit + 1}
    return _page_of(job_id, await _fetch_async(pool, _SINCE_LATERAL_SQL, params), limit)


async def _fetch_async(
    pool: AsyncConnectionPool[Any], sql: str, params: dict[str, Any]
) -> list[tuple[Any, ...]]:
    # getconn/putconn, not `pool.connection()`: that one also enters the connection's own
    # context, whose exit is a COMMIT call (a no-op in autocommit, but through the
    # connection's lock and wait loop): about 5 µs, 2 to 3% of a page's CPU.
    conn = await pool.getconn()
    try:
        cursor = await conn.execute(sql, params)
        rows: list[tuple[Any, ...]] = await cursor.fetchall()
        return rows
    except psycopg.OperationalError as exc:
        # The server dropped it (a restart, say), and likely the others with it: this
        # one is closed so the pool lets it go, the idle ones are tested and replaced,
        # and the next page is served. The pool has no pre-ping: a round trip a page.
        await conn.close()
        await pool.check()
        raise StoreUnavailable("The database is unavailable; retry shortly.") from exc
    finally:
        # Back to the pool, which discards it if it is closed or mid-statement (a page
        # whose client left while it was read).
        await pool.putconn(conn)


@dataclass(frozen=True)
class _PlainSqlite:
    """A statement as plain SQL for a plain sqlite3 connection, and its parameters' order."""

    sql: str
    order: tuple[str, ...]
    fixed: dict[str, Any]  # the values SQLAlchemy bound itself (the OFFSET)

    @classmethod
    def of(cls, statement: Select[Any]) -> _PlainSqlite:
        compiled = statement.compile(dialect=sqlite_dialect())
        fixed = {k: v for k, v in compiled.params.items() if v is not None}
        return cls(str(compiled), tuple(compiled.positiontup or ()), fixed)

    def rows(self, conn: sqlite3.Connection, params: dict[str, Any]) -> list[Any]:
        given = self.fixed | params
        return conn.execute(self.sql, [given[name] for name in self.order]).fetchall()


_PAGE_JOIN_PLAIN = _PlainSqlite.of(_PAGE_JOIN)
_SINCE_JOIN_PLAIN = _PlainSqlite.of(_SINCE_JOIN)


def read_events_sqlite(
    conn: sqlite3.Connection, job_id: str, *, before_seq: int | None, limit: int
) -> EventsRead:
    """`read_events` on SQLite through a plain sqlite3 connection in autocommit mode: one
    statement reads a snapshot by itself (WAL), and skipping SQLAlchemy's connection,
    transaction and result layers halves the CPU a page takes."""
    rows = _PAGE_JOIN_PLAIN.rows(conn, _page_params(job_id, before_seq, limit))
    return _page_of(job_id, rows, limit)


def read_events_since_sqlite(
    conn: sqlite3.Connection, job_id: str, *, after_seq: int, limit: int
) -> EventsRead:
    """`read_events_since` as `read_events_sqlite` reads a page."""
    params = {"job_id": job_id, "cursor": after_seq, "fetch": limit + 1}
    return _page_of(job_id, _SINCE_JOIN_PLAIN.rows(conn, params), limit)


class EventQueries:
    _conn: Connection
    appended: set[str]
    appended_count: int
    reported: dict[str, list[Event]]
    unreported: set[str]
    notify: bool
    # Rows of reports' events not yet inserted: a transaction of many reports (the
    # report writer's) inserts all their events in one statement as it ends
    # (`flush_events`), not one statement a report; any read of events in the same
    # transaction flushes them first.
    _deferred_rows: list[tuple[Any, ...]] | None = None

    def append_events(self, job_id: str, drafts: Sequence[EventDraft], now: int) -> list[Event]:
        """One statement for the whole batch. Sequence numbers are reserved under the job
        row's lock, so concurrent appenders to one job never collide and every reader
        sees a gap-free sequence."""
        if not drafts:
            return []
        reserve = _RESERVE_NOTIFY if self.notify else _RESERVE
        pk, last, event_key = self._conn.execute(
            reserve, {"job_id": job_id, "count": len(drafts)}
        ).one()[:3]
        events, rows = self._numbered(job_id, pk, last, event_key, drafts, now)
        self._write_rows(rows)
        self.unreported.add(job_id)
        return events

    def _numbered(
        self,
        job_id: str,
        pk: int,
        last: int,
        event_key: str,
        drafts: Sequence[EventDraft],
        now: int,
    ) -> tuple[list[Event], list[tuple[Any, ...]]]:
        """`drafts` as the job's events numbered up to `last` (reserved), and their rows."""
        self.appended.add(job_id)
        self.appended_count += len(drafts)
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
        return events, rows

    def _write_rows(self, rows: list[tuple[Any, ...]]) -> None:
        if self._conn.dialect.name == "postgresql" and len(rows) > COPY_FROM_ROWS:
            self._copy_rows(rows)
        else:
            self._conn.execute(
                _INSERT, [dict(zip(_INSERT_COLUMNS, row, strict=True)) for row in rows]
            )

    def committed(self) -> Appended:
        """What this transaction appended, for the store's listeners once it committed."""
        reported = {j: e for j, e in self.reported.items() if j not in self.unreported}
        return Appended(frozenset(self.appended), reported)

    def flush_events(self) -> None:
        """Insert the reports' events deferred so far (see `_deferred_rows`)."""
        rows, self._deferred_rows = self._deferred_rows, None
        if rows:
            self._write_rows(rows)

    def _copy_rows(self, rows: list[tuple[Any, ...]]) -> None:
        """PostgreSQL's COPY: more than twice the rate of a multi-row INSERT for a big
        batch, but two round trips (the COPY, then its data) where a small batch's
        INSERT takes one: a worker's report (a few events every 0.5 s) inserts."""
        driver = self._conn.connection.driver_connection
        assert driver is not None
        columns = ", ".join(_INSERT_COLUMNS)
        with driver.cursor() as cursor:
            with cursor.copy(f"COPY {job_events.name} ({columns}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)

    def record_event_batch(
        self,
        job_id: str,
        worker_id: str,
        now: int,
        *,
        batch: int,
        reported_step: int,
        drafts: Sequence[EventDraft],
    ) -> list[Event] | None:
        """The job's row first, as a compare-and-set on the holder and the batch number:
        only if it wins (and then holds the row until commit) are the events appended.
        With events, the same statement reserves their sequence numbers (and notifies,
        on PostgreSQL): one round trip for the row where two were, for every report."""
        cas = update(jobs).where(held_by(job_id, worker_id), jobs.c.worker_batch < batch)
        held = {"worker_batch": batch, "reported_step": reported_step}
        held |= {"heartbeat_at": now, "updated_at": now}
        if not drafts:
            return [] if self._conn.execute(cas.values(held)).rowcount == 1 else None
        returning: list[ColumnElement[Any]] = [jobs.c.pk, jobs.c.last_event_seq, jobs.c.event_key]
        if self.notify:
            returning.append(func.pg_notify(EVENTS_CHANNEL, jobs.c.id))
        won = self._conn.execute(
            cas.values({**held, "last_event_seq": jobs.c.last_event_seq + len(drafts)}).returning(
                *returning
            )
        ).one_or_none()
        if won is None:
            return None
        events, rows = self._numbered(job_id, won[0], won[1], won[2], drafts, now)
        if self._deferred_rows is None:
            self._deferred_rows = []
        self._deferred_rows.extend(rows)
        self.reported.setdefault(job_id, []).extend(events)
        return events

    def event_log(self, job_id: str, project_id: str | None = None) -> EventLog | None:
        row = self._conn.execute(_LOG, {"job_id": job_id}).one_or_none()
        if row is None or (project_id is not None and row.project_id != project_id):
            return None
        return _log_of(job_id, row)

    def read_events(self, job_id: str, *, before_seq: int | None, limit: int) -> EventsRead:
        self.flush_events()
        statement = _PAGE_LATERAL if self._conn.dialect.name == "postgresql" else _PAGE_JOIN
        rows = self._conn.execute(statement, _page_params(job_id, before_seq, limit)).all()
        return _page_of(job_id, rows, limit)

    def read_events_since(self, job_id: str, *, after_seq: int, limit: int) -> EventsRead:
        self.flush_events()
        statement = _SINCE_LATERAL if self._conn.dialect.name == "postgresql" else _SINCE_JOIN
        params = {"job_id": job_id, "cursor": after_seq, "fetch": limit + 1}
        return _page_of(job_id, self._conn.execute(statement, params).all(), limit)

    def metrics_data(self, job_id: str) -> list[dict[str, Any]]:
        self.flush_events()
        rows = self._conn.execute(
            select(job_events.c.data)
            .where(
                job_events.c.job_pk == job_pk(job_id),
                job_events.c.type == EventType.METRICS.value,
            )
            .order_by(job_events.c.seq)
        ).scalars()
        return [orjson.loads(data) if data else {} for data in rows]

    def metrics_runs(
        self, job_id: str, *, through_seq: int, run_events: int
    ) -> Iterator[list[dict[str, Any]]]:
        """The `data` of the job's metrics events up to `through_seq`, in runs of
        `run_events` consecutive events (by sequence number), oldest run first: one range
        read each, so a caller folds a long log into a summary run by run, without ever
        holding all of it. Within a run, in sequence order on PostgreSQL; on SQLite in the
        order its key range is scanned (sequence order in practice, not by contract)."""
        self.flush_events()
        statement = _METRICS_RUN_PG if self._conn.dialect.name == "postgresql" else _METRICS_RUN
        for first in range(1, through_seq + 1, run_events):
            last = min(through_seq, first + run_events - 1)
            joined = self._conn.execute(
                statement, {"job_id": job_id, "first": first, "last": last}
            ).scalar()
            if joined:
                yield orjson.loads(f"[{joined}]")
