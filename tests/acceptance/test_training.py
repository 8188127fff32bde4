"""Real training through the official SDK against a real server with its embedded worker:
a tiny model really fine-tunes, and everything an OpenAI user reads is there."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob

from openft import archives
from openft.domain.status import TERMINAL
from openft.testing.data import preference_file, toy_chat_file
from openft.testing.server import Server, running_server, wait_until
from tests.acceptance.test_live_events import Follower
from tests.conftest import BACKENDS, _fresh_database
from tests.schemas import assert_valid

# Each test here trains a real (tiny) model: minutes, not seconds.
pytestmark = pytest.mark.slow

TRAINING_ENV = {
    "OPENFT_CHECKPOINT_EVERY": "4",
    "OPENFT_HEARTBEAT_SECONDS": "1",
    "OPENFT_HEARTBEAT_TIMEOUT_SECONDS": "20",
}
FAST: Any = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 100}


@pytest.fixture(scope="module", params=BACKENDS)
def trainer(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tiny_model: Path
) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp(f"trainer-{request.param}")
    for url in _fresh_database(request.param, data_dir, request):
        with running_server(
            url, data_dir, f"tiny={tiny_model}", worker=True, env=TRAINING_ENV
        ) as server:
            yield server


@pytest.fixture
def client(trainer: Server) -> OpenAI:
    return OpenAI(base_url=trainer.base_url, api_key=trainer.key, max_retries=0)


def upload(client: OpenAI, data: bytes, name: str = "train.jsonl") -> str:
    return client.files.create(file=(name, data), purpose="fine-tune").id


def finish(client: OpenAI, job_id: str, timeout: float = 180) -> tuple[FineTuningJob, list[str]]:
    """Poll a job to its end; return it and the statuses seen on the way."""
    seen: list[str] = []

    def done() -> FineTuningJob | None:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if not seen or seen[-1] != job.status:
            seen.append(job.status)
        return job if job.status in TERMINAL else None

    return wait_until(done, timeout, 0.1, f"job {job_id} to finish"), seen


def events(client: OpenAI, job_id: str) -> list:  # type: ignore[type-arg]
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=1000))))


def test_a_supervised_job_really_trains_and_reports_like_openai(
    client: OpenAI, trainer: Server, tiny_model: Path, tmp_path: Path
) -> None:
    train, valid = (
        upload(client, toy_chat_file(16)),
        upload(client, toy_chat_file(4), "valid.jsonl"),
    )
    created = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        validation_file=valid,
        suffix="toy",
        seed=42,
        hyperparameters=FAST,
    )
    job, seen = finish(client, created.id)
    assert job.status == "succeeded", job.error
    assert "running" in seen and seen[-1] == "succeeded"
    log = events(client, job.id)
    texts = [e.message for e in log]
    assert texts[:4] == [
        f"Created fine-tuning job: {job.id}",
        f"Validating training file: {train} and validation file: {valid}",
        "Files validated, moving job to queued state",
        "Fine-tuning job started",
    ]
    assert texts[-2:] == [
        f"New fine-tuned model created: {job.fine_tuned_model}",
        "The job has successfully completed",
    ]

    metrics = [e.data for e in log if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    for m in metrics:
        assert m["total_steps"] == 12
        assert {
            "train_loss",
            "train_mean_token_accuracy",
            "valid_loss",
            "valid_mean_token_accuracy",
            "learning_rate",
            "epoch",
            "tokens_per_second",
        } <= set(m)
    assert {"full_valid_loss", "full_valid_mean_token_accuracy"} <= set(metrics[-1])
    first, last = metrics[:3], metrics[-3:]
    assert sum(m["train_loss"] for m in last) < 0.5 * sum(m["train_loss"] for m in first)
    metric_texts = [e.message for e in log if e.type == "metrics"]
    assert (
        metric_texts[0].startswith("Step 1/12: training loss=")
        and ", validation loss=" in metric_texts[0]
    )

    assert job.fine_tuned_model == f"ft:tiny:acme:toy:{job.id}"
    assert job.trained_tokens and job.trained_tokens > 0 and job.finished_at
    assert (job.hyperparameters.n_epochs, job.hyperparameters.batch_size) == (3, 4)
    assert job.fine_tuned_model in [m.id for m in client.models.list()]

    checkpoints = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert [c.step_number for c in checkpoints.data] == [12, 8, 4]
    for checkpoint in checkpoints.data:
        assert checkpoint.id.startswith("ftckpt_")
        assert (
            checkpoint.fine_tuned_model_checkpoint
            == f"{job.fine_tuned_model}:ckpt-step-{checkpoint.step_number}"
        )
        assert checkpoint.metrics.step == checkpoint.step_number
        assert checkpoint.metrics.train_loss == pytest.approx(
            metrics[checkpoint.step_number - 1]["train_loss"]
        )
    assert sum("Checkpoint created at step" in t for t in texts) == 3

    # The wire bodies match OpenAI's published schemas once the job has really run.
    with httpx.Client(
        base_url=trainer.base_url, headers={"Authorization": f"Bearer {trainer.key}"}
    ) as http:
        assert_valid(
            "openai-fine-tuning.yaml",
            "FineTuningJob",
            http.get(f"/fine_tuning/jobs/{job.id}").json(),
        )
        listed = http.get(f"/fine_tuning/jobs/{job.id}/checkpoints").json()
        assert_valid("openai-fine-tuning.yaml", "ListFineTuningJobCheckpointsResponse", listed)
        page = http.get(f"/fine_tuning/jobs/{job.id}/events", params={"limit": 100}).json()
        assert_valid("openai-fine-tuning.yaml", "ListFineTuningJobEventsResponse", page)
        assert_valid("nebius-events.yaml", "ListEventsResponse", page)

    (result,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result).read().decode())))
    assert [int(r["step"]) for r in rows] == list(range(1, 13))
    assert float(rows[-1]["train_loss"]) == pytest.approx(metrics[-1]["train_loss"])
    assert client.files.retrieve(result).purpose == "fine-tune-results"

    # The adapter loads with peft on top of the base model and generates.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    adapter = tmp_path / "adapter"  # as the worker uploaded it, stored as one archive
    archives.unpack(trainer.data_dir / "models" / job.id / "adapter.tar.gz", adapter)
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "question 1"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    inputs: Any = prompt  # a BatchEncoding: transformers' stubs type it as a union
    output = model.generate(**inputs, max_new_tokens=4, do_sample=False)  # type: ignore[no-untyped-call]
    assert "answer" in tokenizer.decode(output[0][inputs["input_ids"].shape[1] :])


@pytest.mark.parametrize("trainer", ["sqlite"], indirect=True)
def test_a_dpo_job_succeeds(client: OpenAI) -> None:
    train = upload(client, preference_file(16))
    job, _ = finish(
        client,
        client.fine_tuning.jobs.create(
            model="tiny",
            training_file=train,
            method={"type": "dpo", "dpo": {"hyperparameters": {**FAST, "beta": 0.2}}},  # type: ignore[arg-type]
        ).id,
    )
    assert job.status == "succeeded", job.error
    metrics = [e.data for e in events(client, job.id) if e.type == "metrics"]
    assert [m["step"] for m in metrics] == list(range(1, 13))
    assert "train_reward_accuracy" in metrics[-1]
    assert job.method and job.method.dpo and job.method.dpo.hyperparameters
    assert job.method.dpo.hyperparameters.beta == 0.2


@pytest.mark.parametrize("trainer", ["sqlite"], indirect=True)
def test_cancel_during_training_stops_within_seconds(client: OpenAI) -> None:
    train = upload(client, toy_chat_file(16))
    job_id = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, hyperparameters={"n_epochs": 25, "batch_size": 1}
    ).id
    wait_until(
        lambda: any(e.type == "metrics" for e in events(client, job_id)),
        120,
        what="training to start",
    )
    client.fine_tuning.jobs.cancel(job_id)
    job, _ = finish(client, job_id, timeout=15)
    assert job.status == "cancelled" and job.finished_at
    texts = [e.message for e in events(client, job_id)]
    assert texts[-1] == "Fine-tuning job cancelled"
    assert any(t.startswith("Cancellation requested") for t in texts)
    steps = [e.data["step"] for e in events(client, job_id) if e.type == "metrics"]
    assert steps[-1] < 400


@pytest.mark.parametrize("trainer", ["sqlite"], indirect=True)
def test_pause_then_resume_finishes_from_the_checkpoint(client: OpenAI) -> None:
    train = upload(client, toy_chat_file(16))
    job_id = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, hyperparameters={"n_epochs": 8, "batch_size": 1}
    ).id
    total = 8 * 16
    wait_until(
        lambda: any(e.type == "metrics" and e.data["step"] >= 6 for e in events(client, job_id)),
        120,
        what="a few steps",
    )
    client.fine_tuning.jobs.pause(job_id)
    paused = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status == cast(Any, "paused") and j,
        30,
        what="pause",
    )
    assert paused.status == "paused"
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job_id).data[0]
    client.fine_tuning.jobs.resume(job_id)
    job, _ = finish(client, job_id)
    assert job.status == "succeeded", job.error
    log = events(client, job_id)
    texts = [e.message for e in log]
    assert "Fine-tuning job paused" in texts
    assert (
        f"Fine-tuning job resumed from the checkpoint at step {checkpoint.step_number} (attempt 2)"
        in texts
    )
    steps = [e.data["step"] for e in log if e.type == "metrics"]
    assert steps == list(range(1, total + 1))


@pytest.mark.parametrize("trainer", ["sqlite"], indirect=True)
def test_a_training_crash_fails_the_job_clearly_and_the_worker_keeps_serving(
    client: OpenAI,
) -> None:
    train = upload(client, toy_chat_file(16))
    bad, _ = finish(
        client,
        client.fine_tuning.jobs.create(
            model="tiny", training_file=train, hyperparameters={"n_epochs": 1, "batch_size": 64}
        ).id,
    )
    assert bad.status == "failed" and bad.error is not None
    assert bad.error.code == "invalid_batch_size"
    assert "batch_size 64 is larger than the 16 training examples" in bad.error.message
    assert events(client, bad.id)[-1].level == "error"
    good, _ = finish(
        client,
        client.fine_tuning.jobs.create(model="tiny", training_file=train, hyperparameters=FAST).id,
    )
    assert good.status == "succeeded", good.error


def test_a_follower_reads_a_whole_training_job_through_the_stream(
    client: OpenAI, trainer: Server
) -> None:
    train = upload(client, toy_chat_file(16))
    job = client.fine_tuning.jobs.create(model="tiny", training_file=train, hyperparameters=FAST)
    follower = Follower(
        f"{trainer.base_url}/fine_tuning/jobs/{job.id}/events?stream=true", trainer.key
    )
    follower.run()  # returns once the stream ends
    assert follower.done, follower.error
    finished = client.fine_tuning.jobs.retrieve(job.id)
    assert finished.status == "succeeded"
    assert follower.ids == [e.id for e in events(client, job.id)]
    assert any(e["type"] == "metrics" for e in follower.events)
    assert follower.events[-1]["message"] == "The job has successfully completed"
