"""Reinforcement fine-tuning through the official SDK and the CLI against a real server
with its embedded worker: the tiny model really learns what a string_check grader
rewards, and the job reports as OpenAI's RFT jobs do (events, checkpoints, results)."""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, cast

import httpx
import openai
import pytest
from openai import OpenAI

from openft.testing.data import toy_chat_file
from openft.testing.server import Server, wait_until
from tests.acceptance.test_live_events import Follower
from tests.acceptance.test_training import client, events, finish, trainer, upload  # noqa: F401
from tests.schemas import assert_valid

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("trainer", ["sqlite"], indirect=True)]

PROMPTS = (
    "What is two plus two?",
    "Name a colour.",
    "Say something.",
    "Where is Paris?",
    "Count to three.",
    "Answer briefly.",
    "Is the sky blue?",
    "Who are you?",
)
# The untrained tiny model's sampled replies contain "is" about a quarter of the time:
# often enough for GRPO's groups to differ, rarely enough to leave room to learn.
GRADER = {
    "type": "string_check",
    "name": "says_is",
    "input": "{{sample.output_text}}",
    "reference": "{{item.keyword}}",
    "operation": "like",
}
STEPS, EVAL_INTERVAL = 40, 10
HYPER = {
    "n_epochs": 10,
    "batch_size": 4,  # 16 rows: 4 steps an epoch
    "learning_rate_multiplier": 50,
    "compute_multiplier": 1,  # 4 completions per prompt
    "eval_interval": EVAL_INTERVAL,
    "max_length": 16,  # completions of at most 16 tokens
}


def prompt_file(n: int, **fields: Any) -> bytes:
    """Prompt-only rows (messages end with the user's) with the grader's item fields."""
    lines = [
        json.dumps({"messages": [{"role": "user", "content": PROMPTS[i % 8]}], **fields})
        for i in range(n)
    ]
    return ("\n".join(lines) + "\n").encode()


def reinforcement(grader: dict[str, Any], hyperparameters: dict[str, Any] | None = None) -> Any:
    """A `method` for the SDK (whose types know RFT's openft extensions not)."""
    section = {"grader": grader, "hyperparameters": hyperparameters or {}}
    return {"type": "reinforcement", "reinforcement": section}


