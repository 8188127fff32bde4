"""Every state change is one checked compare-and-set: each race forced in a fixed order.

On PostgreSQL (READ COMMITTED) a transaction that reads a job and then writes it can be
overtaken in between by another connection's commit. Each test here pauses one party's
transaction at a chosen call (`Paused`) and runs the other party (`Rival`) to its end,
or until it waits on a lock the paused one holds, then lets the paused one go on. It
then asserts what the job became, its events and its webhook outbox: a party that lost
changed nothing and said so. (SQLite's write transactions take the write lock at BEGIN,
so these interleavings cannot happen there.)
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any, cast

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import Engine, text

from openft import archives
from openft.api.app import create_app
from openft.domain import messages
from openft.domain.entities import (
    Control,
    EventDraft,
    Job,
    JobStatus,
    KeyScope,
    Principal,
    WebhookEndpoint,
)
from openft.domain.errors import JobChanged, LeaseLost
from openft.services.container import Services
from openft.services.jobs import JobService
from openft.services.worker import WorkerService
from openft.settings import Settings
from openft.store.database import make_admin_engine
from openft.store.interface import Appended, Store, Transaction
from openft.testing import queued_job
from openft.wiring import build_services
from tests.conftest import TINY

S = JobStatus
HEARTBEAT_TIMEOUT = 60
# A forced interleaving that does not settle within this many seconds is a failure.
SETTLE_SECONDS = 20.0
FIRST = "*"  # pause at a transaction's first call, whichever it is

pytestmark = [
    pytest.mark.postgres,
    pytest.mark.parametrize("database_url", ["postgres"], indirect=True),
]


class Clock:
    def __init__(self) -> None:
        self.now = 1_700_000_000

    def __call__(self) -> int:
        return self.now


class Rival:
    """The other party: an operation run on its own connection, in a thread."""

    def __init__(self, engine: Engine, action: Callable[[], Any]) -> None:
        self._engine = engine
        self._action = action
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        try:
            self._result = self._action()
        except BaseException as exc:  # handed to the test by `outcome`
            self._error = exc

    def _waits_for_a_lock(self) -> bool:
        with self._engine.connect() as conn:
            waiting = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                )
            ).scalar_one()
        return bool(waiting)

    def run(self) -> None:
        """Start it; return once it has finished (committed) or waits on a lock."""
        self._thread.start()
        deadline = time.monotonic() + SETTLE_SECONDS
        while self._thread.is_alive() and not self._waits_for_a_lock():
            assert time.monotonic() < deadline, "the rival neither finished nor waited"
            time.sleep(0.01)

    def outcome(self) -> Any:
        """What it returned (raising what it raised), once it has finished."""
        assert self._thread.ident is not None, "the paused party never let the rival run"
        self._thread.join(SETTLE_SECONDS)
        assert not self._thread.is_alive(), "the rival never finished"
        if self._error is not None:
            raise self._error
        return self._result


class _PausingTransaction:
    """A transaction that runs the rival once, around the first call to one method
    (`FIRST`: to any)."""

    def __init__(self, tx: Transaction, at: str, after: bool, rival: Rival) -> None:
        self._tx, self._at, self._after, self._rival = tx, at, after, rival

    def __getattr__(self, name: str) -> Any:
        found = getattr(self._tx, name)
        if self._at not in (name, FIRST) or not callable(found):
            return found

        def paused(*args: Any, **kwargs: Any) -> Any:
            self._at = ""  # once
            if not self._after:
                self._rival.run()
            result = found(*args, **kwargs)
            if self._after:
                self._rival.run()
            return result

        return paused


class Paused(Store):
    """The store as the paused party sees it: its next write transaction lets `rival`
    run right before (or after) its first call to `at`."""

    def __init__(self, db: Store, at: str, rival: Rival, *, after: bool) -> None:
        self._db, self._at, self._rival, self._after = db, at, rival, after
        self._used = False

    def read(self) -> Any:
        return self._db.read()

    @contextmanager
    def write(self) -> Iterator[Transaction]:
        with self._db.write() as tx:
            if self._used:
                yield tx
                return
            self._used = True
            yield cast(Transaction, _PausingTransaction(tx, self._at, self._after, self._rival))

    def on_events(self, listener: Callable[[Appended], None]) -> None:
        self._db.on_events(listener)

    def dispose(self) -> None:
        """The database is the fixture's to dispose of."""


