"""The worker protocol's use cases: claim, heartbeat, report, checkpoint, finish, recover.

A worker holds a running job through its lease (`worker_id` and `heartbeat_at` on the
job). Every call but `claim` names the worker and is refused with `LeaseLost` once the
lease is gone (the job was recovered, cancelled or finished), so a worker that was
presumed dead and comes back cannot write into a job another worker now runs.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Connection

from openft.domain import messages
from openft.domain.entities import (
    BaseModel,
    Checkpoint,
    EventDraft,
    EventType,
    Job,
    JobError,
    JobStatus,
    Method,
)
from openft.domain.errors import LeaseLost, NotFound
from openft.domain.hyperparameters import resolve
from openft.domain.ids import new_checkpoint_id
from openft.domain.naming import checkpoint_model, fine_tuned_model
from openft.services.artifacts import Artifacts
from openft.services.clock import Clock, system_clock
from openft.services.events import job_not_found
from openft.services.files import FileService
from openft.services.models import ModelService
from openft.store import checkpoints as checkpoints_store
from openft.store import events as events_store
from openft.store import files as files_store
from openft.store import jobs as store
from openft.store.database import Database
from openft.store.jobs import method_to_json

S = JobStatus
RUNNING = frozenset({S.RUNNING})
# The columns of step_metrics.csv, as in OpenAI's results file.
METRICS_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)


# Where each column comes from in a metrics event's data.
_CSV_SOURCE = {"train_accuracy": "train_mean_token_accuracy"}


@dataclass(frozen=True, slots=True)
class Assignment:
    """What a worker needs to run a claimed job."""

    job: Job
    base_model: BaseModel
    attempt: int
    resume_from: Checkpoint | None
    reported_step: int
    fine_tuned_model: str


class WorkerService:
    def __init__(
        self,
        db: Database,
        files: FileService,
        models: ModelService,
        artifacts: Artifacts,
        *,
        heartbeat_timeout: int = 60,
        max_attempts: int = 3,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._files = files
        self._models = models
        self.artifacts = artifacts
        self.heartbeat_timeout = heartbeat_timeout
        self.max_attempts = max_attempts
        self._clock = clock

    # -- leases -----------------------------------------------------------------------

    def _held(self, conn: Connection, job_id: str, worker_id: str) -> tuple[int, Job]:
        found = store.get_job(conn, job_id)
        if found is None:
            raise job_not_found(job_id)
        pk, job = found
        if job.status is not S.RUNNING or job.lease is None or job.lease.worker_id != worker_id:
            raise LeaseLost(
                f"Worker {worker_id} does not hold fine-tuning job {job_id} "
                f"(its status is {job.status.value}); stop working on it.",
                param="worker_id",
            )
        return pk, job

    @staticmethod
    def _finish(
        conn: Connection, pk: int, job_id: str, now: int, drafts: list[EventDraft], **fields: Any
    ) -> Job:
        """End the worker's hold: set `fields` (the job's next status), announce it with
        `drafts` in the same transaction, and return the job as it now is."""
        store.release_lease(conn, pk, now, control=None, estimated_finish=None, **fields)
        events_store.append_events(conn, pk, drafts, now)
        return store.get_job(conn, job_id)[1]  # type: ignore[index]

    @staticmethod
    def _stop_outcome(control: str | None, now: int) -> tuple[dict[str, Any], list[EventDraft]]:
        """What a job that stops at a control request becomes: paused for "pause",
        cancelled for "cancel" (and for a stop with no request left pending)."""
        if control == "pause":
            return {"status": S.PAUSED}, [messages.paused()]
        return {"status": S.CANCELLED, "finished_at": now}, [messages.cancelled()]

    def _name(self, conn: Connection, job: Job) -> str:
        project = store.project_name(conn, job.project_id)
        return fine_tuned_model(job.model, project, job.suffix, job.id)

    def claim(self, worker_id: str) -> Assignment | None:
        """Take the oldest queued job, resolve its "auto" hyperparameters, and say so."""
        now = self._clock()
        with self._db.write() as conn:
            job_id = store.claim_next(conn, worker_id, now)
            if job_id is None:
                return None
            pk, job = store.get_job(conn, job_id)  # type: ignore[misc]
            assert job.lease is not None
            training = files_store.get_file(conn, job.project_id, job.training_file)
            examples = training.examples if training and training.examples else 1
            resolved = Method(
                job.method.type, resolve(job.method.hyperparameters, job.method.type, examples)
            )
            store.update_job(conn, pk, now, method=method_to_json(resolved))
            latest = checkpoints_store.latest_checkpoint(conn, pk)
            attempt = job.lease.attempts
            started = (
                messages.started(worker_id)
                if attempt == 1
                else messages.resumed_from(latest.step_number if latest else 0, attempt, worker_id)
            )
            events_store.append_events(conn, pk, [started], now)
            job = store.get_job(conn, job_id)[1]  # type: ignore[index]
            return Assignment(
                job=job,
                base_model=self._models.base_model(job.model),
                attempt=attempt,
                resume_from=latest,
                reported_step=job.lease.reported_step if job.lease else 0,
                fine_tuned_model=self._name(conn, job),
            )

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        trained_tokens: int | None = None,
        estimated_finish: int | None = None,
    ) -> str | None:
        """Renew the lease; return the pending control request ("cancel", "pause") if any."""
        now = self._clock()
        with self._db.write() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            fields: dict[str, Any] = {"heartbeat_at": now}
            if trained_tokens is not None:
                fields["trained_tokens"] = trained_tokens
            if estimated_finish is not None:
                fields["estimated_finish"] = estimated_finish
            store.update_job(conn, pk, now, **fields)
            return job.control

    # -- reporting ---------------------------------------------------------------------

    def report(self, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]) -> bool:
        """Append one numbered batch of events; False if that batch was already applied.

        Metrics of steps already reported (an attempt resumed from a checkpoint re-runs
        the steps after it) are dropped, so each step has one metrics event."""
        now = self._clock()
        with self._db.write() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            assert job.lease is not None
            if batch <= job.lease.worker_batch:
                return False
            reported = job.lease.reported_step
            fresh = []
            for draft in drafts:
                step = draft.data.get("step") if draft.type is EventType.METRICS else None
                if isinstance(step, int):
                    if step <= reported:
                        continue
                    reported = step
                fresh.append(draft)
            events_store.append_events(conn, pk, fresh, now)
            store.update_job(
                conn, pk, now, worker_batch=batch, reported_step=reported, heartbeat_at=now
            )
            return True

    def add_checkpoint(
        self,
        job_id: str,
        worker_id: str,
        step: int,
        metrics: dict[str, float],
        archive: Iterable[bytes],
    ) -> Checkpoint:
        """Store a checkpoint's archive, then record it with its event. Idempotent: a
        checkpoint already recorded at `step` (a retried upload) is returned as it is."""
        with self._db.read() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            name = checkpoint_model(self._name(conn, job), step)
            existing = checkpoints_store.at_step(conn, pk, step)
        if existing is not None:
            return existing
        checkpoint = Checkpoint(new_checkpoint_id(), job_id, step, self._clock(), metrics, name)
        path = self.artifacts.save_checkpoint(job_id, checkpoint.id, archive)
        try:
            with self._db.write() as conn:
                self._held(conn, job_id, worker_id)
                checkpoints_store.insert_checkpoint(conn, pk, checkpoint)
                events_store.append_events(
                    conn, pk, [messages.checkpoint_created(step, name)], checkpoint.created_at
                )
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        return checkpoint

    # -- finishing -----------------------------------------------------------------------

    def complete(
        self,
        job_id: str,
        worker_id: str,
        *,
        trained_tokens: int,
        adapter: Iterable[bytes],
    ) -> Job:
        """Store the adapter and the results file (built from the job's metrics events,
        one row per step), then mark the job succeeded."""
        with self._db.read() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            metrics = events_store.metrics_data(conn, pk)
        self.artifacts.save_adapter(job_id, adapter)
        results = self._files.save_result(
            job.project_id, "step_metrics.csv", step_metrics_csv(metrics)
        )
        now = self._clock()
        with self._db.write() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            name = self._name(conn, job)
            return self._finish(
                conn,
                pk,
                job_id,
                now,
                [messages.model_created(name), messages.succeeded()],
                status=S.SUCCEEDED,
                finished_at=now,
                fine_tuned_model=name,
                trained_tokens=trained_tokens,
                result_files=[results.id],
            )

    def fail(self, job_id: str, worker_id: str, error: JobError) -> Job:
        now = self._clock()
        with self._db.write() as conn:
            pk, _job = self._held(conn, job_id, worker_id)
            return self._finish(
                conn,
                pk,
                job_id,
                now,
                [messages.failed(error)],
                status=S.FAILED,
                finished_at=now,
                error=error,
            )

    def stopped(self, job_id: str, worker_id: str) -> Job:
        """The worker stopped the job as its control asked: it is now cancelled or paused."""
        now = self._clock()
        with self._db.write() as conn:
            pk, job = self._held(conn, job_id, worker_id)
            fields, drafts = self._stop_outcome(job.control, now)
            return self._finish(conn, pk, job_id, now, drafts, **fields)

    # -- recovery ------------------------------------------------------------------------

    def recover_stale(self) -> int:
        """Take back running jobs whose worker went silent: re-queue them (a worker
        resumes from the last checkpoint), or fail them after `max_attempts`. A pending
        cancel or pause is honoured instead. Returns how many jobs were recovered."""
        now = self._clock()
        with self._db.read() as conn:
            stale = store.stale_running_ids(conn, now - self.heartbeat_timeout)
        recovered = 0
        for job_id in stale:
            with self._db.write() as conn:
                found = store.get_job(conn, job_id)
                if found is None:
                    continue
                pk, job = found
                lease = job.lease
                if job.status is not S.RUNNING or lease is None:
                    continue
                if lease.heartbeat_at >= now - self.heartbeat_timeout:
                    continue  # it spoke up since we looked
                attempts = lease.attempts
                if job.control is not None:
                    fields, drafts = self._stop_outcome(job.control, now)
                elif attempts >= self.max_attempts:
                    error = JobError(
                        "worker_lost",
                        f"The job failed: its worker stopped responding {attempts} times. "
                        "Check the workers' logs (out of memory?) and create the job again.",
                    )
                    fields = {"status": S.FAILED, "finished_at": now, "error": error}
                    drafts = [messages.failed(error)]
                else:
                    fields = {"status": S.QUEUED}
                    drafts = [messages.worker_lost(attempts, self.max_attempts)]
                self._finish(conn, pk, job_id, now, drafts, **fields)
                recovered += 1
        return recovered

    def job_file(self, job_id: str, worker_id: str, file_id: str) -> Path:
        """The path of one of a held job's input files."""
        with self._db.read() as conn:
            _pk, job = self._held(conn, job_id, worker_id)
        if file_id not in (job.training_file, job.validation_file):
            raise NotFound(f"File {file_id} is not an input of job {job_id}.", param="file_id")
        return self._files.path(file_id)

    def checkpoint_archive(self, job_id: str, worker_id: str, checkpoint_id: str) -> Path:
        with self._db.read() as conn:
            pk, _job = self._held(conn, job_id, worker_id)
            if checkpoints_store.checkpoint_pk(conn, pk, checkpoint_id) is None:
                raise NotFound(
                    f"No checkpoint {checkpoint_id} in job {job_id}.", param="checkpoint_id"
                )
        return self.artifacts.checkpoint_archive(job_id, checkpoint_id)


def step_metrics_csv(rows: Iterable[dict[str, object]]) -> bytes:
    """OpenAI's results file: one row per step, from the metrics events' data."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(METRICS_COLUMNS)
    for data in rows:
        writer.writerow(
            [data.get(_CSV_SOURCE.get(column, column), "") for column in METRICS_COLUMNS]
        )
    return out.getvalue().encode()
