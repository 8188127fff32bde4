"""What the services see of storage: a transactional store of records and a blob store.

Services depend on these abstract classes only; the concrete ones (SQL in
`store.database`, a local directory in `store.local_blobs`) are built by the composition
root, `openft.wiring`. Every store method is named for the operation it performs and
speaks in domain entities and public ids: no database type, row or primary key crosses
this line.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

from openft.domain.entities import (
    ApiKey,
    Blob,
    Checkpoint,
    CheckpointPermission,
    Control,
    Event,
    EventDraft,
    EventLog,
    Job,
    JobError,
    JobStatus,
    KeyScope,
    Lease,
    MetadataFilter,
    Method,
    Outcome,
    Page,
    Project,
    StoredFile,
    WebhookDelivery,
    WebhookEndpoint,
)
from openft.domain.operations import OperationsSnapshot


class Transaction(ABC):
    """One database transaction: everything done through it commits together or not at all."""

    # -- projects and keys ---------------------------------------------------------------

    @abstractmethod
    def ping(self) -> None:
        """Make one round trip to the database (the health check)."""

    @abstractmethod
    def get_or_create_project(self, name: str, now: int) -> Project: ...

    @abstractmethod
    def project_name(self, project_id: str) -> str: ...

    @abstractmethod
    def insert_key(
        self, key_id: str, key_hash: str, project_id: str, scope: KeyScope, now: int
    ) -> None: ...

    @abstractmethod
    def find_key(self, key_hash: str) -> ApiKey | None:
        """The unrevoked key with this hash."""

    @abstractmethod
    def list_keys(self, *, include_revoked: bool) -> list[ApiKey]:
        """Every key, oldest first."""

    @abstractmethod
    def revoke_key(self, key_id: str, now: int) -> bool:
        """Revoke the key; whether it was a key not yet revoked."""

    @abstractmethod
    def key_is_live(self, key_id: str) -> bool:
        """Whether the key exists and is not revoked (read now, not from a cache)."""

    @abstractmethod
    def touch_key(self, key_id: str, now: int) -> None:
        """Record that the key was just used."""

    # -- files ---------------------------------------------------------------------------

    @abstractmethod
    def insert_file(self, file: StoredFile) -> None: ...

    @abstractmethod
    def get_file(self, project_id: str, file_id: str) -> StoredFile | None: ...

    @abstractmethod
    def list_files(
        self,
        project_id: str,
        *,
        purpose: str | None,
        after: str | None,
        limit: int,
        newest_first: bool,
    ) -> Page[StoredFile]:
        """A page of the project's files past the file `after` (which must exist)."""

    @abstractmethod
    def delete_file(self, project_id: str, file_id: str) -> bool:
        """Delete the record; whether there was one."""

    @abstractmethod
    def active_job_using(self, file_id: str) -> str | None:
        """The id of an unfinished job that reads this file, if any."""

    # -- jobs ----------------------------------------------------------------------------

    @abstractmethod
    def insert_job(self, job: Job) -> None: ...

    @abstractmethod
    def get_job(self, job_id: str, project_id: str | None = None) -> Job | None:
        """The job; restricted to `project_id` when given."""

    @abstractmethod
    def get_hold(self, job_id: str) -> tuple[JobStatus, Lease | None] | None:
        """The job's status and its worker's hold alone (what every report checks), or
        None if there is no such job."""

    @abstractmethod
    def list_jobs(
        self, project_id: str, *, after: str | None, limit: int, metadata: MetadataFilter | None
    ) -> Page[Job]:
        """Newest first, past the job `after` (which must exist); `metadata` filters."""

    @abstractmethod
    def ids_in_status(self, status: JobStatus, *, updated_before: int, limit: int) -> list[str]:
        """Ids of jobs in `status` untouched since `updated_before`, oldest first."""

    @abstractmethod
    def move_job(
        self,
        job_id: str,
        now: int,
        *,
        expect: frozenset[JobStatus],
        to: JobStatus,
        error: JobError | None = None,
    ) -> bool:
        """Compare-and-set the job's status from one of `expect` to `to` (finished now if
        `to` is terminal; any control request is dropped). Whether this call won.
        ValueError if the status table has no move from each of `expect` to `to`."""

    @abstractmethod
    def set_control(
        self,
        job_id: str,
        now: int,
        *,
        expect: JobStatus,
        was: Control | None,
        control: Control | None,
    ) -> bool:
        """Compare-and-set the request the job's worker acts on (None clears it), while
        the job's status is `expect` and its request still `was`. Whether this call won."""

    @abstractmethod
    def fine_tuned_models(self, project_id: str) -> list[tuple[str, int]]:
        """(model name, created_at) of the project's fine-tuned models, oldest first."""

    @abstractmethod
    def job_of_model(self, project_id: str, fine_tuned_model: str) -> Job | None:
        """The project's job that made this fine-tuned model, unless it was deleted."""

    @abstractmethod
    def delete_model(self, job_id: str, now: int) -> bool:
        """Mark the job's fine-tuned model deleted; False if it already was."""

    # -- the worker's hold on a job ----------------------------------------------------------

    @abstractmethod
    def claim_next(self, worker_id: str, now: int) -> Job | None:
        """Give the oldest queued job to `worker_id` (running, a new attempt); None if
        none is queued. Racing claimers each get a different job."""

    @abstractmethod
    def set_method(self, job_id: str, now: int, method: Method) -> None:
        """Record the job's method as resolved (its "auto" hyperparameters made numbers)."""

    @abstractmethod
    def renew_lease(
        self,
        job_id: str,
        worker_id: str,
        now: int,
        *,
        trained_tokens: int | None = None,
        estimated_finish: int | None = None,
    ) -> bool:
        """`worker_id` is alive: its heartbeat, with the progress it reports. False (and
        nothing changed) if that worker no longer holds the running job. Once it wins,
        the job's row is the transaction's until it ends: no other may change it."""

    @abstractmethod
    def record_event_batch(
        self,
        job_id: str,
        worker_id: str,
        now: int,
        *,
        batch: int,
        reported_step: int,
        drafts: Sequence[EventDraft],
    ) -> list[Event] | None:
        """Append a worker's numbered batch of events and remember it was applied (and the
        highest step reported so far), renewing the lease. None (and nothing written) if
        `worker_id` no longer holds the running job or a batch numbered `batch` or later
        was applied."""

    @abstractmethod
    def end_lease(
        self, job_id: str, worker_id: str, now: int, outcome: Outcome, *, as_read: Job | None = None
    ) -> bool:
        """Release `worker_id`'s hold on the running job, moving it to `outcome`.
        With `as_read` (the job as the caller read it to decide the outcome: recovery),
        only if its heartbeat and pending request are still those. False (and nothing
        changed) if that worker no longer holds it, or they changed."""

    @abstractmethod
    def running_ids_held_by(self, holder_prefix: str) -> list[str]:
        """Running jobs whose holder's name starts with `holder_prefix` (a key's workers)."""

    @abstractmethod
    def stale_running_ids(self, heartbeat_before: int) -> list[str]:
        """Running jobs whose worker has not been heard from since `heartbeat_before`."""

    # -- events --------------------------------------------------------------------------

    @abstractmethod
    def append_events(self, job_id: str, drafts: Sequence[EventDraft], now: int) -> list[Event]:
        """Append `drafts` in order with gap-free sequence numbers, even when several
        transactions append to one job at once."""

    @abstractmethod
    def event_log(self, job_id: str, project_id: str | None = None) -> EventLog | None:
        """Where the job's log stands; None if unknown or (with `project_id`) not the project's."""

    @abstractmethod
    def read_events(
        self, job_id: str, *, before_seq: int | None, limit: int
    ) -> tuple[EventLog, Page[Event]] | None:
        """Where the job's log stands and one page of it, newest first (with `before_seq`,
        only the events strictly older than it), read together in one statement; None if
        there is no such job."""

    @abstractmethod
    def read_events_since(
        self, job_id: str, *, after_seq: int, limit: int
    ) -> tuple[EventLog, Page[Event]] | None:
        """Where the job's log stands and up to `limit` events after `after_seq`, oldest
        first, read together in one statement (what a follower reads); None if there is
        no such job."""

    @abstractmethod
    def metrics_data(self, job_id: str) -> list[dict[str, Any]]:
        """The `data` of every metrics event of a job, oldest first."""

    @abstractmethod
    def metrics_runs(
        self, job_id: str, *, through_seq: int, run_events: int
    ) -> Iterator[list[dict[str, Any]]]:
        """The `data` of a job's metrics events up to `through_seq`, in runs of
        `run_events` consecutive events, oldest run first (one read each, lazily: consume
        it inside the transaction)."""

    # -- checkpoints -----------------------------------------------------------------------

    @abstractmethod
    def insert_checkpoint(self, checkpoint: Checkpoint) -> None: ...

    @abstractmethod
    def get_checkpoint(self, job_id: str, checkpoint_id: str) -> Checkpoint | None: ...

    @abstractmethod
    def checkpoint_at_step(self, job_id: str, step: int) -> Checkpoint | None: ...

    @abstractmethod
    def latest_checkpoint(self, job_id: str) -> Checkpoint | None: ...

    @abstractmethod
    def prune_checkpoints(self, job_id: str, keep: int, best_by: str | None = None) -> list[str]:
        """Delete all but the job's `keep` newest checkpoints; the ids of those deleted.

        With `best_by` (a metric's name), keep the `keep` best by that metric (the highest;
        those without it rank last, newest first) and the newest, which a resume needs."""

    # -- webhooks --------------------------------------------------------------------------

    @abstractmethod
    def insert_webhook(self, endpoint: WebhookEndpoint) -> None: ...

    @abstractmethod
    def list_webhooks(self, project_id: str) -> list[WebhookEndpoint]: ...

    @abstractmethod
    def delete_webhook(self, project_id: str, endpoint_id: str) -> bool:
        """Delete the endpoint and its deliveries; whether it was the project's."""

    @abstractmethod
    def queue_webhook_event(
        self, project_id: str, event_id: str, event_type: str, job_id: str, body: str, now: int
    ) -> None:
        """Put the event in the outbox of every endpoint of the project, due now."""

    @abstractmethod
    def claim_webhook_deliveries(
        self, now: int, lease_until: int, limit: int, busy: frozenset[str] = frozenset()
    ) -> list[tuple[WebhookDelivery, WebhookEndpoint]]:
        """Take deliveries that are due, holding them until `lease_until`: no other sender
        takes them meanwhile, and a sender that dies leaves them due again then. At most
        one per endpoint, and none of the `busy` endpoints (a try to them is under way):
        a slow endpoint then holds one sender, never all of them."""

    @abstractmethod
    def record_webhook_attempt(
        self,
        event_id: str,
        endpoint_id: str,
        now: int,
        *,
        delivered: bool,
        status: int | None,
        error: str | None,
        next_attempt_at: int | None,
    ) -> None:
        """How a try went; `next_attempt_at` None: no more tries (delivered, or given up)."""

    @abstractmethod
    def list_webhook_deliveries(
        self, project_id: str, endpoint_id: str
    ) -> list[WebhookDelivery] | None:
        """The endpoint's latest deliveries, newest first; None if not the project's."""

    # -- checkpoint permissions ----------------------------------------------------------

    @abstractmethod
    def owner_job_of_model(self, fine_tuned_model: str) -> Job | None:
        """The job, of any project, whose fine-tuned model (not deleted) is this."""

    @abstractmethod
    def existing_projects(self, project_ids: Iterable[str]) -> set[str]:
        """Those of `project_ids` that are projects."""

    @abstractmethod
    def find_permission(self, model: str, project_id: str) -> CheckpointPermission | None: ...

    @abstractmethod
    def has_permission(self, model: str, permission_id: str) -> bool:
        """Whether `permission_id` is a permission on `model` (a list's cursor)."""

    @abstractmethod
    def insert_permission(self, permission: CheckpointPermission, job_id: str) -> None:
        """Store a permission on a model of job `job_id` (it goes with the job)."""

    @abstractmethod
    def list_permissions(
        self,
        model: str,
        *,
        project_id: str | None,
        after: str | None,
        limit: int,
        descending: bool,
    ) -> Page[CheckpointPermission]: ...

    @abstractmethod
    def delete_permission(self, model: str, permission_id: str) -> bool:
        """Whether a permission of `model` with this id was there to delete."""

    @abstractmethod
    def shared_models(self, project_id: str) -> list[tuple[str, int, str]]:
        """(model name, created, owning project) of every model shared with the project
        that still exists."""

    @abstractmethod
    def shared_job_of_model(self, project_id: str, model: str) -> Job | None:
        """The job whose model (or checkpoint's model) `model` is shared with the project."""

    @abstractmethod
    def list_checkpoints(self, job_id: str, *, after: str | None, limit: int) -> Page[Checkpoint]:
        """Newest first (checkpoints are made in step order), past `after` (which must exist)."""

    # Operations.

    @abstractmethod
    def operations_snapshot(self, heartbeat_before: int) -> OperationsSnapshot:
        """Counts across all projects for the metrics (leases whose last heartbeat is
        older than `heartbeat_before` count as expired)."""