class World:
    """The services of one process over a fresh PostgreSQL database, on a clock the test
    moves, a project with a webhook endpoint (so terminal moves fill its outbox), and
    the means to pause one party while a rival runs."""

    def __init__(self, services: Services, clock: Clock, engine: Engine, tmp: Path) -> None:
        self.services, self.clock, self._engine = services, clock, engine
        self.key, record = services.keys.create("acme", KeyScope.PROJECT)
        self.principal: Principal = record.principal
        self.endpoint = WebhookEndpoint(
            "we_races", self.principal.project_id, "https://hooks.example/openft", "whsec_x", 0
        )
        with services.db.write() as tx:
            tx.insert_webhook(self.endpoint)
        adapter = tmp / "adapter"
        adapter.mkdir()
        (adapter / "adapter_config.json").write_text("{}")
        self.adapter = archives.pack(adapter, tmp / "adapter.tar.gz").read_bytes()

    def rival(self, action: Callable[[], Any]) -> Rival:
        return Rival(self._engine, action)

    def paused(self, at: str, rival: Rival, *, after: bool = True) -> Store:
        return Paused(self.services.db, at, rival, after=after)

    def jobs(self, store: Store) -> JobService:
        s = self.services
        return JobService(store, s.files, s.models, clock=self.clock)

    def worker(self, store: Store) -> WorkerService:
        s = self.services
        return WorkerService(
            store,
            s.files,
            s.models,
            s.worker.artifacts,
            heartbeat_timeout=HEARTBEAT_TIMEOUT,
            clock=self.clock,
        )

    def job(self, job_id: str) -> Job:
        return self.services.jobs.get(self.principal, job_id)

    def log(self, job_id: str) -> list[str]:
        page = self.services.events.list(self.principal, job_id, limit=1000)
        return [event.message for event in reversed(page.items)]

    def outbox(self) -> list[tuple[str, str]]:
        """(job id, event type) of every webhook event queued, oldest first."""
        with self.services.db.read() as tx:
            deliveries = tx.list_webhook_deliveries(self.principal.project_id, self.endpoint.id)
        assert deliveries is not None
        return [(d.job_id, d.type) for d in reversed(deliveries)]

    def running(self, worker_id: str = "w1") -> str:
        job_id = queued_job(self.services, self.principal)
        assignment = self.services.worker.claim(worker_id)
        assert assignment is not None and assignment.job.id == job_id
        return job_id

    def silent(self) -> None:
        """Let every lease taken so far go stale."""
        self.clock.now += HEARTBEAT_TIMEOUT + 1


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    clock = Clock()
    settings = Settings(
        data_dir=tmp_path, database_url=database_url, heartbeat_timeout_seconds=HEARTBEAT_TIMEOUT
    )
    services = build_services(settings, [TINY], clock)
    engine = make_admin_engine(database_url)
    yield World(services, clock, engine, tmp_path)
    engine.dispose()
    services.close()


def metrics(step: int) -> EventDraft:
    return messages.step_metrics({"step": step, "total_steps": 10, "train_loss": 1.0 / step})


WORKER_LOST = "The worker running this job stopped responding"
STARTED = messages.started("w1").message
CANCELLED = messages.cancelled().message
CANCEL_REQUESTED = messages.cancel_requested().message


# -- the API's requests against workers ------------------------------------------------


def test_a_claim_between_a_cancels_read_and_write_wins_and_the_cancel_says_so(
    world: World,
) -> None:
    job_id = queued_job(world.services, world.principal)
    claim = world.rival(lambda: world.services.worker.claim("w1"))
    jobs = world.jobs(world.paused("get_job", claim))
    app = create_app(replace(world.services, jobs=jobs))
    answer = TestClient(app).post(
        f"/v1/fine_tuning/jobs/{job_id}/cancel", headers={"Authorization": f"Bearer {world.key}"}
    )
    assert answer.status_code == 409
    error = answer.json()["error"]
    assert error["code"] == "job_status_changed" and error["param"] == "fine_tuning_job_id"
    assert error["message"].endswith("Its status is now running.")
    assert claim.outcome().job.id == job_id
    job = world.job(job_id)
    assert job.status is S.RUNNING and job.control is None and job.lease is not None
    assert world.log(job_id)[-1] == STARTED and CANCELLED not in world.log(job_id)
    assert world.outbox() == []
    # Asked again, the cancel acts on the job as it now is: its worker is asked to stop.
    assert world.services.jobs.cancel(world.principal, job_id).control is Control.CANCEL


