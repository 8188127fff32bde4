"""The public list of a job's checkpoints."""

from __future__ import annotations

from openft.domain.entities import Checkpoint, Page, Principal
from openft.domain.errors import InvalidCursor
from openft.services.events import job_not_found
from openft.store import checkpoints as store
from openft.store import jobs as jobs_store
from openft.store.database import Database

DEFAULT_LIMIT = 10


class CheckpointService:
    def __init__(self, db: Database) -> None:
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
        with self._db.read() as conn:
            ref = jobs_store.job_ref(conn, job_id, principal.project_id)
            if ref is None:
                raise job_not_found(job_id)
            after_pk = None
            if after is not None:
                after_pk = store.checkpoint_pk(conn, ref.pk, after)
                if after_pk is None:
                    raise InvalidCursor(
                        f"Invalid 'after': {after!r} is not a checkpoint of "
                        f"fine-tuning job {job_id}.",
                        param="after",
                    )
            return store.list_checkpoints(conn, ref.pk, after_pk=after_pk, limit=limit)
