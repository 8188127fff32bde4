"""The user CLI, driven as a user drives it: a process, a server URL and a key in the
environment, output read back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from openft.testing.data import toy_chat_file
from openft.testing.server import Server
from tests.acceptance.test_training import trainer  # noqa: F401 (the fixture)

pytestmark = pytest.mark.slow


def openft(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "OPENFT_BASE_URL": server.root_url, "OPENFT_API_KEY": server.key}
    env.pop("OPENAI_API_KEY", None)
    return subprocess.run(
        [sys.executable, "-m", "openft.cli.main", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )


def test_the_cli_creates_a_job_from_a_local_file_and_follows_it_to_the_end(
    trainer: Server,  # noqa: F811
    tmp_path: Path,
) -> None:
    data = tmp_path / "train.jsonl"
    data.write_bytes(toy_chat_file(16))
    created = openft(
        trainer,
        "jobs", "create", "--model", "tiny", "--training-file", str(data),
        "--n-epochs", "3", "--batch-size", "4", "--learning-rate-multiplier", "100",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    job_id = created.stdout.strip()
    assert job_id.startswith("ftjob-") and "uploaded train.jsonl: file-" in created.stderr

    waited = openft(trainer, "jobs", "wait", job_id)
    assert waited.returncode == 0, waited.stderr
    lines = waited.stdout.splitlines()
    assert lines[0] == f"Created fine-tuning job: {job_id}"
    assert any(line.startswith("Step 12/12: training loss=") for line in lines)
    assert "The job has successfully completed" in lines
    assert lines[-1].startswith("succeeded: ft:tiny:acme::" + job_id)

    as_json = openft(trainer, "events", job_id, "--json")
    events = [json.loads(line) for line in as_json.stdout.splitlines()]
    listed = [line for line in lines if not line.startswith("succeeded: ")]
    assert [e["message"] for e in events] == listed  # the same events, oldest first
    (row,) = [r for r in openft(trainer, "jobs", "list").stdout.splitlines() if job_id in r]
    assert row.split("\t")[:3] == [job_id, "tiny", "succeeded"]  # tab-separated: a script's


def test_errors_are_one_readable_line(trainer: Server) -> None:  # noqa: F811
    missing = openft(trainer, "jobs", "get", "ftjob-nope")
    assert missing.returncode == 1 and missing.stdout == ""
    assert missing.stderr.strip().splitlines() == [
        "openft: 404: Could not find fine-tuning job: ftjob-nope (fine_tuning_job_id)"
    ]
    unknown = openft(trainer, "jobs", "wait", "ftjob-nope")
    assert unknown.returncode == 1 and "Traceback" not in unknown.stderr