def test_a_cancel_that_writes_first_keeps_the_claimer_off(world: World) -> None:
    job_id = queued_job(world.services, world.principal)
    claim = world.rival(lambda: world.services.worker.claim("w1"))
    cancelled = world.jobs(world.paused("move_job", claim)).cancel(world.principal, job_id)
    assert claim.outcome() is None  # the row was the cancel's: the claimer skipped it
    assert cancelled.status is S.CANCELLED and world.job(job_id).lease is None
    assert world.log(job_id)[-1] == CANCELLED and STARTED not in world.log(job_id)
    assert world.outbox() == [(job_id, "fine_tuning.job.cancelled")]
    assert world.services.worker.claim("w1") is None


def test_a_claim_between_a_pauses_read_and_write_wins_and_the_pause_says_so(
    world: World,
) -> None:
    job_id = queued_job(world.services, world.principal)
    claim = world.rival(lambda: world.services.worker.claim("w1"))
    jobs = world.jobs(world.paused("get_job", claim))
    with pytest.raises(JobChanged, match="Its status is now running"):
        jobs.pause(world.principal, job_id)
    assert claim.outcome().job.id == job_id
    job = world.job(job_id)
    assert job.status is S.RUNNING and job.control is None
    assert world.log(job_id)[-1] == STARTED
    assert world.outbox() == []


def test_a_completion_between_a_cancels_read_and_write_wins(world: World) -> None:
    job_id = world.running()
    complete = world.rival(
        lambda: world.services.worker.complete(
            job_id, "w1", trained_tokens=5, adapter=[world.adapter]
        )
    )
    jobs = world.jobs(world.paused("get_job", complete))
    with pytest.raises(JobChanged, match="Its status is now succeeded"):
        jobs.cancel(world.principal, job_id)
    assert complete.outcome().status is S.SUCCEEDED
    assert world.job(job_id).status is S.SUCCEEDED
    log = world.log(job_id)
    assert log[-1] == messages.succeeded().message and CANCEL_REQUESTED not in log
    assert world.outbox() == [(job_id, "fine_tuning.job.succeeded")]


def test_a_cancel_while_a_worker_reports_its_pause_waits_and_loses(world: World) -> None:
    job_id = world.running()
    world.services.jobs.pause(world.principal, job_id)
    cancel = world.rival(lambda: world.services.jobs.cancel(world.principal, job_id))
    stopped = world.worker(world.paused("get_job", cancel)).stopped(job_id, "w1")
    assert stopped.status is S.PAUSED  # as its worker was asked, and did
    with pytest.raises(JobChanged, match="Its status is now paused"):
        cancel.outcome()
    assert world.log(job_id)[-1] == messages.paused().message
    assert CANCEL_REQUESTED not in world.log(job_id)
    assert world.outbox() == []


# -- workers against recovery ----------------------------------------------------------


def test_a_heartbeat_between_recoverys_read_and_write_keeps_the_job(world: World) -> None:
    job_id = world.running()
    world.silent()
    heartbeat = world.rival(lambda: world.services.worker.heartbeat(job_id, "w1"))
    assert world.worker(world.paused("get_job", heartbeat)).recover_stale() == 0
    assert heartbeat.outcome() is None
    job = world.job(job_id)
    assert job.status is S.RUNNING and job.lease is not None
    assert job.lease.worker_id == "w1" and job.lease.heartbeat_at == world.clock.now
    assert not any(m.startswith(WORKER_LOST) for m in world.log(job_id))


