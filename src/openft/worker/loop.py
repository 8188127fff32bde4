"""The worker loop: claim a job, run it, repeat, until told to stop."""

from __future__ import annotations

import logging
import threading

from openft import logs
from openft.worker.client import KeyRefused, WorkerClient, WorkerProtocolError
from openft.worker.runner import JobRunner, RunnerSettings

log = logging.getLogger(__name__)


def run_worker(
    client: WorkerClient,
    settings: RunnerSettings,
    stop: threading.Event,
    *,
    poll_seconds: float = 1.0,
) -> None:
    """Raises `KeyRefused` when the server refuses the worker's key: no call can succeed."""
    log.info("worker %s polling for jobs", client.worker_id)
    while not stop.is_set():
        try:
            assignment = client.claim()
        except KeyRefused:
            raise
        except WorkerProtocolError as exc:  # the server is down, or refuses this worker
            log.error("%s Retrying.", exc.describe())
            stop.wait(poll_seconds)
            continue
        if assignment is None:
            stop.wait(poll_seconds)
            continue
        job_id = assignment.job["id"]
        # Every line logged while the job runs says which (the JSON log's job_id).
        with logs.bound(job_id=job_id):
            log.info("worker %s runs %s (attempt %s)", client.worker_id, job_id, assignment.attempt)
            try:
                JobRunner(client, assignment, settings, stop).run()
            except KeyRefused:
                raise
            except Exception:  # one job's trouble must not end the worker
                log.exception("running %s failed", job_id)
