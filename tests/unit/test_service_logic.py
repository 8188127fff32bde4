"""Service logic on in-memory SQLite, no server: control requests, leases and recovery
on a clock the test moves."""

from __future__ import annotations

from pathlib import Path

import pytest

from openft import archives
from openft.domain.entities import (
    Control,
    EventDraft,
    JobError,
    JobStatus,
    Principal,
)
from openft.domain.errors import InvalidTransition, LeaseLost
from openft.services.container import Services
from openft.testing import queued_job
from tests.unit.conftest import Clock


def messages(services: Services, principal: Principal, job_id: str) -> list[str]:
    return [e.message for e in reversed(services.events.list(principal, job_id, limit=100).items)]


def test_a_queued_job_pauses_resumes_and_cancels_at_once(
    services: Services, principal: Principal, clock: Clock
) -> None:
    job_id = queued_job(services, principal)
    assert services.jobs.pause(principal, job_id).status is JobStatus.PAUSED
    with pytest.raises(InvalidTransition, match="Cannot pause"):
        services.jobs.pause(principal, job_id)
    assert services.jobs.resume(principal, job_id).status is JobStatus.QUEUED
    clock.now += 5
    cancelled = services.jobs.cancel(principal, job_id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at == clock.now
    assert messages(services, principal, job_id)[-3:] == [
        "Fine-tuning job paused",
        "Fine-tuning job resumed, moving job to queued state",
        "Fine-tuning job cancelled",
    ]


def test_a_running_job_is_asked_and_its_worker_decides(
    services: Services, principal: Principal
) -> None:
    job_id = queued_job(services, principal)
    assert services.worker.claim("w1") is not None
    paused = services.jobs.pause(principal, job_id)
    assert paused.status is JobStatus.RUNNING and paused.control is Control.PAUSE
    assert services.worker.heartbeat(job_id, "w1") is Control.PAUSE
    assert services.jobs.resume(principal, job_id).control is None  # changed its mind
    assert services.jobs.cancel(principal, job_id).control is Control.CANCEL
    stopped = services.worker.stopped(job_id, "w1")
    assert stopped.status is JobStatus.CANCELLED and stopped.control is None
    assert stopped.lease is None


def test_a_silent_worker_loses_its_job_and_cannot_write_into_it(
    services: Services, principal: Principal, clock: Clock
) -> None:
    job_id = queued_job(services, principal)
    assert services.worker.claim("w1") is not None
    clock.now += 30
    assert services.worker.recover_stale() == 0  # heard from recently enough
    clock.now += 61
    assert services.worker.recover_stale() == 1
    job = services.jobs.get(principal, job_id)
    assert job.status is JobStatus.QUEUED and job.lease is None
    with pytest.raises(LeaseLost):
        services.worker.report(job_id, "w1", 1, [EventDraft("late")])
    with pytest.raises(LeaseLost):
        services.worker.fail(job_id, "w1", JobError("x", "too late"))
    assignment = services.worker.claim("w2")
    assert assignment is not None and assignment.attempt == 2
    assert "stopped responding" in messages(services, principal, job_id)[-2]


def test_the_last_allowed_attempt_fails_the_job(
    services: Services, principal: Principal, clock: Clock
) -> None:
    job_id = queued_job(services, principal)
    for attempt in range(3):
        assert services.worker.claim(f"w{attempt}") is not None
        clock.now += 61
        services.worker.recover_stale()
    job = services.jobs.get(principal, job_id)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "worker_lost" and job.finished_at == clock.now


def test_every_way_a_job_ends_queues_its_webhook_event_once(
    services: Services, principal: Principal, tmp_path: Path
) -> None:
    endpoint = services.webhooks.add(principal, "http://127.0.0.1:9/hooks")
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text("{}")
    archive = archives.pack(adapter, tmp_path / "adapter.tar.gz").read_bytes()
    succeeded, failed, cancelled, stopped = (queued_job(services, principal) for _ in range(4))
    services.jobs.cancel(principal, cancelled)  # queued: at once
    for job_id in (succeeded, failed, stopped):
        assignment = services.worker.claim(f"w-{job_id}")
        assert assignment is not None and assignment.job.id == job_id
    services.worker.complete(succeeded, f"w-{succeeded}", trained_tokens=1, adapter=[archive])
    services.worker.fail(failed, f"w-{failed}", JobError("x", "broke"))
    services.jobs.cancel(principal, stopped)  # running: the worker stops it
    services.worker.stopped(stopped, f"w-{stopped}")
    queued = {d.job_id: d.type for d in services.webhooks.deliveries(principal, endpoint.id)}
    assert queued == {
        succeeded: "fine_tuning.job.succeeded",
        failed: "fine_tuning.job.failed",
        cancelled: "fine_tuning.job.cancelled",
        stopped: "fine_tuning.job.cancelled",
    }