def test_a_recovery_before_a_heartbeats_write_wins_and_the_worker_is_told(
    world: World,
) -> None:
    job_id = world.running()
    world.silent()
    recovery = world.rival(world.services.worker.recover_stale)
    worker = world.worker(world.paused("renew_lease", recovery, after=False))
    with pytest.raises(LeaseLost):
        worker.heartbeat(job_id, "w1", trained_tokens=99)
    assert recovery.outcome() == 1
    job = world.job(job_id)
    assert job.status is S.QUEUED and job.lease is None and job.trained_tokens != 99
    assert world.log(job_id)[-1].startswith(WORKER_LOST)


def test_a_report_between_recoverys_read_and_write_keeps_the_job(world: World) -> None:
    job_id = world.running()
    world.silent()
    report = world.rival(lambda: world.services.worker.report(job_id, "w1", 1, [metrics(1)]))
    assert world.worker(world.paused("get_job", report)).recover_stale() == 0
    assert report.outcome() is True
    assert world.job(job_id).status is S.RUNNING
    log = world.log(job_id)
    assert log[-1] == metrics(1).message and not any(m.startswith(WORKER_LOST) for m in log)


def test_a_recovery_between_a_reports_read_and_write_wins_and_nothing_is_appended(
    world: World,
) -> None:
    job_id = world.running()
    world.silent()
    recovery = world.rival(world.services.worker.recover_stale)
    worker = world.worker(world.paused("get_hold", recovery))  # a report reads the hold
    with pytest.raises(LeaseLost):
        worker.report(job_id, "w1", 1, [metrics(1)])
    assert recovery.outcome() == 1
    job = world.job(job_id)
    assert job.status is S.QUEUED and job.lease is None
    log = world.log(job_id)
    assert log[-1].startswith(WORKER_LOST) and metrics(1).message not in log


def test_a_recovery_while_a_checkpoint_is_recorded_waits_and_loses(world: World) -> None:
    job_id = world.running()
    world.silent()
    recovery = world.rival(world.services.worker.recover_stale)
    worker = world.worker(world.paused("insert_checkpoint", recovery, after=False))
    checkpoint = worker.add_checkpoint(job_id, "w1", 4, {"step": 4}, [b"state"])
    assert recovery.outcome() == 0  # the upload renewed the hold it was waiting on
    job = world.job(job_id)
    assert job.status is S.RUNNING and job.lease is not None and job.lease.worker_id == "w1"
    log = world.log(job_id)
    assert log[-1].startswith("Checkpoint created at step 4")
    assert not any(m.startswith(WORKER_LOST) for m in log)
    listed = world.services.checkpoints.list(world.principal, job_id).items
    assert listed == [checkpoint]


def test_a_recovery_before_a_checkpoints_record_wins_and_nothing_is_kept(
    world: World,
) -> None:
    """Between the upload's check (before its archive is stored) and its record."""
    job_id = world.running()
    world.silent()
    recovery = world.rival(world.services.worker.recover_stale)
    worker = world.worker(world.paused(FIRST, recovery, after=False))
    with pytest.raises(LeaseLost):
        worker.add_checkpoint(job_id, "w1", 4, {"step": 4}, [b"state"])
    assert recovery.outcome() == 1
    assert world.job(job_id).status is S.QUEUED
    assert world.services.checkpoints.list(world.principal, job_id).items == []
    assert world.log(job_id)[-1].startswith(WORKER_LOST)


def test_a_cancel_between_recoverys_read_and_write_is_honoured_not_lost(
    world: World,
) -> None:
    job_id = world.running()
    world.silent()
    cancel = world.rival(lambda: world.services.jobs.cancel(world.principal, job_id))
    assert world.worker(world.paused("get_job", cancel)).recover_stale() == 0
    assert cancel.outcome().control is Control.CANCEL
    job = world.job(job_id)
    assert job.status is S.RUNNING and job.control is Control.CANCEL
    assert world.outbox() == []
    # The next sweep decides on the request it now reads: the job is cancelled.
    assert world.services.worker.recover_stale() == 1
    assert world.job(job_id).status is S.CANCELLED
    log = world.log(job_id)
    assert log[-1] == CANCELLED and not any(m.startswith(WORKER_LOST) for m in log)
    assert world.outbox() == [(job_id, "fine_tuning.job.cancelled")]
