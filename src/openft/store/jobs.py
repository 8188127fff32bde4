"""Fine-tuning jobs' records, and the worker's hold (lease) on a running job."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    ScalarSelect,
    and_,
    bindparam,
    insert,
    select,
    update,
)

from openft.domain.entities import (
    Control,
    Job,
    JobError,
    JobStatus,
    Lease,
    MetadataFilter,
    Method,
    Outcome,
    Page,
)
from openft.domain.status import TERMINAL, lawful
from openft.store.pages import key_of, keyset_page
from openft.store.schema import jobs, projects

_LEASE = ("worker_id", "heartbeat_at", "attempts", "worker_batch", "reported_step")
_SKIP = ("pk", "updated_at", "last_event_seq", "model_deleted_at", *_LEASE)
# A job's columns, as every query that returns a job selects them (and `to_job` reads).
JOB_FIELDS = [c for c in jobs.c if c.name not in _SKIP] + [jobs.c[name] for name in _LEASE]
S = JobStatus
# A job's status and hold: read by every worker's report, so a few columns, not the job.
_HOLD = select(jobs.c.status, *[jobs.c[name] for name in _LEASE]).where(
    jobs.c.id == bindparam("job_id")
)
# A claim moves a queued job to running; the table must allow it (checked at import).
_CLAIMED_FROM = lawful({S.QUEUED}, S.RUNNING)

# Every chat completion on a fine-tuned model looks its job up: one statement, built once
# (building a select is most of the lookup's Python time).
_JOB_OF_MODEL = select(*JOB_FIELDS).where(
    jobs.c.fine_tuned_model == bindparam("model"),
    jobs.c.project_id == bindparam("project_id"),
    jobs.c.model_deleted_at.is_(None),
)


def _method_to_json(method: Method) -> dict[str, Any]:
    return method.to_dict()  # the domain's one shape of a method


def _method_from_json(value: dict[str, Any]) -> Method:
    return Method.from_dict(value)


def _lease_of(row: Any) -> Lease | None:
    if row.worker_id is None:
        return None
    return Lease(row.worker_id, row.heartbeat_at, row.attempts, row.worker_batch, row.reported_step)


def to_job(row: Any) -> Job:
    return Job(
        id=row.id,
        project_id=row.project_id,
        model=row.model,
        training_file=row.training_file,
        validation_file=row.validation_file,
        status=JobStatus(row.status),
        created_at=row.created_at,
        method=_method_from_json(row.method),
        seed=row.seed,
        event_key=row.event_key,
        suffix=row.suffix,
        metadata=row.metadata,
        finished_at=row.finished_at,
        fine_tuned_model=row.fine_tuned_model,
        trained_tokens=row.trained_tokens,
        estimated_finish=row.estimated_finish,
        error=JobError(**row.error) if row.error else None,
        result_files=list(row.result_files),
        control=Control(row.control) if row.control else None,
        lease=_lease_of(row),
    )


def job_pk(job_id: Any) -> ScalarSelect[Any]:
    return key_of(jobs, job_id)


def held_by(job_id: str, worker_id: str) -> ColumnElement[bool]:
    """The condition every write of a worker carries in its own statement: the job is
    running and `worker_id` holds it. A separate read could be stale by the time of the
    write (a recovery, a cancel or a claim commits in between, on PostgreSQL)."""
    return and_(
        jobs.c.id == job_id,
        jobs.c.status == S.RUNNING.value,
        jobs.c.worker_id == worker_id,
    )


def _control_is(control: Control | None) -> ColumnElement[bool]:
    return jobs.c.control.is_(None) if control is None else jobs.c.control == control.value


def _status_change(to: JobStatus, now: int, error: JobError | None) -> dict[str, Any]:
    """The columns a move to `to` sets: a finished job records when, and drops any
    request its worker had not acted on."""
    values: dict[str, Any] = {"status": to.value, "control": None, "updated_at": now}
    if to in TERMINAL:
        values["finished_at"] = now
    if error is not None:
        values["error"] = asdict(error)
    return values


class JobQueries:
    _conn: Connection

    def insert_job(self, job: Job) -> None:
        values = {c.name: getattr(job, c.name) for c in JOB_FIELDS if c.name not in _LEASE}
        values.update(
            status=job.status.value,
            method=_method_to_json(job.method),
            error=asdict(job.error) if job.error else None,
            control=job.control.value if job.control else None,
            updated_at=job.created_at,
            last_event_seq=0,
        )
        self._conn.execute(insert(jobs).values(**values))

    def get_job(self, job_id: str, project_id: str | None = None) -> Job | None:
        query = select(*JOB_FIELDS).where(jobs.c.id == job_id)
        if project_id is not None:
            query = query.where(jobs.c.project_id == project_id)
        row = self._conn.execute(query).one_or_none()
        return None if row is None else to_job(row)

    def get_hold(self, job_id: str) -> tuple[JobStatus, Lease | None] | None:
        row = self._conn.execute(_HOLD, {"job_id": job_id}).one_or_none()
        return None if row is None else (JobStatus(row.status), _lease_of(row))

    def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: MetadataFilter | None
    ) -> Page[Job]:
        query = select(*JOB_FIELDS).where(jobs.c.project_id == project_id)
        if metadata is not None and metadata.pairs is None:
            query = query.where(jobs.c.metadata.is_(None))
        elif metadata is not None and metadata.pairs is not None:
            for key, value in metadata.pairs.items():
                query = query.where(jobs.c.metadata[key].as_string() == value)
        cursor = None if after is None else key_of(jobs, after)
        return keyset_page(self._conn, query, jobs.c.pk, cursor, limit, True, to_job)

    def ids_in_status(self, status: JobStatus, *, updated_before: int, limit: int) -> list[str]:
        return list(
            self._conn.execute(
                select(jobs.c.id)
                .where(jobs.c.status == status.value, jobs.c.updated_at <= updated_before)
                .order_by(jobs.c.pk)
                .limit(limit)
            ).scalars()
        )

    def _update(self, job_id: str, **values: Any) -> bool:
        statement = update(jobs).where(jobs.c.id == job_id).values(**values)
        return self._conn.execute(statement).rowcount == 1

    def move_job(
        self,
        job_id: str,
        now: int,
        *,
        expect: frozenset[JobStatus],
        to: JobStatus,
        error: JobError | None = None,
    ) -> bool:
        expected = lawful(expect, to)
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status.in_([s.value for s in expected]))
            .values(**_status_change(to, now, error))
        )
        return self._conn.execute(statement).rowcount == 1

    def set_control(
        self,
        job_id: str,
        now: int,
        *,
        expect: JobStatus,
        was: Control | None,
        control: Control | None,
    ) -> bool:
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.status == expect.value, _control_is(was))
            .values(control=control.value if control else None, updated_at=now)
        )
        return self._conn.execute(statement).rowcount == 1

    def fine_tuned_models(self, project_id: str) -> list[tuple[str, int]]:
        rows = self._conn.execute(
            select(jobs.c.fine_tuned_model, jobs.c.finished_at)
            .where(
                jobs.c.project_id == project_id,
                jobs.c.fine_tuned_model.is_not(None),
                jobs.c.model_deleted_at.is_(None),
            )
            .order_by(jobs.c.pk)
        ).all()
        return [(row.fine_tuned_model, row.finished_at or 0) for row in rows]

    def job_of_model(self, project_id: str, fine_tuned_model: str) -> Job | None:
        params = {"model": fine_tuned_model, "project_id": project_id}
        row = self._conn.execute(_JOB_OF_MODEL, params).first()
        return to_job(row) if row else None

    def delete_model(self, job_id: str, now: int) -> bool:
        statement = (
            update(jobs)
            .where(jobs.c.id == job_id, jobs.c.model_deleted_at.is_(None))
            .values(model_deleted_at=now)
        )
        return self._conn.execute(statement).rowcount == 1

    def project_name(self, project_id: str) -> str:
        return str(
            self._conn.execute(
                select(projects.c.name).where(projects.c.id == project_id)
            ).scalar_one()
        )

    # -- leases --------------------------------------------------------------------------

    def claim_next(self, worker_id: str, now: int) -> Job | None:
        """One statement. On PostgreSQL the inner select locks the row it picks with SKIP
        LOCKED, so racing claimers each take a different job without waiting; SQLite
        renders no FOR UPDATE, and its write transaction (BEGIN IMMEDIATE) already lets
        only one claimer in."""
        oldest = (
            select(jobs.c.pk)
            .where(jobs.c.status.in_([s.value for s in _CLAIMED_FROM]))
            .order_by(jobs.c.pk)
            .limit(1)
            .with_for_update(skip_locked=True)
            .scalar_subquery()
        )
        job_id = self._conn.execute(
            update(jobs)
            .where(jobs.c.pk == oldest, jobs.c.status.in_([s.value for s in _CLAIMED_FROM]))
            .values(
                status=S.RUNNING.value,
                worker_id=worker_id,
                heartbeat_at=now,
                attempts=jobs.c.attempts + 1,
                worker_batch=0,
                updated_at=now,
            )
            .returning(jobs.c.id)
        ).scalar_one_or_none()
        return None if job_id is None else self.get_job(job_id)

    def set_method(self, job_id: str, now: int, method: Method) -> None:
        self._update(job_id, method=_method_to_json(method), updated_at=now)

    def renew_lease(
        self,
        job_id: str,
        worker_id: str,
        now: int,
        *,
        trained_tokens: int | None = None,
        estimated_finish: int | None = None,
    ) -> bool:
        values: dict[str, Any] = {"heartbeat_at": now, "updated_at": now}
        if trained_tokens is not None:
            values["trained_tokens"] = trained_tokens
        if estimated_finish is not None:
            values["estimated_finish"] = estimated_finish
        statement = update(jobs).where(held_by(job_id, worker_id)).values(**values)
        return self._conn.execute(statement).rowcount == 1

    def end_lease(
        self, job_id: str, worker_id: str, now: int, outcome: Outcome, *, as_read: Job | None = None
    ) -> bool:
        lawful({S.RUNNING}, outcome.status)
        values = _status_change(outcome.status, now, outcome.error)
        values.update(worker_id=None, heartbeat_at=None, estimated_finish=None)
        if outcome.fine_tuned_model is not None:
            values["fine_tuned_model"] = outcome.fine_tuned_model
        if outcome.trained_tokens is not None:
            values["trained_tokens"] = outcome.trained_tokens
        if outcome.result_files:
            values["result_files"] = list(outcome.result_files)
        statement = update(jobs).where(held_by(job_id, worker_id)).values(**values)
        if as_read is not None:  # what the caller decided on must still be so
            assert as_read.lease is not None
            statement = statement.where(
                jobs.c.heartbeat_at == as_read.lease.heartbeat_at, _control_is(as_read.control)
            )
        return self._conn.execute(statement).rowcount == 1

    def running_ids_held_by(self, holder_prefix: str) -> list[str]:
        return list(
            self._conn.execute(
                select(jobs.c.id).where(
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.worker_id.startswith(holder_prefix, autoescape=True),
                )
            ).scalars()
        )

    def stale_running_ids(self, heartbeat_before: int) -> list[str]:
        return list(
            self._conn.execute(
                select(jobs.c.id).where(
                    jobs.c.status == JobStatus.RUNNING.value,
                    jobs.c.heartbeat_at < heartbeat_before,
                )
            ).scalars()
        )