def openft(server: Server, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OPENFT_BASE_URL": server.root_url, "OPENFT_API_KEY": server.key}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.Popen(
        [sys.executable, "-m", "openft.cli.main", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_an_rft_job_learns_what_its_grader_rewards(
    client: OpenAI,  # noqa: F811
    trainer: Server,  # noqa: F811
) -> None:
    train = upload(client, prompt_file(16, keyword="is"))  # no assistant message: accepted
    valid = upload(client, prompt_file(4, keyword="is"), "valid.jsonl")
    created = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=train,
        validation_file=valid,
        seed=7,
        method=reinforcement(GRADER, HYPER),
    )
    job_id = created.id
    # Followed live as it trains: over SSE, and by the CLI.
    follower = Follower(
        f"{trainer.base_url}/fine_tuning/jobs/{job_id}/events?stream=true", trainer.key
    )
    thread = follower.start()
    cli = openft(trainer, "events", job_id, "--follow")

    # Paused between evaluations, then resumed from the checkpoint the pause saved.
    wait_until(
        lambda: any(e.type == "metrics" and e.data["step"] >= 4 for e in events(client, job_id)),
        300,
        what="a few steps",
    )
    client.fine_tuning.jobs.pause(job_id)
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job_id).status == cast(Any, "paused"),
        60,
        what="the pause",
    )
    paused_at = client.fine_tuning.jobs.checkpoints.list(job_id).data[0].step_number
    client.fine_tuning.jobs.resume(job_id)

    job, _ = finish(client, job_id, timeout=600)
    assert job.status == "succeeded", job.error
    assert job.method is not None
    method = job.method.model_dump()
    assert method["type"] == "reinforcement"
    section = method["reinforcement"]
    assert section["grader"] == GRADER
    hyper = section["hyperparameters"]
    assert {k: hyper[k] for k in ("n_epochs", "batch_size", "eval_interval")} == {
        "n_epochs": 10,
        "batch_size": 4,
        "eval_interval": EVAL_INTERVAL,
    }
    # "auto" resolved on claim, as for the other methods.
    assert (hyper["eval_samples"], hyper["reasoning_effort"]) == (1, "default")
    assert hyper["compute_multiplier"] == 1

    log = events(client, job_id)
    metrics = [e for e in log if e.type == "metrics"]
    assert [e.data["step"] for e in metrics] == list(range(1, STEPS + 1))
    for event in metrics:
        data = event.data
        assert data["total_steps"] == STEPS
        assert 0 <= data["train_mean_reward"] <= 1
        assert set(data["scores"]) == {"says_is"}
        assert data["errors"]["invalid_variable_error"] == 0
        assert 1 <= data["completion_tokens_mean"] <= 16
        step = data["step"]
        evaluated = step % EVAL_INTERVAL == 0
        assert ("full_valid_mean_reward" in data) is evaluated
        expected = f"Step {step}/{STEPS}, train mean reward={data['train_mean_reward']:.2f}"
        if evaluated:
            expected += f", full validation mean reward={data['full_valid_mean_reward']:.2f}"
        assert event.message == expected
    rewards = [e.data["train_mean_reward"] for e in metrics]
    fifth = STEPS // 5
    first, last = sum(rewards[:fifth]) / fifth, sum(rewards[-fifth:]) / fifth
    assert last >= first + 0.2, rewards

    # Checkpoints at evaluation steps (and the pause's): the best three by validation
    # reward (and the newest) are kept; the pause's, between evaluations, has none.
    valid_reward = {
        e.data["step"]: e.data["full_valid_mean_reward"]
        for e in metrics
        if "full_valid_mean_reward" in e.data
    }
    created_at = [e.data["step"] for e in log if e.message.startswith("Checkpoint created")]
    assert created_at == sorted({paused_at, 10, 20, 30, 40})
    assert f"Fine-tuning job resumed from the checkpoint at step {paused_at} (attempt 2)" in [
        e.message for e in log
    ]
    best = sorted(valid_reward, key=lambda s: (-valid_reward[s], -s))[:3]
    checkpoints = client.fine_tuning.jobs.checkpoints.list(job_id).data
    assert sorted(c.step_number for c in checkpoints) == sorted({*best, STEPS})
    for checkpoint in checkpoints:
        dumped = checkpoint.metrics.model_dump(exclude_none=True)
        step = checkpoint.step_number
        assert dumped["full_valid_mean_reward"] == pytest.approx(valid_reward[step])
        assert checkpoint.fine_tuned_model_checkpoint == f"{job.fine_tuned_model}:ckpt-step-{step}"

    (result,) = job.result_files
    rows = list(csv.DictReader(io.StringIO(client.files.content(result).read().decode())))
    assert [int(r["step"]) for r in rows] == list(range(1, STEPS + 1))
    assert float(rows[-1]["train_mean_reward"]) == pytest.approx(rewards[-1])
    assert float(rows[-1]["full_valid_mean_reward"]) == pytest.approx(valid_reward[STEPS])

    with httpx.Client(
        base_url=trainer.base_url, headers={"Authorization": f"Bearer {trainer.key}"}
    ) as http:
        page = http.get(f"/fine_tuning/jobs/{job_id}/events", params={"limit": 100}).json()
        assert_valid("openai-fine-tuning.yaml", "ListFineTuningJobEventsResponse", page)
        listed = http.get(f"/fine_tuning/jobs/{job_id}/checkpoints").json()
        assert_valid("openai-fine-tuning.yaml", "ListFineTuningJobCheckpointsResponse", listed)

    thread.join(60)
    assert follower.done and follower.error is None
    assert [e["id"] for e in follower.events] == [e.id for e in log]
    followed, cli_err = cli.communicate(timeout=60)
    assert cli.returncode == 0, cli_err
    lines = followed.splitlines()
    assert lines == [e.message for e in log]
    assert f"Step {STEPS}/{STEPS}, train mean reward=" in lines[-4]


