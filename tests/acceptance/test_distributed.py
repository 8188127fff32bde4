"""One job on several processes: a worker started with --nproc-per-node 2 trains each job
through torchrun, two ranks on gloo over loopback, and the job reads as a one-rank job
does (same steps, one metrics event per step, same checkpoints). A rank that dies ends
the attempt with its cause named and leaves no process behind."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob

from openft.store.database import sqlite_url
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, running_server, wait_until
from tests.acceptance.test_training import events, finish, upload

# Each test here trains a real (tiny) model on two processes: tens of seconds.
pytestmark = pytest.mark.slow

TRAINING_ENV = {
    "OPENFT_CHECKPOINT_EVERY": "4",
    "OPENFT_HEARTBEAT_SECONDS": "1",
    "OPENFT_HEARTBEAT_TIMEOUT_SECONDS": "30",
}
FAST: Any = {"n_epochs": 3, "batch_size": 4, "learning_rate_multiplier": 100}


def _server(tmp: Path, tiny_model: Path, processes: int, strategy: str = "ddp") -> Iterator[Server]:
    env = {
        **TRAINING_ENV,
        "OPENFT_NPROC_PER_NODE": str(processes),
        "OPENFT_DISTRIBUTED": strategy,
    }
    with running_server(sqlite_url(tmp), tmp, f"tiny={tiny_model}", worker=True, env=env) as server:
        yield server


@pytest.fixture(scope="module")
def one_rank(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    yield from _server(tmp_path_factory.mktemp("one-rank"), tiny_model, 1)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    yield from _server(tmp_path_factory.mktemp("two-ranks"), tiny_model, 2)


def _client(server: Server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


@dataclass
class Trained:
    job: FineTuningJob
    texts: list[str]
    metrics: list[dict[str, Any]]
    checkpoints: list[int]


def _train_toy_job(server: Server) -> Trained:
    """The same small job (data, seed, hyperparameters) on `server`, to its end."""
    client = _client(server)
    train = upload(client, toy_chat_file(16))
    valid = upload(client, toy_chat_file(4), "valid.jsonl")
    created = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, validation_file=valid, seed=7, hyperparameters=FAST
    )
    job, _ = finish(client, created.id)
    assert job.status == "succeeded", job.error
    log = events(client, job.id)
    steps = [c.step_number for c in client.fine_tuning.jobs.checkpoints.list(job.id).data]
    metrics = [e.data for e in log if e.type == "metrics"]
    return Trained(job, [e.message for e in log], metrics, steps)


@pytest.fixture(scope="module")
def reference(one_rank: Server) -> Trained:
    """The job trained on one process: what every number of processes must match."""
    trained = _train_toy_job(one_rank)
    assert "Training on cpu" in trained.texts
    return trained


def _assert_trains_as_one_rank(trained: Trained, reference: Trained) -> None:
    # batch_size is the global batch: each rank takes 2 of every 4 examples, and the job
    # has the steps (12) of one rank, each reported once, by rank 0 alone.
    assert [m["step"] for m in trained.metrics] == list(range(1, 13))
    assert [m["step"] for m in reference.metrics] == list(range(1, 13))
    assert {m["total_steps"] for m in trained.metrics} == {12}
    first, last = trained.metrics[:3], trained.metrics[-3:]
    assert sum(m["train_loss"] for m in last) < 0.5 * sum(m["train_loss"] for m in first)
    # The same global batches in the same order: the curves match (gradients summed over
    # two ranks differ from one rank's only in float rounding).
    for one, two in zip(reference.metrics, trained.metrics, strict=True):
        assert two["train_loss"] == pytest.approx(one["train_loss"], rel=0.02)
        assert two["valid_loss"] == pytest.approx(one["valid_loss"], rel=0.02)
    assert trained.metrics[-1]["full_valid_loss"] == pytest.approx(
        reference.metrics[-1]["full_valid_loss"], rel=0.02
    )
    assert trained.checkpoints == reference.checkpoints == [12, 8, 4]
    assert trained.job.trained_tokens == reference.job.trained_tokens
    # The job succeeds once the adapter is in; its processes end right after.
    wait_until(lambda: not _trainer_processes(trained.job.id), 30, what="the ranks to end")


def _trainer_processes(job_id: str) -> list[tuple[int, dict[str, str]]]:
    """(pid, environment) of every live process training `job_id`: torchrun's agent and
    its ranks (their command lines name the job's spec, under its work directory)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            if job_id not in command or "openft.training" not in command:
                continue
            pairs = (entry / "environ").read_bytes().split(b"\0")
        except OSError:  # gone meanwhile
            continue
        environ = dict(p.decode(errors="replace").partition("=")[::2] for p in pairs if p)
        found.append((int(entry.name), environ))
    return found


def test_two_ranks_train_a_job_as_one_rank_does(two_ranks: Server, reference: Trained) -> None:
    trained = _train_toy_job(two_ranks)
    assert "Training on 2 processes (cpu, gloo)" in trained.texts
    _assert_trains_as_one_rank(trained, reference)
    assert trained.job.fine_tuned_model in [m.id for m in _client(two_ranks).models.list()]


def test_fsdp_shards_the_model_over_two_ranks_and_trains_the_same(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, reference: Trained
) -> None:
    for server in _server(tmp_path_factory.mktemp("fsdp"), tiny_model, 2, "fsdp"):
        trained = _train_toy_job(server)
        assert "Training on 2 processes (cpu, gloo, fsdp)" in trained.texts
        _assert_trains_as_one_rank(trained, reference)


def test_pause_reaches_every_rank_and_a_killed_rank_fails_the_job(two_ranks: Server) -> None:
    client = _client(two_ranks)
    train = upload(client, toy_chat_file(16))
    job_id = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, hyperparameters={"n_epochs": 50, "batch_size": 2}
    ).id

    def steps() -> list[int]:
        return [e.data["step"] for e in events(client, job_id) if e.type == "metrics"]

    wait_until(lambda: len(steps()) >= 3, 120, what="training on two ranks")
    # Every rank stops at the same step (a rank left behind would hang in a collective),
    # all of them save the checkpoint, and the attempt ends.
    client.fine_tuning.jobs.pause(job_id)
    paused = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status == cast(Any, "paused") and j,
        60,
        what="pause",
    )
    assert paused.status == "paused"
    checkpoint = client.fine_tuning.jobs.checkpoints.list(job_id).data[0]
    assert checkpoint.step_number == steps()[-1]
    wait_until(lambda: not _trainer_processes(job_id), 30, what="the paused ranks to end")

    client.fine_tuning.jobs.resume(job_id)
    wait_until(lambda: len(steps()) >= checkpoint.step_number + 2, 120, what="the resumed attempt")
    # Resumed on two ranks from the checkpoint: the steps go on, none twice.
    assert steps() == list(range(1, len(steps()) + 1))
    ranks = {
        int(env["LOCAL_RANK"]): pid
        for pid, env in _trainer_processes(job_id)
        if "LOCAL_RANK" in env
    }
    assert sorted(ranks) == [0, 1]
    with contextlib.suppress(ProcessLookupError):
        os.kill(ranks[1], signal.SIGKILL)

    job, _ = finish(client, job_id, timeout=60)
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "training_crashed"
    assert f"rank 1 of 2 (pid {ranks[1]})" in job.error.message
    assert "SIGKILL" in job.error.message
    assert events(client, job_id)[-1].level == "error"
    wait_until(lambda: not _trainer_processes(job_id), 30, what="every process of the job to end")
