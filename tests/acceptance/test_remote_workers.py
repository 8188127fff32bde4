"""Workers on their own, talking to the API over HTTP only: kill -9 recovery, a corrupt
file, and many jobs shared by two workers on PostgreSQL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Generator, Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from openft.domain.status import TERMINAL
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, openft_command, running_server, wait_until
from tests.conftest import _fresh_database

# Each test here trains a real (tiny) model: minutes, not seconds.
pytestmark = pytest.mark.slow

WORKER_ENV = {"OPENFT_HEARTBEAT_SECONDS": "1"}
SERVER_ENV = {"OPENFT_HEARTBEAT_TIMEOUT_SECONDS": "4"}

StartWorker = Callable[[str], subprocess.Popen[bytes]]


def make_server(
    kind: str, request: pytest.FixtureRequest, tmp: Path, tiny_model: Path
) -> Iterator[Server]:
    for url in _fresh_database(kind, tmp, request):
        with running_server(url, tmp, f"tiny={tiny_model}", worker=False, env=SERVER_ENV) as server:
            yield server


@pytest.fixture
def sqlite_server(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
) -> Iterator[Server]:
    yield from make_server("sqlite", request, tmp_path, tiny_model)


@pytest.fixture
def postgres_server(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
) -> Iterator[Server]:
    yield from make_server("postgres", request, tmp_path, tiny_model)


def worker_starter(server: Server, tmp_path: Path) -> Generator[StartWorker, None, None]:
    key = server.new_key("workers", scope="worker")
    started: list[subprocess.Popen[bytes]] = []

    def start(name: str) -> subprocess.Popen[bytes]:
        with open(tmp_path / f"{name}.log", "ab") as log:  # the child keeps its own copy
            process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "openft.cli.main",
                    "worker",
                    "--base-url",
                    server.root_url,
                    "--key",
                    key,
                    "--worker-id",
                    name,
                    "--work-dir",
                    str(tmp_path / name),
                    "--checkpoint-every",
                    "4",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **WORKER_ENV},
                start_new_session=True,  # its own process group: kill -9 takes its trainer too
            )
        started.append(process)
        return process

    try:
        yield start
    finally:  # also when the generator is closed, not run to its end
        for process in started:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


@pytest.fixture
def start_worker(sqlite_server: Server, tmp_path: Path) -> Iterator[StartWorker]:
    yield from worker_starter(sqlite_server, tmp_path)


def client_of(server: Server) -> OpenAI:
    return OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)


def all_events(client: OpenAI, job_id: str) -> list:  # type: ignore[type-arg]
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=1000))))


def test_kill_9_of_a_worker_mid_job_is_recovered_without_losing_an_event(
    sqlite_server: Server, start_worker: StartWorker
) -> None:
    client = client_of(sqlite_server)
    train = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, hyperparameters={"n_epochs": 6, "batch_size": 1}
    ).id
    total = 6 * 16
    first = start_worker("first")
    wait_until(
        lambda: client.fine_tuning.jobs.checkpoints.list(job_id).data, 120, what="a checkpoint"
    )
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    acknowledged = [(e.id, e.message, e.data) for e in all_events(client, job_id)]
    start_worker("second")
    job = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and j,
        180,
        what="the end",
    )
    assert job.status == "succeeded", job.error
    log = all_events(client, job_id)
    # Every event acknowledged before the kill is still there, unchanged, once.
    assert [(e.id, e.message, e.data) for e in log[: len(acknowledged)]] == acknowledged
    assert len({e.id for e in log}) == len(log)
    steps = [e.data["step"] for e in log if e.type == "metrics"]
    assert steps == list(range(1, total + 1))
    texts = [e.message for e in log]
    assert any(t.startswith("The worker running this job stopped responding") for t in texts)
    assert any(t.startswith("Fine-tuning job resumed from the checkpoint at step") for t in texts)


def test_a_corrupt_file_fails_its_job_and_the_worker_keeps_serving(
    sqlite_server: Server, start_worker: StartWorker
) -> None:
    client = client_of(sqlite_server)
    train = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(model="tiny", training_file=train).id
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job_id).status == "queued", 30, what="queued"
    )
    blob = sqlite_server.data_dir / "files" / train
    lines = blob.read_bytes().split(b"\n")
    lines[2] = b'{"messages": [{"role": "user", "content": "trunc'
    blob.write_bytes(b"\n".join(lines))  # the disk went bad after validation
    start_worker("w")
    job = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(job_id)).status in TERMINAL and j,
        120,
        what="failure",
    )
    assert job.status == "failed" and job.error is not None
    assert job.error.code == "invalid_training_file" and "line 3" in job.error.message
    other = client.files.create(file=("u.jsonl", toy_chat_file(16)), purpose="fine-tune").id
    good_id = client.fine_tuning.jobs.create(
        model="tiny",
        training_file=other,
        hyperparameters={"n_epochs": 1, "batch_size": 4, "learning_rate_multiplier": 10},
    ).id
    good = wait_until(
        lambda: (j := client.fine_tuning.jobs.retrieve(good_id)).status in TERMINAL and j,
        120,
        what="success",
    )
    assert good.status == "succeeded", good.error


@pytest.mark.postgres
def test_two_workers_run_each_of_50_jobs_exactly_once(
    postgres_server: Server, tmp_path: Path
) -> None:
    client = client_of(postgres_server)
    train = client.files.create(file=("t.jsonl", toy_chat_file(10)), purpose="fine-tune").id
    job_ids = [
        client.fine_tuning.jobs.create(
            model="tiny",
            training_file=train,
            hyperparameters={"n_epochs": 1, "batch_size": 10, "learning_rate_multiplier": 10},
        ).id
        for _ in range(50)
    ]
    starter = worker_starter(postgres_server, tmp_path)
    start = next(starter)
    start("alpha")
    start("beta")
    try:
        wait_until(
            lambda: all(client.fine_tuning.jobs.retrieve(j).status in TERMINAL for j in job_ids),
            900,
            interval=2,
            what="all 50 jobs",
        )
    finally:
        starter.close()
    workers = set()
    for job_id in job_ids:
        job = client.fine_tuning.jobs.retrieve(job_id)
        assert job.status == "succeeded", (job_id, job.error)
        log = all_events(client, job_id)
        starts = [e for e in log if e.message == "Fine-tuning job started"]
        assert len(starts) == 1 and not any("resumed" in e.message for e in log)
        workers.add(starts[0].data["worker_id"])
    assert workers == {"alpha", "beta"}


def test_a_revoked_worker_key_requeues_its_job_and_stops_its_worker(
    sqlite_server: Server, start_worker: StartWorker, tmp_path: Path
) -> None:
    client = client_of(sqlite_server)
    train = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune").id
    job_id = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, hyperparameters={"n_epochs": 6, "batch_size": 1}
    ).id
    worker = start_worker("doomed")
    wait_until(
        lambda: client.fine_tuning.jobs.retrieve(job_id).status == "running", 60, what="a start"
    )
    location = sqlite_server.location()
    listing = openft_command("keys", "list", *location).splitlines()
    key_id = next(line.split("\t")[0] for line in listing if "\tworkers\t" in line)
    revoked = subprocess.run(
        [sys.executable, "-m", "openft.cli.main", "keys", "revoke", key_id, *location],
        capture_output=True,
        text=True,
        check=True,
    )
    assert revoked.stderr.strip() == f"revoked {key_id}; 1 running job(s) requeued"

    # At once: the job is back in the queue, and its events say why.
    job = client.fine_tuning.jobs.retrieve(job_id)
    assert job.status == "queued"
    warning = all_events(client, job_id)[-1]
    assert warning.level == "warn"
    assert warning.message == (
        f"The key of the worker running this job ({key_id}) was revoked; "
        "the job goes back to the queue"
    )
    # Within the key cache time (10 s), the worker is refused, stops its trainer and exits
    # non-zero with the cause; nothing of it is left running (the session checks).
    assert worker.wait(timeout=60) == 3
    log = (tmp_path / "doomed.log").read_text()
    assert "The server refuses this worker's key (revoked?): the worker stops." in log
    assert client.fine_tuning.jobs.retrieve(job_id).status == "queued"
