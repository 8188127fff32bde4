"""Checkpoints of fine-tuning jobs (their archives live in the artifact directory)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, insert, select

from openft.domain.entities import Checkpoint, Page
from openft.store.pages import keyset_page
from openft.store.schema import job_checkpoints, jobs

_FIELDS = (
    job_checkpoints.c.id,
    jobs.c.id.label("job_id"),
    job_checkpoints.c.step_number,
    job_checkpoints.c.created_at,
    job_checkpoints.c.metrics,
    job_checkpoints.c.fine_tuned_model_checkpoint,
)


def _to_checkpoint(row: Any) -> Checkpoint:
    return Checkpoint(
        id=row.id,
        job_id=row.job_id,
        step_number=row.step_number,
        created_at=row.created_at,
        metrics=dict(row.metrics),
        fine_tuned_model_checkpoint=row.fine_tuned_model_checkpoint,
    )


def insert_checkpoint(conn: Connection, job_pk: int, checkpoint: Checkpoint) -> None:
    conn.execute(
        insert(job_checkpoints).values(
            id=checkpoint.id,
            job_pk=job_pk,
            step_number=checkpoint.step_number,
            created_at=checkpoint.created_at,
            metrics=checkpoint.metrics,
            fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
        )
    )


def _query(job_pk: int) -> Any:
    return (
        select(*_FIELDS, job_checkpoints.c.pk)
        .join(jobs, jobs.c.pk == job_checkpoints.c.job_pk)
        .where(job_checkpoints.c.job_pk == job_pk)
    )


def list_checkpoints(
    conn: Connection, job_pk: int, *, after_pk: int | None, limit: int
) -> Page[Checkpoint]:
    """Newest first (checkpoints are made in step order)."""
    return keyset_page(
        conn, _query(job_pk), job_checkpoints.c.pk, after_pk, limit, True, _to_checkpoint
    )


def checkpoint_pk(conn: Connection, job_pk: int, checkpoint_id: str) -> int | None:
    return conn.execute(
        select(job_checkpoints.c.pk).where(
            job_checkpoints.c.job_pk == job_pk, job_checkpoints.c.id == checkpoint_id
        )
    ).scalar_one_or_none()


def latest_checkpoint(conn: Connection, job_pk: int) -> Checkpoint | None:
    page = list_checkpoints(conn, job_pk, after_pk=None, limit=1)
    return page.items[0] if page.items else None


def at_step(conn: Connection, job_pk: int, step: int) -> Checkpoint | None:
    row = conn.execute(_query(job_pk).where(job_checkpoints.c.step_number == step)).one_or_none()
    return None if row is None else _to_checkpoint(row)
