"""When the server refuses a worker's call, the job fails at once with the real cause:
no silent retries, no waiting for the lease to expire."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from openai import OpenAI

from openft.testing.data import toy_chat_file
from openft.testing.server import running_server
from tests.acceptance.test_training import FAST, events, finish
from tests.conftest import _fresh_database

pytestmark = pytest.mark.slow

# A lease that outlives the test: if the job fails, its worker said so.
SLOW_RECOVERY = {"OPENFT_HEARTBEAT_SECONDS": "1", "OPENFT_HEARTBEAT_TIMEOUT_SECONDS": "3600"}


def test_a_server_error_on_the_completion_upload_fails_the_job_at_once(
    request: pytest.FixtureRequest, tmp_path: Path, tiny_model: Path
) -> None:
    # The fault: where adapters are unpacked, a file stands instead of a directory, so
    # the server answers the completion upload with a real 500.
    (tmp_path / "models").write_text("not a directory")
    for url in _fresh_database("sqlite", tmp_path, request):
        with running_server(
            url, tmp_path, f"tiny={tiny_model}", worker=True, env=SLOW_RECOVERY
        ) as server:
            client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
            train = client.files.create(file=("t.jsonl", toy_chat_file()), purpose="fine-tune")
            job = client.fine_tuning.jobs.create(
                model="tiny", training_file=train.id, hyperparameters=FAST
            )
            started = time.monotonic()
            failed, seen = finish(client, job.id, timeout=300)
            took = time.monotonic() - started
            last = events(client, job.id)[-1]

    assert failed.status == "failed" and "running" in seen
    assert took < 300  # well within the hour the lease would have taken
    assert failed.error is not None and failed.error.code == "worker_protocol_error"
    message = failed.error.message
    assert message.startswith("The worker could not upload the trained adapter: ")
    assert "the server answered 500" in message
    request_id = re.search(r"request (req_\w+)", message)
    assert request_id is not None, message
    assert last.level == "error" and last.message == message
    # The server logged the cause on one line that names the same request.
    log = (tmp_path / "server.log").read_text()
    lines = [line for line in log.splitlines() if request_id.group(1) in line]
    assert any("/complete -> 500" in line and "Error" in line for line in lines), lines
