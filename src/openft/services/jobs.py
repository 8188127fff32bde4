"""Fine-tuning jobs: create, validate, list, retrieve, cancel, pause and resume.

Every status change is a compare-and-set on the job row, written in the same
transaction as the events that announce it, so racing API replicas and workers
never both win and never leave a change without its event (or an event without it).
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from openft.domain import messages
from openft.domain.entities import (
    Control,
    EventDraft,
    FileFormat,
    Job,
    JobError,
    JobStatus,
    MetadataFilter,
    Method,
    MethodType,
    Page,
    Principal,
)
from openft.domain.errors import BlobMissing, InvalidCursor, InvalidFile, InvalidRequest
from openft.domain.ids import new_event_key, new_job_id
from openft.domain.methods import resolve_method
from openft.domain.status import TERMINAL, changed_meanwhile, ensure_move, refusal
from openft.domain.validation import FileValidator, MethodRules
from openft.services.clock import Clock, system_clock
from openft.services.events import job_not_found
from openft.services.files import FINE_TUNE, FileService
from openft.services.models import ModelService
from openft.services.webhooks import queue_terminal
from openft.store.interface import Store, Transaction

S = JobStatus
MAX_SEED = 2_147_483_647
GRADER_PARAM = "method.reinforcement.grader"


def check_grader(method: Method) -> list[tuple[str, str]]:
    """A reinforcement method's grader, checked as `openft.graders` reads it (a 400 naming
    the field); returns the models its model graders call, each with its param."""
    if method.type is not MethodType.REINFORCEMENT:
        return []
    # Imported here: the graders' libraries (nltk, rouge-score, …) load only for RFT jobs.
    from openft.graders import models_called
    from openft.graders import parse as parse_grader

    assert method.grader is not None, "resolve_method requires a reinforcement grader"
    return models_called(parse_grader(method.grader, param=GRADER_PARAM), GRADER_PARAM)


def method_rules(method: Method) -> MethodRules | None:
    """What a job's method asks of each row of its files (None: the format alone)."""
    if method.type is MethodType.DPO:
        return None
    references: list[str] = []
    if method.type is MethodType.REINFORCEMENT and method.grader is not None:
        from openft.graders import item_references, parse

        references = item_references(parse(method.grader, param=GRADER_PARAM))
    return MethodRules(method.type, references)


@dataclass(frozen=True, slots=True)
class Move:
    """A control operation's decision to move the job to `status` at once."""

    status: JobStatus


@dataclass(frozen=True, slots=True)
class Ask:
    """A control operation's decision to leave the running job's worker a request."""

    control: Control | None


