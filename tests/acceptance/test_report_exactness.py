"""Workers' reports keep every event exactly once, in order, even when a worker is killed
in the middle of a batch: what the server acknowledged is never lost, and the batch it
had not yet acknowledged, sent again by the worker that takes over, is applied once.

Several jobs report at once, so the server writes their reports many to a transaction
(services/reports.py); each batch also repeats the last step of the one before (as an
attempt resumed from a checkpoint re-runs steps), which must still appear once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from openai import OpenAI

from openft.testing.server import Server, running_server, wait_until
from tests.acceptance.helpers import queued_job

JOBS = 4
STEPS_PER_BATCH = 3

# A worker process: one thread per job, sending numbered batches FIRST..LAST as fast as
# the server answers, and writing each acknowledged batch's number to the job's file
# (synced) before it sends the next. Batch n is the message "Batch n" and the metrics of
# steps 3n-3 .. 3n: its first step is the last of batch n-1 (or step 0).
WORKER = """
import os, sys, threading, httpx
base, key, acks, first, last, *jobs = sys.argv[1:]

def run(job):
    headers = {"Authorization": f"Bearer {key}", "OpenFT-Worker": "w"}
    with httpx.Client(base_url=base, headers=headers, timeout=60) as http, open(
        os.path.join(acks, job), "a"
    ) as acked:
        for n in range(int(first), int(last) + 1):
            events = [{"message": f"Batch {n}"}] + [
                {"message": f"Step {s}", "type": "metrics", "data": {"step": s}}
                for s in range(3 * n - 3, 3 * n + 1)
            ]
            reply = http.post(f"/worker/jobs/{job}/events", json={"batch": n, "events": events})
            reply.raise_for_status()
            acked.write(f"{n}\\n")
            acked.flush()
            os.fsync(acked.fileno())

threads = [threading.Thread(target=run, args=(job,)) for job in jobs]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
"""


def expected(batches: int) -> list[str]:
    """The job's reported messages, oldest first, once `batches` batches were applied."""
    messages = []
    for n in range(1, batches + 1):
        messages.append(f"Batch {n}")
        messages += [f"Step {s}" for s in range(max(1, 3 * n - 2), 3 * n + 1)]
    return messages


def reported(client: OpenAI, job_id: str) -> list[str]:
    """The job's messages from the worker (after "Fine-tuning job started"), oldest first."""
    events = list(client.fine_tuning.jobs.list_events(job_id, limit=1000))
    messages = [event.message for event in reversed(events)]
    return messages[messages.index(next(m for m in messages if m.startswith("Batch"))) :]


def acknowledged(acks: Path, job_id: str) -> int:
    lines = (acks / job_id).read_text().split()
    return int(lines[-1]) if lines else 0


def worker(
    server: Server, key: str, acks: Path, first: int, last: int, jobs: list[str]
) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            server.base_url,
            key,
            str(acks),
            str(first),
            str(last),
            *jobs,
        ]
    )


def test_a_worker_killed_mid_batch_loses_nothing_acknowledged_and_repeats_nothing(
    database_url: str, tmp_path: Path
) -> None:
    with running_server(
        database_url, tmp_path / "server", "tiny=/nonexistent/tiny-model"
    ) as server:
        client = OpenAI(base_url=server.base_url, api_key=server.key, max_retries=0)
        jobs = [queued_job(client).id for _ in range(JOBS)]
        key = server.new_key("workers", scope="worker")
        claimer = {"Authorization": f"Bearer {key}"}
        for _ in jobs:  # this server's only queued jobs: the worker "w" holds them all
            claimed = httpx.post(
                f"{server.base_url}/worker/claim", json={"worker_id": "w"}, headers=claimer
            )
            assert claimed.json()["job"]["id"] in jobs
        acks = tmp_path / "acks"
        acks.mkdir()

        first = worker(server, key, acks, 1, 1_000_000, jobs)
        try:
            wait_until(
                lambda: all(
                    (acks / job).exists() and acknowledged(acks, job) >= 15 for job in jobs
                ),
                timeout=120,
                what="15 acknowledged batches a job",
            )
        finally:
            os.kill(first.pid, signal.SIGKILL)  # mid-batch: its reports are in flight
            first.wait()
        last_acked = {job: acknowledged(acks, job) for job in jobs}
        for job in jobs:
            got = reported(client, job)
            # Every acknowledged batch is there, once and in order; at most the one batch
            # in flight when it was killed was applied besides.
            assert got in (expected(last_acked[job]), expected(last_acked[job] + 1))

        # The worker that takes over sends again from the first batch it did not see
        # acknowledged (so perhaps one the server had applied), then five more.
        ends = {job: last_acked[job] + 5 for job in jobs}
        takers = [worker(server, key, acks, last_acked[job] + 1, ends[job], [job]) for job in jobs]
        assert [taker.wait(timeout=120) for taker in takers] == [0] * JOBS
        for job in jobs:
            assert reported(client, job) == expected(ends[job])
