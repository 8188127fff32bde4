"""Checkpoints of fine-tuning jobs (their archives are blobs)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import BindParameter, Connection, Select, bindparam, delete, insert, select

from openft.domain.entities import Checkpoint, Page
from openft.store.jobs import job_pk
from openft.store.pages import key_of, keyset_page
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


def _of_job(job_id: str | BindParameter[str]) -> Select[Any]:
    return (
        select(*_FIELDS)
        .join(jobs, jobs.c.pk == job_checkpoints.c.job_pk)
        .where(jobs.c.id == job_id)
    )


# A checkpoint's model (`ft:…:ckpt-step-N`) is looked up by every chat completion on it:
# the statement is built once.
_AT_STEP = _of_job(bindparam("job_id")).where(job_checkpoints.c.step_number == bindparam("step"))


class CheckpointQueries:
    _conn: Connection

    def insert_checkpoint(self, checkpoint: Checkpoint) -> None:
        self._conn.execute(
            insert(job_checkpoints).values(
                id=checkpoint.id,
                job_pk=job_pk(checkpoint.job_id),
                step_number=checkpoint.step_number,
                created_at=checkpoint.created_at,
                metrics=checkpoint.metrics,
                fine_tuned_model_checkpoint=checkpoint.fine_tuned_model_checkpoint,
            )
        )

    def _one(self, query: Select[Any], params: dict[str, Any] | None = None) -> Checkpoint | None:
        row = self._conn.execute(query, params).one_or_none()
        return None if row is None else _to_checkpoint(row)

    def get_checkpoint(self, job_id: str, checkpoint_id: str) -> Checkpoint | None:
        return self._one(_of_job(job_id).where(job_checkpoints.c.id == checkpoint_id))

    def checkpoint_at_step(self, job_id: str, step: int) -> Checkpoint | None:
        return self._one(_AT_STEP, {"job_id": job_id, "step": step})

    def latest_checkpoint(self, job_id: str) -> Checkpoint | None:
        page = self.list_checkpoints(job_id, after=None, limit=1)
        return page.items[0] if page.items else None

    def prune_checkpoints(self, job_id: str, keep: int, best_by: str | None = None) -> list[str]:
        newest_first = self._conn.execute(
            select(job_checkpoints.c.id, job_checkpoints.c.metrics)
            .where(job_checkpoints.c.job_pk == job_pk(job_id))
            .order_by(job_checkpoints.c.step_number.desc())
        ).all()
        if best_by is None:
            kept = {row.id for row in newest_first[:keep]}
        else:
            # A job has a handful of checkpoints: ranked here, the same on every database.
            def rank(row: Any) -> tuple[bool, float]:
                value = row.metrics.get(best_by)
                return value is None, -float(value or 0.0)

            best = sorted(newest_first, key=rank)[:keep]  # stable: newest first among equals
            kept = {row.id for row in best} | {row.id for row in newest_first[:1]}
        older = [row.id for row in newest_first if row.id not in kept]
        if older:
            self._conn.execute(delete(job_checkpoints).where(job_checkpoints.c.id.in_(older)))
        return older

    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> Page[Checkpoint]:
        cursor = None if after is None else key_of(job_checkpoints, after)
        return keyset_page(
            self._conn, _of_job(job_id), job_checkpoints.c.pk, cursor, limit, True, _to_checkpoint
        )
