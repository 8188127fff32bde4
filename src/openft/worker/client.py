"""The worker protocol's client (see api/routes/worker.py and docs/workers.md)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

import httpx
from pydantic import BaseModel

from openft.domain.entities import Control, EventDraft, JobError
from openft.domain.errors import LeaseLost
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

RETRIES = 5


class WorkerClient:
    def __init__(self, base_url: str, key: str, worker_id: str, *, timeout: float = 120) -> None:
        self.worker_id = worker_id
        self._http = httpx.Client(
            base_url=base_url.rstrip("/") + "/v1/worker",
            headers={"Authorization": f"Bearer {key}", WORKER_HEADER: worker_id},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def _call(self, send: Callable[[], httpx.Response]) -> httpx.Response:
        """Send with retries on network errors and 5xx; raise `LeaseLost` on 409."""
        for attempt in range(RETRIES):
            try:
                response = send()
            except httpx.TransportError:
                if attempt == RETRIES - 1:
                    raise
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code >= 500 and attempt < RETRIES - 1:
                time.sleep(min(8.0, 0.5 * 2**attempt))
                continue
            if response.status_code == 409:
                raise LeaseLost(response.json()["error"]["message"])
            response.raise_for_status()
            return response
        raise AssertionError("unreachable")

    def _post(self, path: str, message: BaseModel | None = None) -> httpx.Response:
        body = message.model_dump(mode="json") if message is not None else None
        return self._call(lambda: self._http.post(path, json=body))

    def claim(self) -> ClaimReply | None:
        response = self._post("/claim", ClaimRequest(worker_id=self.worker_id))
        return (
            None
            if response.status_code == 204
            else ClaimReply.model_validate_json(response.content)
        )

    def heartbeat(self, job_id: str, progress: Heartbeat) -> Control | None:
        response = self._post(f"/jobs/{job_id}/heartbeat", progress)
        return HeartbeatReply.model_validate_json(response.content).control

    def report(self, job_id: str, batch: int, drafts: Sequence[EventDraft]) -> bool:
        """Send one numbered batch; whether the server applied it (not a retried duplicate)."""
        message = EventBatch(batch=batch, events=[EventIn.of(draft) for draft in drafts])
        response = self._post(f"/jobs/{job_id}/events", message)
        return BatchReply.model_validate_json(response.content).applied

    def _upload(self, path: str, meta: BaseModel, archive: Path) -> httpx.Response:
        def send() -> httpx.Response:
            with open(archive, "rb") as handle:
                return self._http.post(
                    path,
                    data={"meta": meta.model_dump_json()},
                    files={"archive": (archive.name, handle, "application/gzip")},
                )

        return self._call(send)

    def add_checkpoint(
        self, job_id: str, step: int, metrics: dict[str, float], archive: Path
    ) -> FineTuningJobCheckpoint:
        meta = CheckpointMeta(step=step, metrics=metrics)
        response = self._upload(f"/jobs/{job_id}/checkpoints", meta, archive)
        checkpoint: FineTuningJobCheckpoint = response.json()
        return checkpoint

    def complete(self, job_id: str, trained_tokens: int, adapter: Path) -> FineTuningJob:
        meta = CompletionMeta(trained_tokens=trained_tokens)
        job: FineTuningJob = self._upload(f"/jobs/{job_id}/complete", meta, adapter).json()
        return job

    def fail(self, job_id: str, error: JobError) -> None:
        failure = Failure(code=error.code, message=error.message, param=error.param)
        self._post(f"/jobs/{job_id}/fail", failure)

    def stopped(self, job_id: str) -> None:
        self._post(f"/jobs/{job_id}/stopped")

    def download(self, path: str, destination: Path) -> Path:
        destination.parent.mkdir(parents=True, exist_ok=True)
        with self._http.stream("GET", path) as response:
            if response.status_code == 409:
                raise LeaseLost(response.read().decode())
            response.raise_for_status()
            with open(destination, "wb") as out:
                for chunk in response.iter_bytes(1 << 20):
                    out.write(chunk)
        return destination

    def download_file(self, job_id: str, file_id: str, destination: Path) -> Path:
        return self.download(f"/jobs/{job_id}/files/{file_id}", destination)

    def download_checkpoint(self, job_id: str, checkpoint_id: str, destination: Path) -> Path:
        return self.download(f"/jobs/{job_id}/checkpoints/{checkpoint_id}/archive", destination)
