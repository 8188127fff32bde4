"""The worker protocol's use cases: claim, heartbeat, report, checkpoint, finish, recover.

A worker holds a running job through its lease (`worker_id` and `heartbeat_at` on the
job). Every call but `claim` names the worker and is refused with `LeaseLost` once the
lease is gone (the job was recovered, cancelled or finished), so a worker that was
presumed dead and comes back cannot write into a job another worker now runs.

A check in one statement and a write in the next would race on PostgreSQL (a recovery
commits in between), so each write carries the hold in its own statement, a
compare-and-set whose rowcount is checked: one that loses writes nothing, and the
transaction is rolled back with `LeaseLost`. Once such a write wins, the job's row is
this transaction's until it ends, so what the transaction reads after it is current.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from openft.domain import messages
from openft.domain.entities import (
    BaseModel,
    Blob,
    Checkpoint,
    Control,
    EventDraft,
    EventType,
    Job,
    JobError,
    JobStatus,
    Lease,
    MethodType,
    Outcome,
    Start,
    holder_name,
)
from openft.domain.errors import LeaseLost, ModelUnavailable, NotFound, Unauthenticated
from openft.domain.hyperparameters import resolve
from openft.domain.ids import new_checkpoint_id
from openft.domain.naming import checkpoint_model, fine_tuned_model
from openft.services.artifacts import Artifacts
from openft.services.clock import Clock, system_clock
from openft.services.events import job_not_found
from openft.services.files import FileService
from openft.services.models import ModelService
from openft.services.reports import ReportWriter
from openft.services.webhooks import queue_terminal
from openft.store.interface import Store, Transaction

S = JobStatus
# The columns of step_metrics.csv, as in OpenAI's results file.
METRICS_COLUMNS = (
    "step",
    "train_loss",
    "train_accuracy",
    "valid_loss",
    "valid_mean_token_accuracy",
)

# A reinforcement job's: its rewards instead of losses (scores and errors stay in events).
REWARD_COLUMNS = (
    "step",
    "train_mean_reward",
    "full_valid_mean_reward",
    "completion_tokens_mean",
    "train_loss",
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
    # The fine-tuned model or checkpoint whose adapter the job goes on training (None: a
    # new adapter on `base_model`).
    start: Start | None = None


def _lease_lost(job_id: str, status: JobStatus, worker_id: str) -> LeaseLost:
    return LeaseLost(
        f"Worker {worker_id} does not hold fine-tuning job {job_id} "
        f"(its status is {status.value}); stop working on it.",
        param="worker_id",
    )


def _check_hold(job_id: str, status: JobStatus, lease: Lease | None, worker_id: str) -> Lease:
    """The hold of `worker_id` on the job, or why it has none."""
    if status is not S.RUNNING or lease is None or lease.worker_id != worker_id:
        raise _lease_lost(job_id, status, worker_id)
    return lease


def stop_outcome(control: Control | None) -> tuple[Outcome, EventDraft]:
    """What a job that stops at a control request becomes: paused for a pause, cancelled
    for a cancel (and for a stop with no request left pending)."""
    if control is Control.PAUSE:
        return Outcome(S.PAUSED), messages.paused()
    return Outcome(S.CANCELLED), messages.cancelled()


class WorkerService:
    def __init__(
        self,
        db: Store,
        files: FileService,
        models: ModelService,
        artifacts: Artifacts,
        *,
        heartbeat_timeout: int = 60,
        max_attempts: int = 3,
        keep_checkpoints: int = 3,
        clock: Clock = system_clock,
    ) -> None:
        self._db = db
        self._files = files
        self._models = models
        self.artifacts = artifacts
        self.heartbeat_timeout = heartbeat_timeout
        self.max_attempts = max_attempts
        self._keep_checkpoints = keep_checkpoints
        self._clock = clock
        self._reports: ReportWriter | None = None  # made at the first report over HTTP

    # -- leases -----------------------------------------------------------------------

    @staticmethod
    def _held(tx: Transaction, job_id: str, worker_id: str) -> Job:
        job = tx.get_job(job_id)
        if job is None:
            raise job_not_found(job_id)
        _check_hold(job_id, job.status, job.lease, worker_id)
        return job

    @staticmethod
    def _hold(tx: Transaction, job_id: str, worker_id: str) -> Lease:
        """`_held` for every report: the job's status and hold, not the whole job."""
        found = tx.get_hold(job_id)
        if found is None:
            raise job_not_found(job_id)
        return _check_hold(job_id, *found, worker_id)

    @staticmethod
    def _lost(tx: Transaction, job_id: str, worker_id: str) -> LeaseLost | NotFound:
        """After a write that carried the hold lost: why, as the job now is."""
        job = tx.get_job(job_id)
        return job_not_found(job_id) if job is None else _lease_lost(job_id, job.status, worker_id)

    @classmethod
    def _renew(
        cls,
        tx: Transaction,
        job_id: str,
        worker_id: str,
        now: int,
        *,
        trained_tokens: int | None = None,
        estimated_finish: int | None = None,
    ) -> Job:
        """Renew the hold (the checked write), then read the job under the row lock it
        took: its pending request is the latest, and stays so until the commit."""
        if not tx.renew_lease(
            job_id,
            worker_id,
            now,
            trained_tokens=trained_tokens,
            estimated_finish=estimated_finish,
        ):
            raise cls._lost(tx, job_id, worker_id)
        job = tx.get_job(job_id)
        assert job is not None
        return job

    @classmethod
    def _end(
        cls,
        tx: Transaction,
        job: Job,
        worker_id: str,
        now: int,
        outcome: Outcome,
        *drafts: EventDraft,
        as_read: Job | None = None,
    ) -> Job:
        """End the worker's hold: move the job to `outcome`, announce it with `drafts` in
        the same transaction, and return the job as it now is."""
        if not tx.end_lease(job.id, worker_id, now, outcome, as_read=as_read):
            raise cls._lost(tx, job.id, worker_id)
        tx.append_events(job.id, drafts, now)
        queue_terminal(tx, job.project_id, job.id, outcome.status, now)
        ended = tx.get_job(job.id)
        assert ended is not None
        return ended

    def _name(self, tx: Transaction, job: Job) -> str:
        # Named after the base model under it, as OpenAI names a model trained on a
        # fine-tuned one.
        root = self._models.root(tx, job)
        return fine_tuned_model(root, tx.project_name(job.project_id), job.suffix, job.id)

    def claim(
        self, worker_id: str, name: str | None = None, key_id: str | None = None
    ) -> Assignment | None:
        """Take the oldest queued job for the holder `worker_id`, resolve its "auto"
        hyperparameters, and say so (naming the worker `name`, by default its holder).

        With the worker's `key_id`, the key is checked in the same transaction, not from
        a process's cache: a revoked key's worker never takes back the jobs its
        revocation just requeued."""
        shown = worker_id if name is None else name
        now = self._clock()
        with self._db.write() as tx:
            if key_id is not None and not tx.key_is_live(key_id):
                raise Unauthenticated(f"The worker key {key_id} was revoked.")
            job = tx.claim_next(worker_id, now)
            if job is None:
                return None
            assert job.lease is not None
            try:
                start = self._models.start(tx, job.project_id, job.model)
            except (NotFound, ModelUnavailable) as exc:
                # Its model was deleted, unshared or taken off the server since the job
                # was created: the job cannot run anywhere, so it fails now (taking
                # it back would hand it to the next worker, and the next, for ever).
                error = JobError("model_not_available", exc.message, "model")
                self._end(
                    tx, job, worker_id, now, Outcome(S.FAILED, error=error), messages.failed(error)
                )
                return None
            training = tx.get_file(job.project_id, job.training_file)
            examples = training.examples if training and training.examples else 1
            resolved = replace(
                job.method,
                hyperparameters=resolve(job.method.hyperparameters, job.method.type, examples),
            )
            tx.set_method(job.id, now, resolved)
            latest = tx.latest_checkpoint(job.id)
            attempt = job.lease.attempts
            started = (
                messages.started(shown)
                if attempt == 1
                else messages.resumed_from(latest.step_number if latest else 0, attempt, shown)
            )
            tx.append_events(job.id, [started], now)
            return Assignment(
                job=replace(job, method=resolved),
                base_model=start.base,
                start=start if start.job_id is not None else None,
                attempt=attempt,
                resume_from=latest,
                reported_step=job.lease.reported_step,
                fine_tuned_model=self._name(tx, job),
            )

    def heartbeat(
        self,
        job_id: str,
        worker_id: str,
        *,
        trained_tokens: int | None = None,
        estimated_finish: int | None = None,
    ) -> Control | None:
        """Renew the lease; return the pending control request, if any."""
        now = self._clock()
        with self._db.write() as tx:
            job = self._renew(
                tx,
                job_id,
                worker_id,
                now,
                trained_tokens=trained_tokens,
                estimated_finish=estimated_finish,
            )
            return job.control

    # -- reporting ---------------------------------------------------------------------

    def report(self, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]) -> bool:
        """Append one numbered batch of events; False if that batch was already applied.

        Metrics of steps already reported (an attempt resumed from a checkpoint re-runs
        the steps after it) are dropped, so each step has one metrics event."""
        with self._db.write() as tx:
            return self.apply_report(tx, job_id, worker_id, batch, drafts)

    async def report_async(
        self, job_id: str, worker_id: str, batch: int, drafts: Sequence[EventDraft]
    ) -> bool:
        """`report` for the API's event loop: written with the other reports waiting, many
        to a transaction, by one thread (services/reports.py)."""
        if self._reports is None:
            self._reports = ReportWriter(self._db, self.apply_report)
        return await self._reports.write(job_id, worker_id, batch, drafts)

    def apply_report(
        self,
        tx: Transaction,
        job_id: str,
        worker_id: str,
        batch: int,
        drafts: Sequence[EventDraft],
    ) -> bool:
        """`report` in the transaction `tx`. A refusal (`LeaseLost`, `NotFound`) is raised
        before anything is written."""
        now = self._clock()
        lease = self._hold(tx, job_id, worker_id)
        if batch <= lease.worker_batch:
            return False
        reported = lease.reported_step
        fresh = []
        for draft in drafts:
            step = draft.data.get("step") if draft.type is EventType.METRICS else None
            if isinstance(step, int):
                if step <= reported:
                    continue
                reported = step
            fresh.append(draft)
        applied = tx.record_event_batch(
            job_id, worker_id, now, batch=batch, reported_step=reported, drafts=fresh
        )
        if applied is None:  # lost: the hold went meanwhile (raises), or a retry raced
            self._hold(tx, job_id, worker_id)
            return False
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
        checkpoint already recorded at `step` (a retried upload) is returned as it is.

        Only the newest `keep_checkpoints` are kept, as OpenAI keeps those of the last
        three epochs: older ones go once the new one is recorded. A resume starts from
        the newest, which is never among them."""
        with self._db.read() as tx:
            job = self._held(tx, job_id, worker_id)
            name = checkpoint_model(self._name(tx, job), step)
            existing = tx.checkpoint_at_step(job_id, step)
        if existing is not None:
            return existing
        checkpoint = Checkpoint(new_checkpoint_id(), job_id, step, self._clock(), metrics, name)
        self.artifacts.save_checkpoint(job_id, checkpoint.id, archive)
        try:
            with self._db.write() as tx:
                # An upload is a sign of life too; the renewal guards the inserts below.
                self._renew(tx, job_id, worker_id, self._clock())
                tx.insert_checkpoint(checkpoint)
                tx.append_events(
                    job_id, [messages.checkpoint_created(step, name)], checkpoint.created_at
                )
                # A reinforcement job keeps its best by validation reward (and the newest).
                best_by = (
                    "full_valid_mean_reward"
                    if job.method.type is MethodType.REINFORCEMENT
                    else None
                )
                dropped = tx.prune_checkpoints(job_id, self._keep_checkpoints, best_by)
        except BaseException:
            self.artifacts.delete_checkpoint(job_id, checkpoint.id)
            raise
        for old in dropped:  # after the commit: a failure here leaves a file, loses nothing
            self.artifacts.delete_checkpoint(job_id, old)
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
        with self._db.read() as tx:
            job = self._held(tx, job_id, worker_id)
            metrics = tx.metrics_data(job_id)
        self.artifacts.save_adapter(job_id, adapter)
        results = self._files.save_result(
            job.project_id, "step_metrics.csv", step_metrics_csv(metrics)
        )
        now = self._clock()
        with self._db.write() as tx:
            job = self._held(tx, job_id, worker_id)
            name = self._name(tx, job)
            outcome = Outcome(
                S.SUCCEEDED,
                fine_tuned_model=name,
                trained_tokens=trained_tokens,
                result_files=(results.id,),
            )
            return self._end(
                tx, job, worker_id, now, outcome, messages.model_created(name), messages.succeeded()
            )

    def fail(self, job_id: str, worker_id: str, error: JobError) -> Job:
        now = self._clock()
        with self._db.write() as tx:
            job = self._held(tx, job_id, worker_id)
            return self._end(
                tx, job, worker_id, now, Outcome(S.FAILED, error=error), messages.failed(error)
            )

    def stopped(self, job_id: str, worker_id: str) -> Job:
        """The worker stopped the job as its control asked: it is now cancelled or paused."""
        now = self._clock()
        with self._db.write() as tx:
            # Under the renewal's row lock, a cancel cannot replace the pause read here.
            job = self._renew(tx, job_id, worker_id, now)
            return self._end(tx, job, worker_id, now, *stop_outcome(job.control))

    # -- recovery ------------------------------------------------------------------------

    def recover_stale(self) -> int:
        """Take back running jobs whose worker went silent: re-queue them (a worker
        resumes from the last checkpoint), or fail them after `max_attempts`. A pending
        cancel or pause is honoured instead. Returns how many jobs were recovered."""
        now = self._clock()
        with self._db.read() as tx:
            stale = tx.stale_running_ids(now - self.heartbeat_timeout)

        def silent(job: Job, lease: Lease) -> tuple[Outcome, EventDraft] | None:
            if lease.heartbeat_at >= now - self.heartbeat_timeout:
                return None  # it spoke up since we looked
            return self._recovery(job.control, lease.attempts)

        return sum(self._take_back(job_id, now, silent) for job_id in stale)

    def release_key(self, key_id: str) -> int:
        """Take back the running jobs held by workers of a revoked key, saying why: each
        goes back to the queue (a pending cancel or pause is honoured instead), so that
        another worker resumes it from its last checkpoint. Returns how many."""
        now = self._clock()
        prefix = holder_name(key_id)
        with self._db.read() as tx:
            held = tx.running_ids_held_by(prefix)

        def revoked(job: Job, lease: Lease) -> tuple[Outcome, EventDraft] | None:
            if not lease.worker_id.startswith(prefix):
                return None  # taken back and claimed by another key's worker meanwhile
            if job.control is not None:
                return stop_outcome(job.control)
            return Outcome(S.QUEUED), messages.worker_key_revoked(key_id)

        return sum(self._take_back(job_id, now, revoked) for job_id in held)

    def _take_back(
        self,
        job_id: str,
        now: int,
        decide: Callable[[Job, Lease], tuple[Outcome, EventDraft] | None],
    ) -> bool:
        """End a running job's hold on the server's own account, as `decide` says (None:
        leave it). The move compares what the decision rested on (the heartbeat and the
        pending request read here), so a heartbeat, a report or a cancel in between wins.
        Whether the job was taken back."""
        try:
            with self._db.write() as tx:
                job = tx.get_job(job_id)
                lease = job.lease if job is not None else None
                if job is None or job.status is not S.RUNNING or lease is None:
                    return False
                decided = decide(job, lease)
                if decided is None:
                    return False
                outcome, draft = decided
                self._end(tx, job, lease.worker_id, now, outcome, draft, as_read=job)
                return True
        except LeaseLost:
            return False  # its worker spoke up or finished it meanwhile, or it was asked

    def _recovery(self, control: Control | None, attempts: int) -> tuple[Outcome, EventDraft]:
        """What a job whose worker went silent becomes."""
        if control is not None:
            return stop_outcome(control)
        if attempts >= self.max_attempts:
            error = JobError(
                "worker_lost",
                f"The job failed: its worker stopped responding {attempts} times. "
                "Check the workers' logs (out of memory?) and create the job again.",
            )
            return Outcome(S.FAILED, error=error), messages.failed(error)
        return Outcome(S.QUEUED), messages.worker_lost(attempts, self.max_attempts)

    # -- the worker's downloads ----------------------------------------------------------

    def job_file(self, job_id: str, worker_id: str, file_id: str) -> Blob:
        """The bytes of one of a held job's input files."""
        with self._db.read() as tx:
            job = self._held(tx, job_id, worker_id)
        if file_id not in (job.training_file, job.validation_file):
            raise NotFound(f"File {file_id} is not an input of job {job_id}.", param="file_id")
        return self._files.blob(file_id)

    def project_of(self, job_id: str, worker_id: str) -> str:
        """The project of a job this worker holds (whose models its graders may call)."""
        with self._db.read() as tx:
            return self._held(tx, job_id, worker_id).project_id

    def start_archive(self, job_id: str, worker_id: str) -> Blob:
        """The adapter a job goes on training (a fine-tuned model's, or a checkpoint's
        directory), as the job's project may still use it."""
        with self._db.read() as tx:
            job = self._held(tx, job_id, worker_id)
            start = self._models.start(tx, job.project_id, job.model)
        if start.job_id is None:
            raise NotFound(f"Fine-tuning job {job_id} starts from a base model.", param="job_id")
        if start.checkpoint_id is not None:
            return self.artifacts.checkpoint_archive(start.job_id, start.checkpoint_id)
        return self.artifacts.adapter_archive(start.job_id)

    def checkpoint_archive(self, job_id: str, worker_id: str, checkpoint_id: str) -> Blob:
        with self._db.read() as tx:
            self._held(tx, job_id, worker_id)
            found = tx.get_checkpoint(job_id, checkpoint_id)
        if found is None:
            raise NotFound(f"No checkpoint {checkpoint_id} in job {job_id}.", param="checkpoint_id")
        return self.artifacts.checkpoint_archive(job_id, checkpoint_id)


def step_metrics_csv(rows: Iterable[dict[str, object]]) -> bytes:
    """OpenAI's results file: one row per step, from the metrics events' data (a
    reinforcement job's has the reward columns)."""
    rows = list(rows)
    columns = (
        REWARD_COLUMNS if any("train_mean_reward" in data for data in rows) else METRICS_COLUMNS
    )
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for data in rows:
        writer.writerow([data.get(_CSV_SOURCE.get(column, column), "") for column in columns])
    return out.getvalue().encode()
