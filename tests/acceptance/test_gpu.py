"""On a machine with a CUDA GPU: a real server trains a tiny model by SFT through the
official SDK on the GPU, and serves the fine-tuned model from the GPU. Skipped where
torch sees no CUDA device (CI, the developers' machines); bench/gpu_check.sh runs it."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI

from openft.store.database import sqlite_url
from openft.testing.data import toy_chat_file
from openft.testing.server import Server, running_server
from tests.acceptance.test_training import FAST, TRAINING_ENV, events, finish, upload


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not _cuda(), reason="needs a CUDA device (bench/gpu_check.sh)"),
]


@pytest.fixture(scope="module")
def gpu_server(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("gpu-server")
    with running_server(
        sqlite_url(data_dir), data_dir, f"tiny={tiny_model}", worker=True, env=TRAINING_ENV
    ) as server:
        yield server


def test_sft_trains_on_cuda_and_the_fine_tuned_model_is_served_from_cuda(
    gpu_server: Server,
) -> None:
    client = OpenAI(base_url=gpu_server.base_url, api_key=gpu_server.key, max_retries=0)
    train = upload(client, toy_chat_file(16))
    created = client.fine_tuning.jobs.create(
        model="tiny", training_file=train, seed=42, hyperparameters=FAST
    )
    job, _ = finish(client, created.id, timeout=120)
    assert job.status == "succeeded", job.error
    texts = [e.message for e in events(client, job.id)]
    # The trainer reports the device it trains on ("Training on cuda:0").
    assert any(re.fullmatch(r"Training on cuda(:\d+)?", t) for t in texts), texts
    assert texts[-1] == "The job has successfully completed"
    assert job.fine_tuned_model and job.trained_tokens

    completion = client.chat.completions.create(
        model=job.fine_tuned_model,
        messages=[{"role": "user", "content": "question 1"}],
        temperature=0,
        max_tokens=8,
    )
    content = completion.choices[0].message.content
    assert isinstance(content, str) and content.strip(), completion
    assert completion.usage is not None and completion.usage.completion_tokens >= 1

    # The serving engine logs where it put the base model it answered with.
    log = (gpu_server.data_dir / "server.log").read_text()
    loaded = re.findall(r"Loaded base model tiny from .* on (\S+) \(", log)
    assert loaded and all(device.startswith("cuda") for device in loaded), log[-4000:]
