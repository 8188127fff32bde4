"""`openft serve --log-format json`: every line the server writes (its own records,
uvicorn's, the trainer's and its libraries' output) is one JSON object, and the lines
say which request, project and job they are about."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from openai import OpenAI

from openft.testing.data import toy_chat_file
from openft.testing.server import local_server, openft_command
from tests.acceptance.test_training import FAST, TRAINING_ENV, finish

pytestmark = pytest.mark.slow

ONE_EPOCH: Any = {**FAST, "n_epochs": 1}


def test_every_line_of_a_training_servers_log_is_a_json_object(
    tmp_path: Path, tiny_model: Path
) -> None:
    location = ["--data-dir", str(tmp_path)]
    key = openft_command("keys", "create", "--project", "acme", *location)
    with local_server(
        tmp_path,
        "--worker",
        "--access-log",  # the helper turns it off; its lines carry the request's ids
        "--model",
        f"tiny={tiny_model}",
        env={**TRAINING_ENV, "OPENFT_LOG_FORMAT": "json"},
    ) as (url, _process):
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        file_id = client.files.create(file=("t.jsonl", toy_chat_file(10)), purpose="fine-tune").id
        job = client.fine_tuning.jobs.create(
            model="tiny", training_file=file_id, hyperparameters=ONE_EPOCH
        )
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.retrieve("ftjob-nosuchjob")
        done, _seen = finish(client, job.id)
        assert done.status == "succeeded", done.error

    lines = (tmp_path / "server.log").read_bytes().splitlines()
    records: list[dict[str, Any]] = []
    for number, line in enumerate(lines, 1):
        record = orjson.loads(line)  # raises, naming the line, if it is not JSON
        assert isinstance(record, dict), f"line {number}: {line!r}"
        assert {"time", "level", "message"} <= record.keys(), f"line {number}: {line!r}"
        records.append(record)

    def having(**fields: object) -> list[dict[str, Any]]:
        return [r for r in records if all(r.get(k) == v for k, v in fields.items())]

    # A request's lines: its id, its project, the job its path names.
    refused = having(job_id="ftjob-nosuchjob", status=404)
    assert refused and refused[0]["request_id"] and refused[0]["project_id"]
    assert having(job_id=job.id, project_id=refused[0]["project_id"])
    # The worker's lines while the job ran, and the trainer's own output, relayed.
    assert having(job_id=job.id, logger="openft.worker.loop")
    assert having(job_id=job.id, logger="openft.trainer")


def test_the_text_logs_access_lines_are_uvicorns(tmp_path: Path) -> None:
    """In the text format to a file, openft writes the access lines itself (logs.AccessLog):
    one a request, uvicorn's line exactly, the events page answered before routing and a
    refusal included, all of them on the file once the server stops."""
    location = ["--data-dir", str(tmp_path)]
    key = openft_command("keys", "create", "--project", "acme", *location)
    with local_server(tmp_path, "--no-worker", "--access-log") as (url, _process):
        client = OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)
        client.models.list()
        with pytest.raises(openai.NotFoundError):
            client.fine_tuning.jobs.list_events("ftjob-nosuchjob", limit=2)
        with pytest.raises(openai.AuthenticationError):
            OpenAI(base_url=f"{url}/v1", api_key="sk-wrong", max_retries=0).models.list()
    text = (tmp_path / "server.log").read_text()
    lines = [line for line in text.splitlines() if ' - "' in line and "/healthz" not in line]
    assert [line.split(" - ", 1)[1] for line in lines] == [
        '"GET /v1/models HTTP/1.1" 200 OK',
        '"GET /v1/fine_tuning/jobs/ftjob-nosuchjob/events?limit=2 HTTP/1.1" 404 Not Found',
        '"GET /v1/models HTTP/1.1" 401 Unauthorized',
    ], text
    assert all(line.startswith("INFO:     127.0.0.1:") for line in lines), text