# What a control operation decides for a job (None: refused), and the event that says so.
Decided = tuple[Move | Ask, EventDraft]
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
        db: Store,
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
        with self._db.read() as tx:
            found = tx.get_job(job_id, principal.project_id)
        if found is None:
            raise job_not_found(job_id)
        return found

    def list(
        self,
        principal: Principal,
        *,
        after: str | None = None,
        limit: int = 20,
        metadata: MetadataFilter | None = None,
    ) -> Page[Job]:
        with self._db.read() as tx:
            if after is not None and tx.get_job(after, principal.project_id) is None:
                raise InvalidCursor(f"No fine-tuning job {after!r} to list after.", param="after")
            return tx.list_jobs(principal.project_id, after=after, limit=limit, metadata=metadata)

    # -- creating and validating ----------------------------------------------

    @staticmethod
    def _require_file(tx: Transaction, principal: Principal, file_id: str, param: str) -> None:
        record = tx.get_file(principal.project_id, file_id)
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
        """Record a job in `validating_files`; `validate` later moves it on. Its `model` is a
        base model, or a fine-tuned model or checkpoint it goes on training."""
        self._models.trainable(principal.project_id, request.model)
        method = resolve_method(request.hyperparameters, request.method)
        for model, param in check_grader(method):
            # Model graders call the server's chat completions as the job's project.
            self._models.callable(principal.project_id, model, param)
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
        with self._db.write() as tx:
            self._require_file(tx, principal, request.training_file, "training_file")
            if request.validation_file is not None:
                self._require_file(tx, principal, request.validation_file, "validation_file")
            tx.insert_job(job)
            tx.append_events(
                job.id,
                [
                    messages.created(job.id),
                    messages.validating(job.training_file, job.validation_file),
                ],
                now,
            )
        return job

    def _check_file(
        self,
        file_id: str,
        expected: FileFormat,
        min_examples: int,
        param: str,
        rules: MethodRules | None = None,
    ) -> JobError | None:
        kind = param.removesuffix("_file")
        validator = FileValidator(file_id, expected, rules)
        try:
            for block in self._files.blob(file_id).chunks:
                validator.feed(block)
            validator.finish(min_examples)
        except BlobMissing as exc:
            detail = f"The contents of file {file_id} could not be read: {exc.message}"
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
        with self._db.read() as tx:
            job = tx.get_job(job_id)
        if job is None or job.status is not S.VALIDATING_FILES:
            return None
        expected, rules = job.method.file_format, method_rules(job.method)
        error = self._check_file(
            job.training_file, expected, self._min_examples, "training_file", rules
        )
        if error is None and job.validation_file is not None:
            error = self._check_file(job.validation_file, expected, 1, "validation_file", rules)
        now = self._clock()
        to, draft = (
            (S.QUEUED, messages.validated())
            if error is None
            else (S.FAILED, messages.failed(error))
        )
        with self._db.write() as tx:
            if not tx.move_job(
                job_id, now, expect=frozenset({S.VALIDATING_FILES}), to=to, error=error
            ):
                return None
            tx.append_events(job_id, [draft], now)
            queue_terminal(tx, job.project_id, job_id, to, now)
            return tx.get_job(job_id)

    def validate_stale(self, older_than_seconds: int, limit: int = 100) -> int:
        """Validate jobs left in `validating_files` (a crash between create and validate)."""
        with self._db.read() as tx:
            ids = tx.ids_in_status(
                S.VALIDATING_FILES,
                updated_before=self._clock() - older_than_seconds,
                limit=limit,
            )
        return sum(self.validate(job_id) is not None for job_id in ids)

    # -- controlling ----------------------------------------------------------

    def _control(self, principal: Principal, job_id: str, action: str, decide: Decision) -> Job:
        """Apply what `decide(job)` returns as one compare-and-set with its event.

        The decision rests on the job as read; on PostgreSQL a worker may claim, finish
        or stop it before the write. The write then compares with what was read and
        loses: nothing is written (no event, no webhook) and the caller learns what the
        job is now, instead of a success for a change that did not happen."""
        now = self._clock()
        with self._db.write() as tx:
            job = tx.get_job(job_id, principal.project_id)
            if job is None:
                raise job_not_found(job_id)
            decided = decide(job)
            if decided is None:
                raise refusal(job.id, job.status, action)
            change, draft = decided
            if isinstance(change, Move):
                ensure_move(job.id, job.status, change.status, action)
                won = tx.move_job(job_id, now, expect=frozenset({job.status}), to=change.status)
            else:
                won = tx.set_control(
                    job_id, now, expect=job.status, was=job.control, control=change.control
                )
            if not won:
                now_is = tx.get_job(job_id)  # READ COMMITTED: sees what beat us
                assert now_is is not None  # jobs are never deleted
                raise changed_meanwhile(job_id, action, now_is.status, now_is.control)
            if isinstance(change, Move):
                queue_terminal(tx, job.project_id, job_id, change.status, now)
            tx.append_events(job_id, [draft], now)
            changed = tx.get_job(job_id)
            assert changed is not None
            return changed

    def cancel(self, principal: Principal, job_id: str) -> Job:
        """Cancel at once unless the job runs; then the worker stops it at its next step."""

        def decide(job: Job) -> Decided | None:
            if job.status in TERMINAL:
                return None
            if job.status is S.RUNNING:
                return Ask(Control.CANCEL), messages.cancel_requested()
            return Move(S.CANCELLED), messages.cancelled()

        return self._control(principal, job_id, "cancel", decide)

    def pause(self, principal: Principal, job_id: str) -> Job:
        """Pause a queued job at once; a running one pauses at its next checkpoint."""

        def decide(job: Job) -> Decided | None:
            if job.status is S.QUEUED:
                return Move(S.PAUSED), messages.paused()
            if job.status is S.RUNNING and job.control is None:
                return Ask(Control.PAUSE), messages.pause_requested()
            return None

        return self._control(principal, job_id, "pause", decide)

    def resume(self, principal: Principal, job_id: str) -> Job:
        """Put a paused job back in the queue (a worker resumes it from its checkpoint)."""

        def decide(job: Job) -> Decided | None:
            if job.status is S.PAUSED:
                return Move(S.QUEUED), messages.resumed()
            if job.status is S.RUNNING and job.control is Control.PAUSE:
                return Ask(None), messages.resumed()
            return None

        return self._control(principal, job_id, "resume", decide)
