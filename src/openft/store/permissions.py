"""Checkpoint permissions: which projects may use another project's fine-tuned model or
checkpoint, named by its model name."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import Connection, delete, exists, insert, or_, select

from openft.domain.entities import CheckpointPermission, Job, Page
from openft.store.jobs import JOB_FIELDS, job_pk, to_job
from openft.store.pages import key_of, keyset_page
from openft.store.schema import checkpoint_permissions, job_checkpoints, jobs, projects

_P = checkpoint_permissions
_FIELDS = (_P.c.id, _P.c.model, _P.c.project_id, _P.c.created_at)


def _to_permission(row: Any) -> CheckpointPermission:
    return CheckpointPermission(row.id, row.model, row.project_id, row.created_at)


class PermissionQueries:
    _conn: Connection

    def owner_job_of_model(self, fine_tuned_model: str) -> Job | None:
        row = self._conn.execute(
            select(*JOB_FIELDS).where(
                jobs.c.fine_tuned_model == fine_tuned_model, jobs.c.model_deleted_at.is_(None)
            )
        ).first()
        return to_job(row) if row else None

    def existing_projects(self, project_ids: Iterable[str]) -> set[str]:
        wanted = list(project_ids)
        return set(
            self._conn.execute(select(projects.c.id).where(projects.c.id.in_(wanted))).scalars()
        )

    def find_permission(self, model: str, project_id: str) -> CheckpointPermission | None:
        row = self._conn.execute(
            select(*_FIELDS).where(_P.c.model == model, _P.c.project_id == project_id)
        ).one_or_none()
        return None if row is None else _to_permission(row)

    def has_permission(self, model: str, permission_id: str) -> bool:
        query = select(_P.c.pk).where(_P.c.model == model, _P.c.id == permission_id)
        return self._conn.execute(query).first() is not None

    def insert_permission(self, permission: CheckpointPermission, job_id: str) -> None:
        self._conn.execute(
            insert(_P).values(
                id=permission.id,
                job_pk=job_pk(job_id),
                model=permission.model,
                project_id=permission.project_id,
                created_at=permission.created_at,
            )
        )

    def list_permissions(
        self,
        model: str,
        *,
        project_id: str | None,
        after: str | None,
        limit: int,
        descending: bool,
    ) -> Page[CheckpointPermission]:
        query = select(*_FIELDS).where(_P.c.model == model)
        if project_id is not None:
            query = query.where(_P.c.project_id == project_id)
        cursor = None if after is None else key_of(_P, after)
        return keyset_page(self._conn, query, _P.c.pk, cursor, limit, descending, _to_permission)

    def delete_permission(self, model: str, permission_id: str) -> bool:
        statement = delete(_P).where(_P.c.model == model, _P.c.id == permission_id)
        return self._conn.execute(statement).rowcount == 1

    def _granted(self, project_id: str) -> Any:
        """The permissions of `project_id` whose model still exists: the job's model not
        deleted and, for a checkpoint's model, the checkpoint not pruned."""
        return (
            select(_P.c.model, jobs.c.finished_at, jobs.c.project_id.label("owner"), jobs.c.pk)
            .join(jobs, jobs.c.pk == _P.c.job_pk)
            .where(
                _P.c.project_id == project_id,
                jobs.c.model_deleted_at.is_(None),
                or_(
                    _P.c.model == jobs.c.fine_tuned_model,
                    exists().where(
                        job_checkpoints.c.job_pk == jobs.c.pk,
                        job_checkpoints.c.fine_tuned_model_checkpoint == _P.c.model,
                    ),
                ),
            )
        )

    def shared_models(self, project_id: str) -> list[tuple[str, int, str]]:
        rows = self._conn.execute(self._granted(project_id).order_by(_P.c.pk)).all()
        return [(row.model, row.finished_at or 0, row.owner) for row in rows]

    def shared_job_of_model(self, project_id: str, model: str) -> Job | None:
        granted = self._granted(project_id).where(_P.c.model == model).subquery()
        row = self._conn.execute(
            select(*JOB_FIELDS).where(jobs.c.pk.in_(select(granted.c.pk)))
        ).first()
        return to_job(row) if row else None
