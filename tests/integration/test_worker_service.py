"""The worker protocol's use cases on both databases: claims, leases, batches, recovery."""

from __future__ import annotations

import threading

import pytest

from openft.domain.entities import EventDraft, EventType, JobStatus, Principal
from openft.domain.errors import BlobMissing, LeaseLost, NotFound
from openft.domain.messages import step_metrics
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.testing.data import chat_file


def queued(services: Services, principal: Principal, model: str = "tiny", **kwargs: object) -> str:
    train = services.files.upload(principal, "train.jsonl", "fine-tune", [chat_file(20)]).id
    job = services.jobs.create(principal, NewJob(model=model, training_file=train, **kwargs))  # type: ignore[arg-type]
    services.jobs.validate(job.id)
    return job.id


def messages(services: Services, principal: Principal, job_id: str) -> list[str]:
    return [e.message for e in reversed(services.events.list(principal, job_id, limit=1000).items)]


def metrics(step: int) -> EventDraft:
    return step_metrics({"step": step, "total_steps": 10, "train_loss": 1.0 / step})


def test_claim_resolves_hyperparameters_and_announces_the_start(
    services: Services, principal: Principal
) -> None:
    job_id = queued(services, principal, suffix="s1")
    assignment = services.worker.claim("w1")
    assert assignment is not None and assignment.job.id == job_id and assignment.attempt == 1
    hyper = assignment.job.method.hyperparameters
    assert (hyper.n_epochs, hyper.batch_size, hyper.learning_rate_multiplier) == (
        5,
        1,
        1.0,
    )  # 20 examples
    assert assignment.job.status is JobStatus.RUNNING and assignment.resume_from is None
    assert assignment.fine_tuned_model == f"ft:tiny:acme:s1:{job_id}"
    assert messages(services, principal, job_id)[-1] == "Fine-tuning job started"
    assert services.worker.claim("w2") is None


