"""Checkpoint permissions (admin keys only): share a project's fine-tuned model, or one of
its checkpoints, with other projects of the organisation."""

from __future__ import annotations

from openft.domain.entities import CheckpointPermission, Job, Page
from openft.domain.errors import InvalidCursor, InvalidRequest, NotFound
from openft.domain.ids import new_permission_id
from openft.domain.naming import split_checkpoint_model
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store, Transaction

DEFAULT_LIMIT = 10
MAX_LIMIT = 1000
PATH_PARAM = "fine_tuned_model_checkpoint"


def _owner(tx: Transaction, model: str) -> Job:
    """The job that made `model`: a fine-tuned model's name or a checkpoint's
    (`ft:…:ckpt-step-N`), whatever project owns it; a 404 when none does."""
    checkpoint_of = split_checkpoint_model(model)
    job = tx.owner_job_of_model(checkpoint_of[0] if checkpoint_of else model)
    if job is not None and (
        checkpoint_of is None or tx.checkpoint_at_step(job.id, checkpoint_of[1]) is not None
    ):
        return job
    raise NotFound(
        f"No fine-tuned model or checkpoint {model!r}.", param=PATH_PARAM, code="model_not_found"
    )


class PermissionService:
    def __init__(self, db: Store, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    def create(self, model: str, project_ids: list[str]) -> list[CheckpointPermission]:
        """Grant `model` to each project (in the order given, once each); a project that
        already holds a permission on it gets that one back, not a second."""
        wanted = list(dict.fromkeys(project_ids))
        if not wanted:
            raise InvalidRequest("Name at least one project id.", param="project_ids")
        now = self._clock()
        with self._db.write() as tx:
            job = _owner(tx, model)
            unknown = [p for p in wanted if p not in tx.existing_projects(wanted)]
            if unknown:
                raise InvalidRequest(
                    f"No project {unknown[0]!r}.", param="project_ids", code="project_not_found"
                )
            if job.project_id in wanted:
                raise InvalidRequest(
                    f"Project {job.project_id!r} owns {model!r}: grant it to other projects.",
                    param="project_ids",
                )
            granted = []
            for project_id in wanted:
                permission = tx.find_permission(model, project_id)
                if permission is None:
                    permission = CheckpointPermission(new_permission_id(), model, project_id, now)
                    tx.insert_permission(permission, job.id)
                granted.append(permission)
        return granted

    def list(
        self,
        model: str,
        *,
        project_id: str | None = None,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
        descending: bool = True,
    ) -> Page[CheckpointPermission]:
        """`after` a permission id of this model: the ones past it in `order`."""
        with self._db.read() as tx:
            _owner(tx, model)
            if after is not None and not tx.has_permission(model, after):
                raise InvalidCursor(
                    f"Invalid 'after': {after!r} is not a permission on {model!r}.", param="after"
                )
            return tx.list_permissions(
                model, project_id=project_id, after=after, limit=limit, descending=descending
            )

    def delete(self, model: str, permission_id: str) -> None:
        """Withdraw a permission: the project's next request on the model is a 404."""
        with self._db.write() as tx:
            _owner(tx, model)
            if not tx.delete_permission(model, permission_id):
                raise NotFound(
                    f"No permission {permission_id!r} on {model!r}.", param="permission_id"
                )
