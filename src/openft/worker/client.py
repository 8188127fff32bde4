"""The worker protocol's client (see api/routes/worker.py and docs/workers.md)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from pydantic import BaseModel

from openft.domain.entities import Control, EventDraft, JobError
from openft.domain.errors import LeaseLost
from openft.training.protocol import GRADER_CALL_ENV
from openft.wire import FineTuningJob, FineTuningJobCheckpoint
from openft.worker.protocol import (
    WORKER_HEADER,
    BatchReply,
    CheckpointMeta,
    ClaimReply,
    ClaimRequest,
    CompletionMeta,
    EventBatch,
    EventIn,
    Failure,
    Heartbeat,
    HeartbeatReply,
)

log = logging.getLogger(__name__)

# Answers that say "try again shortly": a proxy or load balancer between worker and
# server, or a server restarting or out of database connections.
TRANSIENT_STATUSES = frozenset({502, 503, 504})
# How long transient trouble is retried (with backoff) before it is a failure.
RETRY_SECONDS = 120.0


class WorkerProtocolError(Exception):
    """A worker call the server refused for a reason retrying will not fix (any 4xx or
    5xx but a lease lost or a transient answer), or that failed for `RETRY_SECONDS`."""

    def __init__(self, call: str, cause: str, request_id: str | None = None) -> None:
        self.call, self.cause, self.request_id = call, cause, request_id
        super().__init__(self.describe())

    def describe(self) -> str:
        where = f" (request {self.request_id}: the server's log has it)" if self.request_id else ""
        return f"The worker could not {self.call}: {self.cause}{where}."

    def job_error(self) -> JobError:
        return JobError("worker_protocol_error", self.describe())

    @classmethod
    def of(cls, call: str, response: httpx.Response) -> WorkerProtocolError:
        try:
            detail = str(response.json()["error"]["message"])
        except (ValueError, KeyError, TypeError):
            detail = response.text[:200] or response.reason_phrase
        return cls(
            call,
            f"the server answered {response.status_code}: {detail}",
            response.headers.get("x-request-id"),
        )


class KeyRefused(WorkerProtocolError):
    """The server refuses this worker's key (401: revoked, or never valid). No call can
    succeed any more: the worker stops; the server takes its jobs back (a revoked key's
    jobs go back to the queue at once, saying why)."""


class WorkerClient:
    def __init__(
        self,
        base_url: str,
        key: str,
        worker_id: str,
        *,
        timeout: float = 120,
        retry_seconds: float = RETRY_SECONDS,
    ) -> None:
        self.worker_id = worker_id
        self._retry_seconds = retry_seconds
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1/worker",
            headers={"Authorization": f"Bearer {key}", WORKER_HEADER: worker_id},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def grader_calls(self, job_id: str) -> dict[str, str]:
        """The environment a reinforcement job's trainer calls model graders with: this
        worker's route for them, and its credentials."""
        url = str(self._http.base_url.join(f"jobs/{job_id}/grader/calls"))
        headers = {name: self._http.headers[name] for name in ("Authorization", WORKER_HEADER)}
        return {GRADER_CALL_ENV: json.dumps({"url": url, "headers": headers})}

    def _call(self, call: str, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Send; retry transient trouble with backoff for `retry_seconds`. Raise
        `LeaseLost` on 409 and `WorkerProtocolError` on any other error."""
        deadline = time.monotonic() + self._retry_seconds
        delay = 0.5
        while True:
            try:
                response = send()
            except httpx.TransportError as exc:
                trouble, request_id = f"{type(exc).__name__}: {exc}", None
            else:
                if response.status_code not in TRANSIENT_STATUSES:
                    break
                trouble = f"the server answered {response.status_code}"
                request_id = response.headers.get("x-request-id")
            if time.monotonic() + delay > deadline:
                cause = f"{trouble}, still after {self._retry_seconds:.0f} s of retries"
                raise WorkerProtocolError(call, cause, request_id)
            log.warning("could not %s (%s); retrying in %.1f s", call, trouble, delay)
            time.sleep(delay)
            delay = min(8.0, delay * 2)
        if response.status_code == 409:
            raise LeaseLost(response.json()["error"]["message"])
        if response.status_code == 401:
            refused = WorkerProtocolError.of(call, response)
            raise KeyRefused(call, refused.cause, refused.request_id)
        if response.is_error:
            raise WorkerProtocolError.of(call, response)
        return response

    def _post(self, call: str, path: str, message: BaseModel | None = None) -> httpx.Response:
        body = message.model_dump(mode="json") if message is not None else None
        return self._call(call, lambda: self._http.post(path, json=body))

    def claim(self) -> ClaimReply | None:
        response = self._post("claim a job", "/claim", ClaimRequest(worker_id=self.worker_id))
        return (
            None
            if response.status_code == 204
            else ClaimReply.model_validate_json(response.content)
        )

    def heartbeat(self, job_id: str, progress: Heartbeat) -> Control | None:
        response = self._post("send a heartbeat", f"/jobs/{job_id}/heartbeat", progress)
        return HeartbeatReply.model_validate_json(response.content).control

    def report(self, job_id: str, batch: int, drafts: Sequence[EventDraft]) -> bool:
        """Send one numbered batch; whether the server applied it (not a retried duplicate)."""
        message = EventBatch(batch=batch, events=[EventIn.of(draft) for draft in drafts])
        response = self._post("report events", f"/jobs/{job_id}/events", message)
        return BatchReply.model_validate_json(response.content).applied

    def _upload(self, call: str, path: str, meta: BaseModel, archive: Path) -> httpx.Response:
        def send() -> httpx.Response:
            with open(archive, "rb") as handle:
                return self._http.post(
                    path,
                    data={"meta": meta.model_dump_json()},
                    files={"archive": (archive.name, handle, "application/gzip")},
                )

        return self._call(call, send)

    def add_checkpoint(
        self, job_id: str, step: int, metrics: dict[str, float], archive: Path
    ) -> FineTuningJobCheckpoint:
        meta = CheckpointMeta(step=step, metrics=metrics)
        response = self._upload(
            f"upload the checkpoint of step {step}", f"/jobs/{job_id}/checkpoints", meta, archive
        )
        checkpoint: FineTuningJobCheckpoint = response.json()
        return checkpoint

    def complete(self, job_id: str, trained_tokens: int, adapter: Path) -> FineTuningJob:
        meta = CompletionMeta(trained_tokens=trained_tokens)
        job: FineTuningJob = self._upload(
            "upload the trained adapter", f"/jobs/{job_id}/complete", meta, adapter
        ).json()
        return job

    def fail(self, job_id: str, error: JobError) -> None:
        failure = Failure(code=error.code, message=error.message, param=error.param)
        self._post("report the failure", f"/jobs/{job_id}/fail", failure)

    def stopped(self, job_id: str) -> None:
        self._post("report the stop", f"/jobs/{job_id}/stopped")

    def _download(self, call: str, path: str, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)

        def send() -> httpx.Response:
            with self._http.stream("GET", path) as response:
                if response.status_code != 200:
                    response.read()  # the error body, for the message
                    return response
                with open(destination, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        out.write(chunk)
            return response

        self._call(call, send)
        return destination

    def download_file(self, job_id: str, file_id: str, destination: Path) -> Path:
        path = f"/jobs/{job_id}/files/{file_id}"
        return self._download(f"download file {file_id}", path, destination)

    def download_start(self, job_id: str, destination: Path) -> Path:
        """The archive of the adapter the job goes on training."""
        return self._download(
            "download the adapter to start from", f"/jobs/{job_id}/start/archive", destination
        )

    def download_checkpoint(self, job_id: str, checkpoint_id: str, destination: Path) -> Path:
        path = f"/jobs/{job_id}/checkpoints/{checkpoint_id}/archive"
        return self._download(f"download checkpoint {checkpoint_id}", path, destination)
