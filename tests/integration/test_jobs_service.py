"""Jobs through the service layer on both databases: lifecycle, validation, control, tenancy."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest

from openft.domain.entities import Job, JobStatus, MetadataFilter, Principal
from openft.domain.errors import InvalidCursor, InvalidRequest, InvalidTransition, NotFound
from openft.services.container import Services
from openft.services.jobs import NewJob
from openft.testing.data import chat_file, chat_line, preference_file


def upload(services: Services, principal: Principal, data: bytes, name: str = "train.jsonl") -> str:
    return services.files.upload(principal, name, "fine-tune", [data]).id


def messages(services: Services, principal: Principal, job_id: str) -> list[str]:
    return [e.message for e in reversed(services.events.list(principal, job_id, limit=100).items)]


def test_a_valid_job_is_validated_and_queued(services: Services, principal: Principal) -> None:
    train, valid = (
        upload(services, principal, chat_file(12)),
        upload(services, principal, chat_file(3)),
    )
    job = services.jobs.create(
        principal, NewJob(model="tiny", training_file=train, validation_file=valid)
    )
    assert job.status is JobStatus.VALIDATING_FILES
    queued = services.jobs.validate(job.id)
    assert queued is not None and queued.status is JobStatus.QUEUED
    assert messages(services, principal, job.id) == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {train} and validation file: {valid}",
        "Files validated, moving job to queued state",
    ]
    assert services.jobs.validate(job.id) is None  # already moved on: nothing happens twice


def test_a_file_in_the_wrong_format_fails_the_job_naming_file_and_line(
    services: Services, principal: Principal
) -> None:
    train = upload(services, principal, chat_file(12))
    job = services.jobs.create(
        principal, NewJob(model="tiny", training_file=train, method={"type": "dpo"})
    )
    failed = services.jobs.validate(job.id)
    assert failed is not None and failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.param == "training_file"
    assert failed.error.code == "invalid_training_file"
    assert f"Invalid file {train}, line 1: expected the preference format" in failed.error.message
    assert failed.finished_at is not None
    last = services.events.list(principal, job.id, limit=1).items[0]
    assert last.level.value == "error" and last.message == failed.error.message


def test_too_few_examples_fail_validation(services: Services, principal: Principal) -> None:
    train = upload(services, principal, chat_file(3))
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    failed = services.jobs.validate(job.id)
    assert failed is not None and "at least 10 are required" in failed.error.message  # type: ignore[union-attr]


def test_dpo_on_preference_data_is_queued(services: Services, principal: Principal) -> None:
    train = upload(services, principal, preference_file(12))
    job = services.jobs.create(
        principal,
        NewJob(
            model="tiny",
            training_file=train,
            method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.1}}},
        ),
    )
    assert job.method.hyperparameters.beta == 0.1
    assert services.jobs.validate(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("request_", "param"),
    [
        (NewJob(model="gpt-4o", training_file="X"), "model"),
        (NewJob(model="tiny", training_file="file-missing"), "training_file"),
        (
            NewJob(model="tiny", training_file="X", validation_file="file-missing"),
            "validation_file",
        ),
        (NewJob(model="tiny", training_file="X", integrations=[{"type": "wandb"}]), "integrations"),
    ],
)
def test_bad_create_requests_change_nothing(
    services: Services, principal: Principal, request_: NewJob, param: str
) -> None:
    train = upload(services, principal, chat_file())
    if request_.training_file == "X":
        request_ = replace(request_, training_file=train)
    with pytest.raises(InvalidRequest) as raised:
        services.jobs.create(principal, request_)
    assert raised.value.param == param
    assert services.jobs.list(principal).items == []


def test_cancel_pause_resume_follow_the_status_machine(
    services: Services, principal: Principal
) -> None:
    train = upload(services, principal, chat_file())
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    with pytest.raises(InvalidTransition):
        services.jobs.resume(principal, job.id)
    services.jobs.validate(job.id)
    assert services.jobs.pause(principal, job.id).status is JobStatus.PAUSED
    with pytest.raises(InvalidTransition):
        services.jobs.pause(principal, job.id)
    assert services.jobs.resume(principal, job.id).status is JobStatus.QUEUED
    cancelled = services.jobs.cancel(principal, job.id)
    assert cancelled.status is JobStatus.CANCELLED and cancelled.finished_at is not None
    for action in (services.jobs.cancel, services.jobs.pause, services.jobs.resume):
        with pytest.raises(InvalidTransition, match="its status is cancelled"):
            action(principal, job.id)
    assert messages(services, principal, job.id)[-3:] == [
        "Fine-tuning job paused",
        "Fine-tuning job resumed, moving job to queued state",
        "Fine-tuning job cancelled",
    ]


def running_job(services: Services, principal: Principal) -> Job:
    """A job a worker has claimed."""
    train = upload(services, principal, chat_file())
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    services.jobs.validate(job.id)
    assignment = services.worker.claim("w1")
    assert assignment is not None and assignment.job.id == job.id
    return assignment.job


def test_cancelling_a_running_job_is_a_request_for_the_worker(
    services: Services, principal: Principal
) -> None:
    job = running_job(services, principal)
    requested = services.jobs.cancel(principal, job.id)
    assert requested.status is JobStatus.RUNNING and requested.control == "cancel"
    assert messages(services, principal, job.id)[-1].startswith("Cancellation requested")
    with pytest.raises(InvalidTransition):
        services.jobs.pause(principal, job.id)  # a job being cancelled cannot be paused


def test_pausing_a_running_job_is_a_request_that_resume_withdraws(
    services: Services, principal: Principal
) -> None:
    job = running_job(services, principal)
    paused = services.jobs.pause(principal, job.id)
    assert (paused.status, paused.control) == (JobStatus.RUNNING, "pause")
    resumed = services.jobs.resume(principal, job.id)
    assert (resumed.status, resumed.control) == (JobStatus.RUNNING, None)


def test_racing_validators_move_a_job_once(services: Services, principal: Principal) -> None:
    train = upload(services, principal, chat_file())
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    results: list[object] = []
    threads = [
        threading.Thread(target=lambda: results.append(services.jobs.validate(job.id)))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(result is not None for result in results) == 1
    assert (
        messages(services, principal, job.id).count("Files validated, moving job to queued state")
        == 1
    )


def test_stale_validating_jobs_are_picked_up(services: Services, principal: Principal) -> None:
    train = upload(services, principal, chat_file())
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    assert services.jobs.validate_stale(older_than_seconds=3600) == 0
    assert services.jobs.validate_stale(older_than_seconds=0) == 1
    assert services.jobs.get(principal, job.id).status is JobStatus.QUEUED


def test_list_pages_newest_first_and_filters_metadata(
    services: Services, principal: Principal
) -> None:
    train = upload(services, principal, chat_file())
    created = [
        services.jobs.create(principal, NewJob(model="tiny", training_file=train, metadata=meta)).id
        for meta in (
            {"team": "a"},
            None,
            {"team": "b", "env": "prod"},
            {"team": "a", "env": "prod"},
        )
    ]
    first = services.jobs.list(principal, limit=3)
    assert [j.id for j in first.items] == created[::-1][:3] and first.has_more
    rest = services.jobs.list(principal, after=first.items[-1].id, limit=3)
    assert [j.id for j in rest.items] == [created[0]] and not rest.has_more
    team_a = services.jobs.list(principal, metadata=MetadataFilter({"team": "a"}))
    assert [j.id for j in team_a.items] == [created[3], created[0]]
    both = services.jobs.list(principal, metadata=MetadataFilter({"team": "a", "env": "prod"}))
    assert [j.id for j in both.items] == [created[3]]
    assert [j.id for j in services.jobs.list(principal, metadata=MetadataFilter(None)).items] == [
        created[1]
    ]
    with pytest.raises(InvalidCursor):
        services.jobs.list(principal, after="ftjob-unknown")


def test_another_projects_jobs_and_files_do_not_exist(
    services: Services, principal: Principal
) -> None:
    train = upload(services, principal, chat_file())
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    _key, other_key = services.keys.create("globex")
    other = other_key.principal
    for call in (
        lambda: services.jobs.get(other, job.id),
        lambda: services.jobs.cancel(other, job.id),
        lambda: services.events.list(other, job.id),
        lambda: services.files.get(other, train),
        lambda: services.files.delete(other, train),
    ):
        with pytest.raises(NotFound):
            call()
    with pytest.raises(InvalidRequest, match="does not exist"):
        services.jobs.create(other, NewJob(model="tiny", training_file=train))
    assert services.jobs.list(other).items == [] and services.files.list(other).items == []


def test_weight_zero_lines_validate(services: Services, principal: Principal) -> None:
    data = "\n".join(chat_line(i, weight=i % 2) for i in range(10)).encode()
    train = upload(services, principal, data)
    job = services.jobs.create(principal, NewJob(model="tiny", training_file=train))
    assert services.jobs.validate(job.id).status is JobStatus.QUEUED  # type: ignore[union-attr]
