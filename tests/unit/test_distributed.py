"""A job on several processes, piece by piece: a trainer refuses to train unless it is one
of a real group of N; the global batch is shared evenly or refused; a failed rank's cause
is the rank that started the failure; the report channel through a named pipe."""

from __future__ import annotations

import os
import select
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from openft.training import distributed
from openft.training.distributed import Group
from openft.training.errors import TrainingError
from openft.training.launch import cause, torchrun_arguments
from openft.training.protocol import PATH_ENV, Log, Reporter, parse
from openft.training.run import per_device_batch
from openft.worker.launcher import LocalLauncher, TorchrunLauncher, drain, launcher_for

TWO = Group(rank=0, size=2, local_rank=0, device="cpu", backend="gloo")


@pytest.fixture
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in distributed.LAUNCHED_BY:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_a_job_for_two_processes_started_alone_refuses_to_train(
    no_launcher: pytest.MonkeyPatch,
) -> None:
    with pytest.raises(TrainingError) as refused:
        distributed.join(2)
    assert refused.value.code == "distributed_setup_failed"
    assert "train on 2 processes as one group" in refused.value.message
    assert "without a launcher" in refused.value.message


def test_a_group_of_another_size_is_refused(no_launcher: pytest.MonkeyPatch) -> None:
    for name, value in (("RANK", "0"), ("LOCAL_RANK", "0"), ("WORLD_SIZE", "2")):
        no_launcher.setenv(name, value)
    with pytest.raises(TrainingError, match="started as 2 processes"):
        distributed.join(3)
    with pytest.raises(TrainingError, match="train on one process, but its trainer was started"):
        distributed.join(1)


def test_the_events_say_how_a_job_trains() -> None:
    assert TWO.describe() == "Training on 2 processes (cpu, gloo)"
    assert TWO.describe("fsdp") == "Training on 2 processes (cpu, gloo, fsdp)"
    assert Group(0, 1, 0, "cpu", None).describe() == "Training on cpu"


def test_the_global_batch_is_shared_evenly_or_refused() -> None:
    assert per_device_batch(8, TWO) == 4
    with pytest.raises(TrainingError) as refused:
        per_device_batch(3, TWO)
    assert refused.value.code == "invalid_batch_size"
    assert "multiple of 2" in refused.value.message


def test_each_strategy_has_its_training_arguments() -> None:
    assert distributed.strategy_arguments("ddp", TWO)["ddp_backend"] == "gloo"
    assert distributed.strategy_arguments("fsdp", TWO)["fsdp"] == "full_shard auto_wrap"
    assert distributed.strategy_arguments("fsdp", Group(0, 1, 0, "cpu", None)) == {}


def test_deepspeed_is_refused_clearly_where_it_is_not_installed() -> None:
    import importlib.util

    if importlib.util.find_spec("deepspeed") is not None:
        pytest.skip("DeepSpeed is installed here")
    with pytest.raises(TrainingError) as refused:
        distributed.strategy_arguments("deepspeed", TWO)
    assert refused.value.code == "deepspeed_not_installed"
    assert "pip install deepspeed" in refused.value.message


def failure(pid: int, exitcode: int, openft: dict[str, Any] | None = None) -> Any:
    names = {-9: "SIGKILL", -15: "SIGTERM"}
    return SimpleNamespace(
        pid=pid,
        exitcode=exitcode,
        signal_name=lambda: names.get(exitcode, "<N/A>"),
        error_file_data={"openft": openft} if openft else {},
    )


def test_a_rank_killed_is_the_cause_not_the_ranks_stopped_after_it() -> None:
    # torchrun lists the ranks in the order it saw them end; those it stopped come last.
    named = cause({1: failure(11, -9), 0: failure(10, -15)}, 2)
    assert named.code == "training_crashed"
    assert "rank 1 of 2 (pid 11) was killed by signal 9 (SIGKILL" in named.message


def test_a_rank_that_only_saw_another_go_is_not_the_cause() -> None:
    lost = {"code": "training_error", "message": "Training failed: reset", "peer_lost": True}
    own = {"code": "out_of_memory", "message": "Training ran out of memory", "peer_lost": False}
    named = cause({0: failure(10, 1, lost), 1: failure(11, 1, own)}, 2)
    assert named.code == "out_of_memory"
    assert named.message == "Training ran out of memory (training process rank 1 of 2 (pid 11))"
    silent = cause({0: failure(10, 1, lost), 1: failure(11, 3)}, 2)
    assert "rank 1 of 2 (pid 11) exited with code 3" in silent.message


def test_a_failure_every_rank_shares_is_reported_as_it_is() -> None:
    refused = {
        "code": "invalid_batch_size",
        "message": "batch_size 3 cannot be shared",
        "param": "hyperparameters.batch_size",
        "peer_lost": False,
    }
    named = cause({0: failure(10, 1, refused), 1: failure(11, 1, refused)}, 2)
    assert (named.code, named.message, named.param) == (
        "invalid_batch_size",
        "batch_size 3 cannot be shared",
        "hyperparameters.batch_size",
    )


def test_torchrun_runs_the_trainer_module_on_one_node() -> None:
    arguments = torchrun_arguments(4, "/w/ranks", "/w/spec.json")
    assert arguments[:3] == ["--standalone", "--nproc-per-node=4", "--max-restarts=0"]
    assert arguments[-3:] == ["--module", "openft.training.run", "/w/spec.json"]
    assert launcher_for(1) == LocalLauncher()
    assert launcher_for(4) == TorchrunLauncher(4)


def test_reports_come_through_a_named_pipe_even_after_the_writer_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fifo = tmp_path / "reports.fifo"
    os.mkfifo(fifo)
    reports = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    keep = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
    try:
        subprocess.run(
            [
                sys.executable,
                "-c",
                "from openft.training.protocol import Log, Reporter;"
                "Reporter.from_environment().send(Log(message='hello'))",
            ],
            env={**os.environ, PATH_ENV: str(fifo)},
            check=True,
            timeout=60,
        )
        assert parse(drain(reports).strip()) == Log(message="hello")
        # Nothing more to read, and no end either: our own writer keeps it open.
        assert not select.select([reports], [], [], 0)[0]
    finally:
        os.close(keep)
        os.close(reports)
    # With no reader (the worker gone) a trainer fails at once instead of waiting.
    monkeypatch.delenv("OPENFT_PROTOCOL_FD", raising=False)
    monkeypatch.setenv(PATH_ENV, str(fifo))
    with pytest.raises(OSError):
        Reporter.from_environment()
