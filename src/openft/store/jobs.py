"""Fine-tuning jobs' records."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, NamedTuple

from sqlalchemy import Connection, bindparam, insert, select, update

from openft.domain.entities import (
    Hyperparameters,
    Job,
    JobError,
    JobStatus,
    Lease,
    Method,
    MethodType,
    Page,
)
from openft.store.pages import keyset_page
from openft.store.schema import jobs, projects

_LEASE = ("worker_id", "heartbeat_at", "attempts", "worker_batch", "reported_step")
_FIELDS = [c for c in jobs.c if c.name not in ("pk", "updated_at", "last_event_seq", *_LEASE)] + [
    jobs.c[name] for name in _LEASE
]
# `None` as a metadata filter selects the jobs created without metadata (`metadata=null`).
MetadataFilter = dict[str, str] | None


def method_to_json(method: Method) -> dict[str, Any]:
    return {"type": method.type.value, "hyperparameters": asdict(method.hyperparameters)}


def _method_from_json(value: dict[str, Any]) -> Method:
    return Method(MethodType(value["type"]), Hyperparameters(**value["hyperparameters"]))


def _to_job(row: Any) -> Job:
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
        control=row.control,
        lease=(
            Lease(
                row.worker_id, row.heartbeat_at, row.attempts, row.worker_batch, row.reported_step
            )
            if row.worker_id is not None
            else None
        ),
    )


def insert_job(conn: Connection, job: Job) -> int:
    values = {c.name: getattr(job, c.name) for c in _FIELDS if c.name not in _LEASE}
    values.update(
        status=job.status.value,
        method=method_to_json(job.method),
        error=asdict(job.error) if job.error else None,
        updated_at=job.created_at,
        last_event_seq=0,
    )
    return int(conn.execute(insert(jobs).values(**values).returning(jobs.c.pk)).scalar_one())


def get_job(conn: Connection, job_id: str, project_id: str | None = None) -> tuple[int, Job] | None:
    """The job and its internal key; restricted to `project_id` when given."""
    query = select(*_FIELDS, jobs.c.pk).where(jobs.c.id == job_id)
    if project_id is not None:
        query = query.where(jobs.c.project_id == project_id)
    row = conn.execute(query).one_or_none()
    return None if row is None else (row.pk, _to_job(row))


class JobRef(NamedTuple):
    """What reading a job's events needs, without loading the whole job."""

    pk: int
    event_key: str
    last_event_seq: int


# Built once: every events page starts with this lookup (see store/events.py).
_REF = select(jobs.c.pk, jobs.c.event_key, jobs.c.last_event_seq, jobs.c.project_id).where(
    jobs.c.id == bindparam("job_id")
)


def job_ref(conn: Connection, job_id: str, project_id: str | None = None) -> JobRef | None:
    """The job's event-log reference; None if unknown or (with `project_id`) not the project's."""
    row = conn.execute(_REF, {"job_id": job_id}).one_or_none()
    if row is None or (project_id is not None and row.project_id != project_id):
        return None
    return JobRef(row.pk, row.event_key, row.last_event_seq)


def list_jobs(
    conn: Connection,
    project_id: str,
    *,
    after_pk: int | None,
    limit: int,
    metadata: MetadataFilter | bool = False,
) -> Page[Job]:
    """Newest first. `metadata` False: no filter; None: jobs without metadata; a dict:
    jobs whose metadata holds every given key with the given value."""
    query = select(*_FIELDS, jobs.c.pk).where(jobs.c.project_id == project_id)
    if metadata is None:
        query = query.where(jobs.c.metadata.is_(None))
    elif isinstance(metadata, dict):
        for key, value in metadata.items():
            query = query.where(jobs.c.metadata[key].as_string() == value)
    return keyset_page(conn, query, jobs.c.pk, after_pk, limit, True, _to_job)


def update_job(
    conn: Connection,
    pk: int,
    now: int,
    *,
    expect: frozenset[JobStatus] | None = None,
    **fields: Any,
) -> bool:
    """Update a job; with `expect`, only while its status is one of those (compare-and-set).

    Returns whether the row was updated, so racing callers learn who won.
    """
    if isinstance(fields.get("status"), JobStatus):
        fields["status"] = fields["status"].value
    if isinstance(fields.get("error"), JobError):
        fields["error"] = asdict(fields["error"])
    statement = update(jobs).where(jobs.c.pk == pk).values(updated_at=now, **fields)
    if expect is not None:
        statement = statement.where(jobs.c.status.in_([s.value for s in expect]))
    return conn.execute(statement).rowcount == 1


def ids_in_status(
    conn: Connection, status: JobStatus, *, updated_before: int, limit: int
) -> list[str]:
    """Ids of jobs in `status` untouched since `updated_before`, oldest first."""
    return list(
        conn.execute(
            select(jobs.c.id)
            .where(jobs.c.status == status.value, jobs.c.updated_at <= updated_before)
            .order_by(jobs.c.pk)
            .limit(limit)
        ).scalars()
    )


def claim_next(conn: Connection, worker_id: str, now: int) -> str | None:
    """Take the oldest queued job for `worker_id` in one statement; its id, or None.

    On PostgreSQL the inner select locks the row it picks with SKIP LOCKED, so racing
    claimers each take a different job without waiting; SQLite renders no FOR UPDATE,
    and its write transaction (BEGIN IMMEDIATE) already lets only one claimer in.
    """
    oldest = (
        select(jobs.c.pk)
        .where(jobs.c.status == JobStatus.QUEUED.value)
        .order_by(jobs.c.pk)
        .limit(1)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    return conn.execute(
        update(jobs)
        .where(jobs.c.pk == oldest, jobs.c.status == JobStatus.QUEUED.value)
        .values(
            status=JobStatus.RUNNING.value,
            worker_id=worker_id,
            heartbeat_at=now,
            attempts=jobs.c.attempts + 1,
            worker_batch=0,
            updated_at=now,
        )
        .returning(jobs.c.id)
    ).scalar_one_or_none()


def release_lease(conn: Connection, pk: int, now: int, **fields: Any) -> None:
    """Clear the worker's hold on a job while setting `fields` (its next status)."""
    update_job(conn, pk, now, worker_id=None, heartbeat_at=None, **fields)


def stale_running_ids(conn: Connection, heartbeat_before: int) -> list[str]:
    """Running jobs whose worker has not been heard from since `heartbeat_before`."""
    return list(
        conn.execute(
            select(jobs.c.id).where(
                jobs.c.status == JobStatus.RUNNING.value, jobs.c.heartbeat_at < heartbeat_before
            )
        ).scalars()
    )


def project_name(conn: Connection, project_id: str) -> str:
    return str(
        conn.execute(select(projects.c.name).where(projects.c.id == project_id)).scalar_one()
    )