def test_rft_jobs_are_checked_at_creation_and_files_by_the_method_using_them(
    client: OpenAI,  # noqa: F811
    trainer: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    prompts = upload(client, prompt_file(12, keyword="is"))

    def create(method: Any) -> Any:
        return client.fine_tuning.jobs.create(model="tiny", training_file=prompts, method=method)

    with pytest.raises(openai.BadRequestError) as refused:
        create(reinforcement({**GRADER, "operation": "is"}))
    assert refused.value.body["param"] == "method.reinforcement.grader.operation"  # type: ignore[index]
    model_grader = {
        "type": "score_model",
        "name": "judge",
        "model": "ft:tiny:nobody::ftjob-nope",
        "input": [{"role": "user", "content": "Score {{sample.output_text}}"}],
    }
    with pytest.raises(openai.BadRequestError) as refused:
        create(reinforcement(model_grader))
    assert refused.value.code == "model_not_found"
    assert refused.value.body["param"] == "method.reinforcement.grader.model"  # type: ignore[index]

    # A grader reading a field the rows lack (a job made by the CLI): the job fails
    # validation, naming the line.
    grader_file = tmp_path / "grader.json"
    grader_file.write_text(json.dumps({**GRADER, "reference": "{{item.answer}}"}))
    cli = openft(
        trainer, "jobs", "create", "--model", "tiny", "--method", "reinforcement",
        "--training-file", prompts, "--grader", str(grader_file), "--compute-multiplier", "2",
    )  # fmt: skip
    out, err = cli.communicate(timeout=120)
    assert cli.returncode == 0, err
    job, _ = finish(client, out.strip())
    assert job.method is not None and job.method.reinforcement is not None
    assert job.method.reinforcement.grader.model_dump()["reference"] == "{{item.answer}}"
    assert job.status == "failed" and job.error is not None
    assert job.error.param == "training_file"
    assert (
        "line 1: the grader reads {{item.answer}} but the row has no 'answer'" in job.error.message
    )

    # Supervised fine-tuning needs an assistant message to learn from: said at validation.
    job, _ = finish(client, create({"type": "supervised"}).id)
    assert job.status == "failed" and job.error is not None
    assert "line 1: messages has no assistant message to learn from" in job.error.message

    # And a reinforcement job needs rows that end with the user's prompt.
    sft_rows = upload(client, toy_chat_file(12))
    job, _ = finish(
        client,
        client.fine_tuning.jobs.create(
            model="tiny",
            training_file=sft_rows,
            method=reinforcement(GRADER),
        ).id,
    )
    assert job.status == "failed" and job.error is not None
    assert "line 1: the last message must be a user message" in job.error.message


def test_an_rft_job_is_graded_by_a_model_the_server_serves(
    client: OpenAI,  # noqa: F811
    trainer: Server,  # noqa: F811
) -> None:
    """A score_model grader in training calls the server's own chat completions, as the
    job's project, through the worker (the untrained tiny model's replies are no score:
    each one is graded 0 with model_grader_parse_error, never a server error)."""
    judge = {
        "type": "score_model",
        "name": "judge",
        "model": "tiny",
        "input": [{"role": "user", "content": "Score 0 to 1: {{sample.output_text}}"}],
        "range": [0, 1],
        "sampling_params": {"max_completions_tokens": 4, "temperature": 0},
    }
    grader = {
        "type": "multi",
        "name": "both",
        "graders": {"judge": judge, "says_is": GRADER},
        "calculate_output": "judge + says_is",
    }
    train = upload(client, prompt_file(10, keyword="is"), "judged.jsonl")
    hyper = {"n_epochs": 1, "batch_size": 5, "compute_multiplier": 1, "max_length": 16}
    job = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, seed=3, method=reinforcement(grader, hyper)
    )
    done, _ = finish(client, job.id, timeout=600)
    assert done.status == "succeeded", done.error
    steps = [e.data for e in events(client, job.id) if e.type == "metrics"]
    assert steps
    for data in steps:
        assert set(data["scores"]) == {"judge", "says_is"}
        assert data["errors"]["model_grader_parse_error"] > 0
        assert data["errors"]["model_grader_server_error"] == 0
