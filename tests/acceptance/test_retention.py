"""A job keeps its newest checkpoints only, as OpenAI keeps those of the last epochs."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai import OpenAI

from openft.testing.data import toy_chat_file
from openft.testing.server import running_server
from tests.acceptance.test_training import FAST, events, finish

pytestmark = pytest.mark.slow

KEEP_TWO = {
    "OPENFT_CHECKPOINT_EVERY": "2",
    "OPENFT_KEEP_CHECKPOINTS": "2",
    "OPENFT_HEARTBEAT_SECONDS": "1",
}


def test_older_checkpoints_leave_the_list_and_the_disk(
    database_url: str, tmp_path: Path, tiny_model: Path
) -> None:
    with running_server(
        database_url, tmp_path, f"tiny={tiny_model}", worker=True, env=KEEP_TWO
    ) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        train = client.files.create(file=("t.jsonl", toy_chat_file(16)), purpose="fine-tune")
        created = client.fine_tuning.jobs.create(
            model="tiny", training_file=train.id, hyperparameters=FAST
        )
        job, _ = finish(client, created.id)
        assert job.status == "succeeded", job.error
        listed = client.fine_tuning.jobs.checkpoints.list(job.id).data
        announced = [e for e in events(client, job.id) if e.message.startswith("Checkpoint")]
    # 16 examples, batches of 4, 3 epochs: 12 steps, a checkpoint every 2.
    assert [c.step_number for c in listed] == [12, 10]
    assert len(announced) == 6
    archives = sorted(p.name for p in (tmp_path / "checkpoints" / job.id).iterdir())
    assert archives == sorted(f"{c.id}.tar.gz" for c in listed)
