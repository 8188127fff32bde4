"""The public list of a job's checkpoints."""

from __future__ import annotations

from openft.domain.entities import Checkpoint, Page, Principal
from openft.domain.errors import InvalidCursor
from openft.services.events import job_not_found
from openft.store.interface import Store

DEFAULT_LIMIT = 10


class CheckpointService:
    def __init__(self, db: Store) -> None:
        self._db = db

    def list(
        self,
        principal: Principal,
        job_id: str,
        *,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[Checkpoint]:
        """Newest first; `after` a checkpoint id of this job: only older ones."""
        with self._db.read() as tx:
            if tx.get_job(job_id, principal.project_id) is None:
                raise job_not_found(job_id)
            if after is not None and tx.get_checkpoint(job_id, after) is None:
                raise InvalidCursor(
                    f"Invalid 'after': {after!r} is not a checkpoint of fine-tuning job {job_id}.",
                    param="after",
                )
            return tx.list_checkpoints(job_id, after=after, limit=limit)
