"""Fine-tuning jobs: create, validate, list, retrieve, cancel, pause and resume.

Every status change is a compare-and-set on the job row, written in the same
transaction as the events that announce it, so racing API replicas and workers
never both win and never leave a change without its event (or an event without it).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection

from openft.domain import messages
from openft.domain.entities import EventDraft, FileFormat, Job, JobError, JobStatus, Page, Principal
from openft.domain.errors import InvalidCursor, InvalidFile, InvalidRequest
from openft.domain.ids import new_event_key, new_job_id
from openft.domain.methods import resolve_method
from openft.domain.status import TERMINAL, ensure_move, refusal
from openft.domain.validation import FileValidator
from openft.services.clock import Clock, system_clock
from openft.services.events import job_not_found
from openft.services.files import FINE_TUNE, FileService
from openft.services.models import ModelService
from openft.store import events as events_store
from openft.store import files as files_store
from openft.store import jobs as store
from openft.store.database import Database
from openft.store.jobs import MetadataFilter

S = JobStatus
READ_CHUNK = 1 << 20
MAX_SEED = 2_147_483_647
# A control operation's decision: the job fields to set and the events that announce it.
Decided = tuple[dict[str, Any], list[EventDraft]]
Decision = Callable[[Job], Decided | None]


@dataclass(frozen=True, slots=True)
class NewJob:
    """A create request, as the API received it."""

    model: str
    training_file: str
    validation_file: str | None = None
    hyperparameters: dict[str, Any] | None = None
    method: dict[str, Any] | None = None
    suffix: str | None = None
    seed: int | None = None
    metadata: dict[str, str] | None = None
    integrations: list[Any] | None = field(default=None)


class JobService:
    def __init__(
        self,
        db: Database,
        files: FileService,
        models: ModelService,
        *,
        min_examples: int = 10,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._files = files
        self._models = models
        self._min_examples = min_examples
        self._clock = clock

    # -- reading --------------------------------------------------------------

    def get(self, principal: Principal, job_id: str) -> Job:
        with self._db.read() as conn:
            found = store.get_job(conn, job_id, principal.project_id)
        if found is None:
            raise job_not_found(job_id)
        return found[1]

    def list(
        self,
        principal: Principal,
        *,
        after: str | None = None,
        limit: int = 20,
        metadata: MetadataFilter | bool = False,
    ) -> Page[Job]:
        with self._db.read() as conn:
            after_pk = None
            if after is not None:
                ref = store.job_ref(conn, after, principal.project_id)
                if ref is None:
                    raise InvalidCursor(
                        f"No fine-tuning job {after!r} to list after.", param="after"
                    )
                after_pk = ref.pk
            return store.list_jobs(
                conn, principal.project_id, after_pk=after_pk, limit=limit, metadata=metadata
            )

    # -- creating and validating ----------------------------------------------

    def _require_file(
        self, conn: Connection, principal: Principal, file_id: str, param: str
    ) -> None:
        record = files_store.get_file(conn, principal.project_id, file_id)
        if record is None:
            raise InvalidRequest(
                f"Invalid {param}: file {file_id} does not exist.", param=param, code="invalid_file"
            )
        if record.purpose != FINE_TUNE:
            raise InvalidRequest(
                f"Invalid {param}: file {file_id} has purpose {record.purpose!r}, not 'fine-tune'.",
                param=param,
                code="invalid_file",
            )

    def create(self, principal: Principal, request: NewJob) -> Job:
        """Record a job in `validating_files`; `validate` later moves it on."""
        self._models.base_model(request.model)
        method = resolve_method(request.hyperparameters, request.method)
        if request.integrations:
            raise InvalidRequest(
                "Integrations are not supported by this server.", param="integrations"
            )
        now = self._clock()
        job = Job(
            id=new_job_id(),
            project_id=principal.project_id,
            model=request.model,
            training_file=request.training_file,
            validation_file=request.validation_file,
            status=S.VALIDATING_FILES,
            created_at=now,
            method=method,
            seed=request.seed if request.seed is not None else secrets.randbelow(MAX_SEED),
            event_key=new_event_key(),
            suffix=request.suffix,
            metadata=request.metadata,
        )
        with self._db.write() as conn:
            self._require_file(conn, principal, request.training_file, "training_file")
            if request.validation_file is not None:
                self._require_file(conn, principal, request.validation_file, "validation_file")
            pk = store.insert_job(conn, job)
            events_store.append_events(
                conn,
                pk,
                [
                    messages.created(job.id),
                    messages.validating(job.training_file, job.validation_file),
                ],
                now,
            )
        return job

    def _read_blocks(self, file_id: str) -> Iterator[bytes]:
        with open(self._files.path(file_id), "rb") as handle:
            while block := handle.read(READ_CHUNK):
                yield block

    def _check_file(
        self, file_id: str, expected: FileFormat, min_examples: int, param: str
    ) -> JobError | None:
        kind = param.removesuffix("_file")
        validator = FileValidator(file_id, expected)
        try:
            for block in self._read_blocks(file_id):
                validator.feed(block)
            validator.finish(min_examples)
        except FileNotFoundError:
            detail = f"File {file_id} was deleted before the job could read it."
        except InvalidFile as exc:
            detail = exc.message
        else:
            return None
        return JobError(
            code=f"invalid_{param}",
            message=f"The job failed due to an invalid {kind} file. {detail}",
            param=param,
        )

    def validate(self, job_id: str) -> Job | None:
        """Check a `validating_files` job's files against its method, then queue or fail it.

        Safe to call from any number of processes: only one compare-and-set wins.
        """
        with self._db.read() as conn:
            found = store.get_job(conn, job_id)
        if found is None or found[1].status is not S.VALIDATING_FILES:
            return None
        pk, job = found
        expected = job.method.file_format
        error = self._check_file(job.training_file, expected, self._min_examples, "training_file")
        if error is None and job.validation_file is not None:
            error = self._check_file(job.validation_file, expected, 1, "validation_file")
        now = self._clock()
        with self._db.write() as conn:
            if error is None:
                moved = store.update_job(
                    conn, pk, now, expect=frozenset({S.VALIDATING_FILES}), status=S.QUEUED
                )
                drafts = [messages.validated()]
            else:
                moved = store.update_job(
                    conn,
                    pk,
                    now,
                    expect=frozenset({S.VALIDATING_FILES}),
                    status=S.FAILED,
                    error=error,
                    finished_at=now,
                )
                drafts = [messages.failed(error)]
            if not moved:
                return None
            events_store.append_events(conn, pk, drafts, now)
            return store.get_job(conn, job_id)[1]  # type: ignore[index]

    def validate_stale(self, older_than_seconds: int, limit: int = 100) -> int:
        """Validate jobs left in `validating_files` (a crash between create and validate)."""
        with self._db.read() as conn:
            ids = store.ids_in_status(
                conn,
                S.VALIDATING_FILES,
                updated_before=self._clock() - older_than_seconds,
                limit=limit,
            )
        return sum(self.validate(job_id) is not None for job_id in ids)

    # -- controlling ----------------------------------------------------------

    def _control(self, principal: Principal, job_id: str, action: str, decide: Decision) -> Job:
        """Apply what `decide(job)` returns as one compare-and-set with its events."""
        now = self._clock()
        with self._db.write() as conn:
            found = store.get_job(conn, job_id, principal.project_id)
            if found is None:
                raise job_not_found(job_id)
            pk, job = found
            decided = decide(job)
            if decided is None:
                raise refusal(job.id, job.status, action)
            fields, drafts = decided
            if "status" in fields:
                ensure_move(job.id, job.status, fields["status"], action)
            store.update_job(conn, pk, now, expect=frozenset({job.status}), **fields)
            events_store.append_events(conn, pk, drafts, now)
            return store.get_job(conn, job_id)[1]  # type: ignore[index]

    def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel at once unless the job runs; then the worker stops it at its next step."""

        def decide(job: Job) -> Decided | None:
            if job.status in TERMINAL:
                return None
            if job.status is S.RUNNING:
                return {"control": "cancel"}, [messages.cancel_requested()]
            return (
                {"status": S.CANCELLED, "finished_at": self._clock(), "control": None},
                [messages.cancelled()],
            )

        return self._control(principal, job_id, "cancel", decide)

    def pause(self, principal: Principal, job_id: str) -> Job:
        """Pause a queued job at once; a running one pauses at its next checkpoint."""

        def decide(job: Job) -> Decided | None:
            if job.status is S.QUEUED:
                return {"status": S.PAUSED}, [messages.paused()]
            if job.status is S.RUNNING and job.control is None:
                return {"control": "pause"}, [messages.pause_requested()]
            return None

        return self._control(principal, job_id, "pause", decide)

    def resume(self, principal: Principal, job_id: str) -> Job:
        """Put a paused job back in the queue (a worker resumes it from its checkpoint)."""

        def decide(job: Job) -> Decided | None:
            if job.status is S.PAUSED:
                return {"status": S.QUEUED}, [messages.resumed()]
            if job.status is S.RUNNING and job.control == "pause":
                return {"control": None}, [messages.resumed()]
            return None

        return self._control(principal, job_id, "resume", decide)