@dataclass(frozen=True, slots=True)
class Appended:
    """What one transaction of this process appended to jobs' logs, once it committed."""

    jobs: frozenset[str]  # every job it appended events to
    # Workers' reports' events, by job, in order: for a job here, all that the
    # transaction appended to it, and a report changes no status, so its followers can
    # be handed them as they are instead of reading the log again.
    reported: Mapping[str, Sequence[Event]]


class Store(ABC):
    """Transaction scopes over one database."""

    # Whether a read is cheap enough to run on the API's event loop (no network wait).
    inline_reads: bool = False
    # Events that this process's transactions appended and committed, since it started.
    events_appended: int = 0

    @abstractmethod
    def read(self) -> AbstractContextManager[Transaction]:
        """A read-only transaction: a consistent snapshot, never blocking writers."""

    async def read_events_async(
        self, job_id: str, *, before_seq: int | None, limit: int
    ) -> tuple[EventLog, Page[Event]] | None:
        """`Transaction.read_events` for an event loop (the API's hottest read): by
        default in a worker thread; a store with an async driver reads on the loop."""

        def read() -> tuple[EventLog, Page[Event]] | None:
            with self.read() as tx:
                return tx.read_events(job_id, before_seq=before_seq, limit=limit)

        return await asyncio.to_thread(read)

    async def read_events_since_async(
        self, job_id: str, *, after_seq: int, limit: int
    ) -> tuple[EventLog, Page[Event]] | None:
        """`Transaction.read_events_since` for an event loop (every live feed's read): on
        the loop when reads are inline, else by default in a worker thread; a store with
        an async driver reads on the loop."""

        def read() -> tuple[EventLog, Page[Event]] | None:
            with self.read() as tx:
                return tx.read_events_since(job_id, after_seq=after_seq, limit=limit)

        return read() if self.inline_reads else await asyncio.to_thread(read)

    async def watch_events(
        self,
        on_events: Callable[[frozenset[str]], None],
        *,
        on_listening: Callable[[], None] = lambda: None,
    ) -> None:
        """Until cancelled: call `on_events` with the ids of the jobs whose events another
        process committed, as soon as the store hears of it, and `on_listening` each time
        it starts to listen again after losing its channel (what was committed meanwhile
        went unheard). A store that cannot tell hears nothing; followers poll it."""
        await asyncio.Event().wait()

    async def aclose(self) -> None:  # noqa: B027 (most stores open nothing on a loop)
        """Close what the store opened on the event loop (before the loop ends)."""

    @abstractmethod
    def write(self) -> AbstractContextManager[Transaction]:
        """A read-write transaction that holds the write lock from its first statement."""

    @abstractmethod
    def on_events(self, listener: Callable[[Appended], None]) -> None:
        """Call `listener` with what a transaction of this process appended to jobs'
        logs, in the committing thread, after the commit."""

    @abstractmethod
    def dispose(self) -> None: ...


