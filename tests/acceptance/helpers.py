"""Small steps the acceptance tests share."""

from __future__ import annotations

import time

from openai import OpenAI
from openai.types.fine_tuning import FineTuningJob

from openft.testing.data import chat_file


def upload_chat(client: OpenAI, n: int = 12) -> str:
    return client.files.create(file=("train.jsonl", chat_file(n)), purpose="fine-tune").id


def wait_for_status(
    client: OpenAI, job_id: str, *statuses: str, timeout: float = 15
) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} stayed {job.status}, expected {statuses}")
        time.sleep(0.05)


def queued_job(client: OpenAI, **kwargs: object) -> FineTuningJob:
    job = client.fine_tuning.jobs.create(model="tiny", training_file=upload_chat(client), **kwargs)  # type: ignore[arg-type]
    return wait_for_status(client, job.id, "queued")
