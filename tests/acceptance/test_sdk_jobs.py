"""Fine-tuning jobs through the official SDK, sync and async, with every error path."""

from __future__ import annotations

import openai
import pytest
from openai import AsyncOpenAI, OpenAI

from openft.testing.data import preference_file
from openft.testing.server import Server
from tests.acceptance.helpers import queued_job, upload_chat, wait_for_status


def test_create_validates_then_queues_with_openai_events(client: OpenAI) -> None:
    train, valid = upload_chat(client), upload_chat(client, 2)
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        validation_file=valid,
        suffix="my-model",
        seed=7,
        metadata={"team": "search"},
    )
    assert job.status == "validating_files" and job.object == "fine_tuning.job"
    assert job.id.startswith("ftjob-") and job.seed == 7 and job.metadata == {"team": "search"}
    assert job.hyperparameters.n_epochs == "auto" and job.hyperparameters.batch_size == "auto"
    assert job.method is not None and job.method.type == "supervised"
    assert job.fine_tuned_model is None and job.finished_at is None and job.result_files == []
    queued = wait_for_status(client, job.id, "queued")
    assert queued.error is None
    messages = [e.message for e in client.fine_tuning.jobs.list_events(job.id)]
    assert messages == [
        "Files validated, moving job to queued state",
        f"Validating training file: {train} and validation file: {valid}",
        f"Created fine-tuning job: {job.id}",
    ]


def test_a_bad_training_file_fails_the_job_with_a_clear_error(client: OpenAI) -> None:
    train = upload_chat(client)
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train, method={"type": "dpo"})
    failed = wait_for_status(client, job.id, "failed")
    assert failed.error is not None and failed.error.param == "training_file"
    assert f"Invalid file {train}, line 1: expected the preference format" in failed.error.message
    newest = client.fine_tuning.jobs.list_events(job.id, limit=1).data[0]
    assert newest.level == "error" and newest.message == failed.error.message


def test_dpo_job_with_beta_is_queued(client: OpenAI) -> None:
    train = client.files.create(file=("pref.jsonl", preference_file(12)), purpose="fine-tune").id
    job = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        method={"type": "dpo", "dpo": {"hyperparameters": {"beta": 0.3, "n_epochs": 2}}},
    )
    assert job.method is not None and job.method.dpo is not None
    assert job.method.dpo.hyperparameters is not None and job.method.dpo.hyperparameters.beta == 0.3
    wait_for_status(client, job.id, "queued")


def test_list_retrieve_and_metadata_filter(client: OpenAI) -> None:
    marker = {"suite": "list-test"}
    ids = [queued_job(client, metadata=marker).id for _ in range(3)]
    listed = [j.id for j in client.fine_tuning.jobs.list(metadata=marker, limit=1)]
    assert listed == ids[::-1]
    assert client.fine_tuning.jobs.retrieve(ids[0]).id == ids[0]


def test_cancel_pause_resume(client: OpenAI) -> None:
    job = queued_job(client)
    # The SDK's status literal predates pause: hence the ignores on "paused".
    assert client.fine_tuning.jobs.pause(job.id).status == "paused"  # type: ignore[comparison-overlap]
    assert client.fine_tuning.jobs.resume(job.id).status == "queued"
    cancelled = client.fine_tuning.jobs.cancel(job.id)
    assert cancelled.status == "cancelled" and cancelled.finished_at is not None
    with pytest.raises(openai.BadRequestError, match="its status is cancelled") as raised:
        client.fine_tuning.jobs.cancel(job.id)
    assert raised.value.code == "invalid_job_status"
    with pytest.raises(openai.BadRequestError):
        client.fine_tuning.jobs.resume(job.id)
    assert [e.message for e in client.fine_tuning.jobs.list_events(job.id, limit=3).data] == [
        "Fine-tuning job cancelled",
        "Fine-tuning job resumed, moving job to queued state",
        "Fine-tuning job paused",
    ]