def test_racing_claimers_take_each_job_exactly_once(
    services: Services, principal: Principal
) -> None:
    jobs = {queued(services, principal) for _ in range(12)}
    claimed: list[str] = []
    lock = threading.Lock()

    def claimer(name: str) -> None:
        while (assignment := services.worker.claim(name)) is not None:
            with lock:
                claimed.append(assignment.job.id)

    threads = [threading.Thread(target=claimer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(jobs)


def test_batches_are_applied_once_and_steps_reported_once(
    services: Services, principal: Principal
) -> None:
    job_id = queued(services, principal)
    services.worker.claim("w1")
    assert services.worker.report(job_id, "w1", 1, [metrics(1), metrics(2)])
    assert not services.worker.report(job_id, "w1", 1, [metrics(1), metrics(2)])  # a retry
    assert services.worker.report(
        job_id, "w1", 2, [metrics(2), metrics(3)]
    )  # step 2 again: dropped
    steps = [
        e.data["step"]
        for e in services.events.list(principal, job_id, limit=100).items
        if e.type is EventType.METRICS
    ]
    assert steps == [3, 2, 1]


def test_only_the_lease_holder_may_write(services: Services, principal: Principal) -> None:
    job_id = queued(services, principal)
    services.worker.claim("w1")
    for call in (
        lambda: services.worker.heartbeat(job_id, "w2"),
        lambda: services.worker.report(job_id, "w2", 1, [metrics(1)]),
        lambda: services.worker.stopped(job_id, "w2"),
    ):
        with pytest.raises(LeaseLost):
            call()


def test_heartbeat_carries_control_and_stopped_honours_it(
    services: Services, principal: Principal
) -> None:
    job_id = queued(services, principal)
    services.worker.claim("w1")
    assert services.worker.heartbeat(job_id, "w1", trained_tokens=10) is None
    services.jobs.pause(principal, job_id)
    assert services.worker.heartbeat(job_id, "w1") == "pause"
    assert services.worker.stopped(job_id, "w1").status is JobStatus.PAUSED
    services.jobs.resume(principal, job_id)
    assert services.worker.claim("w2").attempt == 2  # type: ignore[union-attr]
    services.jobs.cancel(principal, job_id)
    assert services.worker.heartbeat(job_id, "w2") == "cancel"
    cancelled = services.worker.stopped(job_id, "w2")
    assert cancelled.status is JobStatus.CANCELLED and cancelled.lease is None
    assert messages(services, principal, job_id)[-1] == "Fine-tuning job cancelled"


def test_silent_workers_are_recovered_then_failed_after_max_attempts(
    services: Services, principal: Principal
) -> None:
    services.worker.heartbeat_timeout = -1  # every lease is already stale
    job_id = queued(services, principal)
    for attempt in range(1, services.worker.max_attempts + 1):
        assignment = services.worker.claim(f"w{attempt}")
        assert assignment is not None and assignment.attempt == attempt
        assert services.worker.recover_stale() == 1
    job = services.jobs.get(principal, job_id)
    assert job.status is JobStatus.FAILED and job.error is not None
    assert job.error.code == "worker_lost"
    log = messages(services, principal, job_id)
    requeued = [m for m in log if m.startswith("The worker running this job stopped responding")]
    assert len(requeued) == services.worker.max_attempts - 1
    assert "Fine-tuning job resumed from the start (attempt 2)" in log


def test_recovery_honours_a_pending_cancel(services: Services, principal: Principal) -> None:
    services.worker.heartbeat_timeout = -1
    job_id = queued(services, principal)
    services.worker.claim("w1")
    services.jobs.cancel(principal, job_id)
    services.worker.recover_stale()
    assert services.jobs.get(principal, job_id).status is JobStatus.CANCELLED


def test_checkpoints_are_listed_newest_first_and_resumed_from(
    services: Services, principal: Principal
) -> None:
    job_id = queued(services, principal, suffix="c")
    services.worker.claim("w1")
    first = services.worker.add_checkpoint(job_id, "w1", 4, {"step": 4, "train_loss": 0.5}, [b"a"])
    again = services.worker.add_checkpoint(job_id, "w1", 4, {"step": 4}, [b"a"])
    assert again == first  # a retried upload is the same checkpoint
    second = services.worker.add_checkpoint(job_id, "w1", 8, {"step": 8}, [b"b"])
    page = services.checkpoints.list(principal, job_id)
    assert [c.step_number for c in page.items] == [8, 4]
    assert second.fine_tuned_model_checkpoint == f"ft:tiny:acme:c:{job_id}:ckpt-step-8"
    assert services.checkpoints.list(principal, job_id, after=second.id).items == [first]
    services.worker.heartbeat_timeout = -1
    services.worker.recover_stale()
    assignment = services.worker.claim("w2")
    assert assignment is not None and assignment.resume_from == second
    assert b"".join(services.worker.checkpoint_archive(job_id, "w2", second.id).chunks) == b"b"


def test_only_the_newest_checkpoints_are_kept_and_the_older_archives_removed(
    services: Services, principal: Principal
) -> None:
    job_id = queued(services, principal)
    services.worker.claim("w1")
    made = [
        services.worker.add_checkpoint(job_id, "w1", step, {"step": step}, [str(step).encode()])
        for step in (2, 4, 6, 8, 10)
    ]
    page = services.checkpoints.list(principal, job_id)
    assert [c.step_number for c in page.items] == [10, 8, 6]  # the default keeps 3
    for gone in made[:2]:
        with pytest.raises(NotFound):
            services.worker.checkpoint_archive(job_id, "w1", gone.id)
        with pytest.raises(BlobMissing):
            services.worker.artifacts.checkpoint_archive(job_id, gone.id)
    kept = b"".join(services.worker.checkpoint_archive(job_id, "w1", made[-1].id).chunks)
    assert kept == b"10"
    created = [m for m in messages(services, principal, job_id) if m.startswith("Checkpoint")]
    assert len(created) == 5  # the log keeps every announcement


def test_a_job_on_a_fine_tuned_model_names_its_root_and_fails_once_that_model_is_gone(
    services: Services, principal: Principal
) -> None:
    parent_id = queued(services, principal)
    services.worker.claim("w1")
    parent = services.worker.complete(parent_id, "w1", trained_tokens=1, adapter=[b"adapter"])
    assert parent.fine_tuned_model == f"ft:tiny:acme::{parent_id}"

    child_id = queued(services, principal, model=parent.fine_tuned_model)
    assignment = services.worker.claim("w1")
    assert assignment is not None and assignment.start is not None
    assert assignment.start.job_id == parent_id and assignment.base_model.name == "tiny"
    assert b"".join(services.worker.start_archive(child_id, "w1").chunks) == b"adapter"
    child = services.worker.complete(child_id, "w1", trained_tokens=1, adapter=[b"second"])
    assert child.fine_tuned_model == f"ft:tiny:acme::{child_id}"  # the root base, not ft:ft:…

    # A job created on a model that is deleted before a worker takes it fails, once.
    orphan_id = queued(services, principal, model=child.fine_tuned_model)
    services.models.delete(principal.project_id, child.fine_tuned_model)
    assert services.worker.claim("w1") is None
    orphan = services.jobs.get(principal, orphan_id)
    assert orphan.status is JobStatus.FAILED and orphan.error is not None
    assert orphan.error.code == "model_not_available"
    assert services.worker.claim("w1") is None
