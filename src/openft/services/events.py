"""A job's event log: appended in batches, read newest first through keyset pages."""

from __future__ import annotations

from collections.abc import Sequence

from openft.domain.entities import Event, EventDraft, EventLog, Page, Principal
from openft.domain.errors import InvalidCursor, NotFound
from openft.domain.ids import parse_event_id
from openft.services.clock import Clock, system_clock
from openft.store.interface import Store

DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def job_not_found(job_id: str) -> NotFound:
    return NotFound(
        f"Could not find fine-tuning job: {job_id}",
        param="fine_tuning_job_id",
        code="fine_tuning_job_not_found",
    )


class EventService:
    def __init__(self, db: Store, clock: Clock = system_clock) -> None:
        self._db = db
        self._clock = clock

    def append(self, job_id: str, drafts: Sequence[EventDraft]) -> list[Event]:
        """Append a batch to a job's log in one transaction (the worker's path)."""
        with self._db.write() as tx:
            if tx.event_log(job_id) is None:
                raise job_not_found(job_id)
            return tx.append_events(job_id, drafts, self._clock())

    def list(
        self,
        principal: Principal,
        job_id: str,
        *,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[Event]:
        """Events newest first; `after` an event id of this job: only those older than it."""
        parsed = parse_event_id(after) if after is not None else None
        with self._db.read() as tx:
            found = tx.read_events(job_id, before_seq=parsed[1] if parsed else None, limit=limit)
        return _checked(found, principal, job_id, after)

    async def list_async(
        self,
        principal: Principal,
        job_id: str,
        *,
        after: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> Page[Event]:
        """`list` for the API's event loop (the store reads there when it can)."""
        parsed = parse_event_id(after) if after is not None else None
        found = await self._db.read_events_async(
            job_id, before_seq=parsed[1] if parsed else None, limit=limit
        )
        return _checked(found, principal, job_id, after)


def _checked(
    found: tuple[EventLog, Page[Event]] | None,
    principal: Principal,
    job_id: str,
    after: str | None,
) -> Page[Event]:
    """The page `list` read, once the job is the principal's and the cursor is one of its
    events. The job's log and the page come from one statement: the cursor is checked
    against what came back, and the page thrown away if the cursor is not this job's."""
    if found is None or found[0].project_id != principal.project_id:
        raise job_not_found(job_id)
    log, page = found
    if after is not None and log.seq_of(after) is None:
        raise InvalidCursor(
            f"Invalid 'after': {after!r} is not an event of fine-tuning job {job_id}.",
            param="after",
        )
    return page