class BlobStore(ABC):
    """Bytes by key (`files/file-…`, `checkpoints/ftjob-…/ftckpt_….tar.gz`,
    `models/ftjob-…/adapter.tar.gz`): uploaded files, checkpoint and adapter archives,
    results. The one place every replica and worker reads them from: a local directory on
    one machine, an S3-compatible bucket when API replicas run on several.

    A blob is written whole or not at all: a reader never sees part of one. `get` raises
    `BlobMissing` for an absent key and every method raises `BlobUnavailable` when the
    store cannot be reached (nothing was changed then)."""

    url: str  # where the blobs live, as the operator named it (for messages)

    @abstractmethod
    def put(self, key: str, chunks: Iterable[bytes]) -> None:
        """Store the blob (replacing one under the same key), streamed: never held whole
        in memory. If `chunks` raises, nothing is stored and the error propagates."""

    @abstractmethod
    def get(self, key: str) -> Blob:
        """The blob, opened for a streamed read."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the blob if it exists."""

    @abstractmethod
    def size(self, key: str) -> int | None:
        """The blob's size in bytes, or None if there is none."""

    @abstractmethod
    def keys(self, prefix: str = "") -> Iterator[tuple[str, int]]:
        """Every blob under `prefix` (all of them by default), as (key, size)."""
