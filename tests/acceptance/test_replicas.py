"""Scaled out: API replicas that share nothing but PostgreSQL and an S3 bucket (a real
S3 server, SeaweedFS), and a single node's data directory moved up into a bucket."""

from __future__ import annotations

import csv
import io
import shutil
from pathlib import Path
from typing import cast

import openai
import pytest
from openai import OpenAI

from openft.testing.data import toy_chat_file
from openft.testing.s3 import unreachable_bucket
from openft.testing.server import openft_command, running_server
from tests.acceptance.test_live_events import Follower, listed_oldest_first
from tests.acceptance.test_training import FAST, TRAINING_ENV, finish
from tests.conftest import _fresh_database

BLOB_DIRS = ("files", "checkpoints", "models")


def ask(client: OpenAI, model: str) -> str:
    answer = client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "a"}], max_tokens=4, temperature=0
    )
    assert answer.model == model and answer.choices[0].finish_reason in ("stop", "length")
    return answer.choices[0].message.content or ""


@pytest.mark.slow
@pytest.mark.postgres
def test_two_replicas_share_only_postgres_and_a_bucket(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, s3_url: str
) -> None:
    env = {**TRAINING_ENV, "OPENFT_BLOB_URL": s3_url}
    model = f"tiny={tiny_model}"
    for url in _fresh_database("postgres", tmp_path, request):
        with (
            running_server(url, tmp_path / "a", model, worker=False, env=env) as a,
            running_server(url, tmp_path / "b", model, worker=True, env=env) as b,
        ):
            via_a = OpenAI(base_url=a.base_url, api_key=a.key, max_retries=0)
            via_b = OpenAI(base_url=b.base_url, api_key=b.key, max_retries=0)
            # Upload through A, create through B: B validates the bytes A stored.
            train = via_a.files.create(file=("t.jsonl", toy_chat_file()), purpose="fine-tune")
            job = via_b.fine_tuning.jobs.create(
                model="tiny", training_file=train.id, hyperparameters=FAST
            )
            # Followed live through A while B's worker trains it.
            follower = Follower(f"{a.base_url}/fine_tuning/jobs/{job.id}/events?stream=true", a.key)
            thread = follower.start()
            done, _ = finish(via_b, job.id)
            thread.join(timeout=60)
            assert done.status == "succeeded", done.error
            assert follower.done and follower.error is None
            assert follower.ids == listed_oldest_first(via_a, job.id)
            steps = [
                cast(dict[str, int], e["data"])["step"]
                for e in follower.events
                if e["type"] == "metrics"
            ]
            assert steps == list(range(1, len(steps) + 1)) and steps

            # The results file, written by B, downloaded through A.
            results = via_a.files.content(done.result_files[0]).read().decode()
            rows = list(csv.DictReader(io.StringIO(results)))
            assert [int(r["step"]) for r in rows] == steps

            # A serves the fine-tuned model and a checkpoint from the bucket.
            assert done.fine_tuned_model is not None
            checkpoint = via_a.fine_tuning.jobs.checkpoints.list(job.id).data[0]
            ask(via_a, done.fine_tuned_model)
            ask(via_a, checkpoint.fine_tuned_model_checkpoint)

            # Deleted through B: A knows at once.
            via_b.models.delete(done.fine_tuned_model)
            for name in (done.fine_tuned_model, checkpoint.fine_tuned_model_checkpoint):
                with pytest.raises(openai.NotFoundError):
                    ask(via_a, name)

    # No blob ever lived on either replica's disk.
    for replica in ("a", "b"):
        for name in BLOB_DIRS:
            assert not (tmp_path / replica / name).exists(), (replica, name)


def test_a_bucket_that_is_down_answers_503_and_keeps_nothing(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    down = unreachable_bucket()
    for url in _fresh_database("sqlite", tmp_path, request):
        with running_server(url, tmp_path, env=down) as server:
            client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
            with pytest.raises(openai.InternalServerError) as caught:
                client.files.create(file=("t.jsonl", toy_chat_file()), purpose="fine-tune")
            assert caught.value.status_code == 503
            error = caught.value.body
            assert isinstance(error, dict) and error["code"] == "blob_store_unavailable"
            assert "s3://openft-down/x" in error["message"]
            assert client.files.list().data == []


@pytest.mark.slow
def test_a_single_node_moves_up_into_a_bucket(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path, s3_url: str
) -> None:
    model = f"tiny={tiny_model}"
    for url in _fresh_database("sqlite", tmp_path, request):
        with running_server(url, tmp_path, model, worker=True, env=TRAINING_ENV) as local:
            client = OpenAI(base_url=local.base_url, api_key=local.key, max_retries=0)
            train = client.files.create(file=("t.jsonl", toy_chat_file()), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(
                model="tiny", training_file=train.id, hyperparameters=FAST
            )
            done, _ = finish(client, job.id)
            assert done.status == "succeeded" and done.fine_tuned_model is not None
            before = ask(client, done.fine_tuned_model)

        location = ["--data-dir", str(tmp_path)]
        report = openft_command("blobs", "migrate", "--to", s3_url, *location)
        assert "0 already there" in report.splitlines()[-1]
        again = openft_command("blobs", "migrate", "--to", s3_url, *location)
        assert again.splitlines()[-1].startswith("0 copied")  # resumable: nothing left to do
        for name in (*BLOB_DIRS, "cache"):  # from now on, the bucket alone has them
            shutil.rmtree(tmp_path / name)

        env = {**TRAINING_ENV, "OPENFT_BLOB_URL": s3_url}
        with running_server(url, tmp_path, model, env=env) as moved:
            client = OpenAI(base_url=moved.base_url, api_key=moved.key, max_retries=0)
            assert client.files.content(train.id).read() == toy_chat_file()
            assert client.files.content(done.result_files[0]).read().startswith(b"step,")
            assert ask(client, done.fine_tuned_model) == before
            checkpoint = client.fine_tuning.jobs.checkpoints.list(job.id).data[0]
            ask(client, checkpoint.fine_tuned_model_checkpoint)