def test_unknown_jobs_are_404_everywhere(client: OpenAI) -> None:
    jobs = client.fine_tuning.jobs
    for call in (jobs.retrieve, jobs.cancel, jobs.pause, jobs.resume, jobs.list_events):
        with pytest.raises(openai.NotFoundError, match="ftjob-nope") as raised:
            call("ftjob-nope")
        assert raised.value.code == "fine_tuning_job_not_found"


def test_bad_create_requests_are_refused_and_create_nothing(client: OpenAI) -> None:
    train = upload_chat(client)
    before = [j.id for j in client.fine_tuning.jobs.list(limit=100)]
    with pytest.raises(openai.BadRequestError, match="Available base models: tiny") as raised:
        client.fine_tuning.jobs.create(model="gpt-4o-mini", training_file=train)
    assert raised.value.param == "model"
    with pytest.raises(openai.BadRequestError) as raised:
        client.fine_tuning.jobs.create(model="tiny", training_file="file-nope")
    assert raised.value.param == "training_file"
    with pytest.raises(openai.UnprocessableEntityError) as unprocessable:
        client.fine_tuning.jobs.create(
            model="tiny", training_file=train, hyperparameters={"n_epochs": 0}
        )
    assert unprocessable.value.param == "hyperparameters.n_epochs"
    with pytest.raises(openai.UnprocessableEntityError, match="Unrecognized request argument"):
        client.fine_tuning.jobs.create(
            model="tiny", training_file=train, extra_body={"colour": "blue"}
        )
    with pytest.raises(openai.UnprocessableEntityError):
        client.fine_tuning.jobs.create(model="tiny", training_file=train, suffix="has:colon")
    with pytest.raises(openai.BadRequestError, match="needs a grader"):
        client.fine_tuning.jobs.create(
            model="tiny", training_file=train, method={"type": "reinforcement"}
        )
    assert [j.id for j in client.fine_tuning.jobs.list(limit=100)] == before


def test_another_project_sees_nothing(client: OpenAI, server: Server) -> None:
    job = queued_job(client)
    train = job.training_file
    other = OpenAI(base_url=server.base_url, api_key=server.new_key("globex"), max_retries=0)
    for call in (
        lambda: other.fine_tuning.jobs.retrieve(job.id),
        lambda: other.fine_tuning.jobs.cancel(job.id),
        lambda: other.fine_tuning.jobs.list_events(job.id),
        lambda: other.files.retrieve(train),
        lambda: other.files.content(train),
    ):
        with pytest.raises(openai.NotFoundError):
            call()
    assert other.fine_tuning.jobs.list().data == []
    assert client.fine_tuning.jobs.retrieve(job.id).status == "queued"


def test_a_wrong_key_is_401(server: Server) -> None:
    # (The SDK refuses to send no key at all; test_http_contract covers a missing key.)
    bad = OpenAI(base_url=server.base_url, api_key="sk-openft-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="Incorrect API key provided") as raised:
        bad.fine_tuning.jobs.list()
    assert raised.value.code == "invalid_api_key"


def test_models_list_and_retrieve(client: OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["tiny"]
    assert client.models.retrieve("tiny").owned_by == "openft"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4o")


async def test_async_client_lifecycle(async_client: AsyncOpenAI) -> None:
    upload = await async_client.files.create(
        file=("t.jsonl", preference_file(12)), purpose="fine-tune"
    )
    job = await async_client.fine_tuning.jobs.create(
        model="tiny", training_file=upload.id, method={"type": "dpo"}
    )
    events = [e.message async for e in async_client.fine_tuning.jobs.list_events(job.id)]
    assert events[-1] == f"Created fine-tuning job: {job.id}"
    assert (await async_client.fine_tuning.jobs.retrieve(job.id)).id == job.id
    # Validation may move the job on while the cancel is decided: that cancel loses its
    # compare-and-set and answers 409, which the SDK retries by default (not this
    # fixture's client, which retries nothing).
    retrying = async_client.with_options(max_retries=2)
    assert (await retrying.fine_tuning.jobs.cancel(job.id)).status == "cancelled"
    assert job.id in [j.id async for j in async_client.fine_tuning.jobs.list(limit=5)]
    with pytest.raises(openai.NotFoundError):
        await async_client.fine_tuning.jobs.pause("ftjob-nope")
